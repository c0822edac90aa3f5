"""``numerics=released``: token identity with a re-implementation of the released open-ended
loop (batch of one, no attention mask), through the real ``dsl_llada`` backend."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dslbench.diffusion.sde import plan_steps, published_snr_grid, schedule_grid
from dslbench.diffusion.sde_released import released_grid
from dslbench.harness.dsl_backend import DSLLLaDA
from dslbench.metrics.sample_stats import split_stats

SEED = 42
GEN_LENGTH = 12
PROMPTS = ("the council met", "a much longer prompt about the report that the committee wrote on monday", "b")
BUDGETS = (8, 16, 32, 7)


class Req:
    def __init__(self, context, gen_kwargs):
        self.args = (context, gen_kwargs)
        self.repeats = 1


def _ns(nfe: int) -> float:
    return 0.1 if nfe <= 8 else 0.05 if nfe <= 16 else 0.01 if nfe <= 32 else 0.005


def _grid(steps: int, schedule: str) -> torch.Tensor:
    def seg(a, b, n):
        return torch.exp(torch.linspace(math.log(a), math.log(b), n + 1))

    if schedule == "uniform":
        return seg(0.01, 100, steps)
    n1, n2 = max(1, int(steps * 0.05)), max(1, int(steps * 0.90))
    n3 = steps - n1 - n2
    tail = seg(74, 100, n3)[1:] if n3 >= 0 else torch.empty(0)
    return torch.cat([seg(0.01, 7, n1), seg(7, 74, n2)[1:], tail])


def reference_generate(model, dsl, prompt_ids: list[int], nfe: int, schedule: str, seed: int = SEED) -> torch.Tensor:
    """The released loop, written from its description: one prompt, global RNG, float32."""
    ne = dsl.noise_embed.weight.detach().float()
    keys = torch.cat([ne, torch.zeros(1, ne.shape[1])])
    lb = dsl.converter.logit_bias.detach().float()
    bw = dsl.converter.backbone_embedding.weight.detach().float()
    bb = dsl.converter.backbone_embedding.bias.detach().float()
    beta = float(dsl.converter.beta.detach()) * 2.0
    dtype = model.get_input_embeddings().weight.dtype
    ids = torch.tensor([prompt_ids])
    n_prompt = ids.shape[1]
    pe = model.get_input_embeddings()(ids)

    def backbone(z):
        h = F.linear(torch.softmax(beta * (z.float() @ keys.T) + lb, dim=-1), bw, bb).to(dtype)
        return model(inputs_embeds=torch.cat([pe, h], dim=1)).logits[:, n_prompt:].float()

    def xhat(y, s):
        bp = torch.softmax(backbone(s * y), dim=-1)
        tv, ti = bp.topk(min(512, bp.shape[-1]), dim=-1)
        tv = tv / tv.sum(dim=-1, keepdim=True)
        return (tv[..., None] * ne[ti]).sum(dim=-2)

    snrs, ns = _grid(nfe // 2, schedule), _ns(nfe)
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        y = F.normalize(torch.randn(1, GEN_LENGTH, ne.shape[1]), dim=-1)
        for i in range(len(snrs) - 1):
            s, s_next = snrs[i], snrs[i + 1]
            ds = s_next - s
            dw = torch.sqrt(ds.abs()) * torch.randn_like(y)
            f = (xhat(y, s) - y) / s
            g = ns / s
            y_e = y + f * ds + g * dw
            f_e = (xhat(y_e, s_next) - y_e) / s_next
            g_e = ns / s_next
            y = y + 0.5 * (f + f_e) * ds + 0.5 * (g + g_e) * dw
        return backbone(snrs[-1] * y).argmax(dim=-1)[0]


@pytest.fixture(scope="module")
def backends(untrained_dsl_ckpt):
    args = f"pretrained={untrained_dsl_ckpt},gen_length={GEN_LENGTH},accounting=published,numerics=released,seed={SEED}"
    return {bs: DSLLLaDA.create_from_arg_string(args, {"batch_size": bs, "device": "cpu"}) for bs in (1, 3)}


@pytest.fixture(scope="module")
def reference(backends):
    """The re-implementation's text for every (schedule, budget, prompt)."""
    b = backends[1]
    out = {}
    for schedule in ("sensitive", "uniform"):
        for nfe in BUDGETS:
            for prompt in PROMPTS:
                tokens = reference_generate(b.model, b.dsl, b._encode_context(prompt), nfe, schedule)
                out[schedule, nfe, prompt] = b.tokenizer.decode(tokens.tolist(), skip_special_tokens=True)
    return out


def _generate(backend, nfe, schedule, **extra):
    gk = {"nfe": nfe, "snr_schedule": schedule, "return_stats": True, "until": [], **extra}
    return [split_stats(r) for r in backend.generate_until([Req(p, gk) for p in PROMPTS])]


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("schedule", ["sensitive", "uniform"])
def test_released_numerics_reproduce_the_released_loop(backends, reference, schedule, batch_size):
    for nfe in BUDGETS:
        for prompt, (text, stats) in zip(PROMPTS, _generate(backends[batch_size], nfe, schedule)):
            assert text == reference[schedule, nfe, prompt], (schedule, nfe, prompt)
            assert stats["nfe"] == 2 * (nfe // 2) + 1 and stats["heun_steps"] == nfe // 2
            assert stats["numerics"] == "released" and stats["snr_schedule"] == schedule
            assert stats["sample_seed"] == SEED and stats["batch_size"] == batch_size


def test_the_comparison_can_fail(backends, reference):
    """dslbench's numerics (per-prompt seeds, float64) and the other schedule do not reproduce it."""
    b = backends[1]
    ours = {(nfe, p): t for nfe in BUDGETS for p, (t, _) in zip(PROMPTS, _generate(b, nfe, "sensitive", numerics="dslbench"))}
    assert any(ours[nfe, p] != reference["sensitive", nfe, p] for nfe in BUDGETS for p in PROMPTS)
    other = {(nfe, p): t for nfe in BUDGETS for p, (t, _) in zip(PROMPTS, _generate(b, nfe, "uniform"))}
    assert any(other[nfe, p] != reference["sensitive", nfe, p] for nfe in BUDGETS for p in PROMPTS)
    stats = _generate(b, 8, "sensitive", numerics="dslbench")[0][1]
    assert stats["numerics"] == "dslbench" and stats["sample_seed"] != SEED


def test_released_grids_are_the_float32_torch_construction():
    for steps in range(1, 70):
        for schedule in ("sensitive", "uniform"):
            got = released_grid(steps, schedule, published=True)
            assert got.dtype == torch.float32 and torch.equal(got, _grid(steps, schedule))
            assert got.tolist() == pytest.approx(schedule_grid(steps, schedule, published=True).tolist(), rel=1e-6)
    assert len(published_snr_grid(1)) == len(released_grid(1, published=True)) == 3  # the released quirk
    assert released_grid(1).tolist() == pytest.approx([0.01, 100.0]) and released_grid(0).tolist() == [100.0]
    plan = plan_steps(8, accounting="published", snr_schedule="uniform", numerics="released")
    assert plan.grid.dtype == torch.float32 and plan.heun == 4 and plan.calls == 9
    with pytest.raises(ValueError, match="numerics"):
        plan_steps(8, numerics="fast")


def test_new_model_args_are_validated(untrained_dsl_ckpt):
    with pytest.raises(ValueError, match="snr_schedule='linear' is not allowed"):
        DSLLLaDA.create_from_arg_string(f"pretrained={untrained_dsl_ckpt},snr_schedule=linear")
    with pytest.raises(ValueError, match="numerics='fast' is not allowed"):
        DSLLLaDA.create_from_arg_string(f"pretrained={untrained_dsl_ckpt},numerics=fast")
