"""Soft-masking: the blend against hand computations, decoding through mdm_generate's hook, the backend."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from dslbench.diffusion.denoiser import ModelDenoiser
from dslbench.diffusion.mdm import mdm_generate
from dslbench.diffusion.softmask import (
    INIT_CENTRE,
    INIT_STEEPNESS,
    SOFTMASK_WEIGHTS_FILE,
    SoftMaskParams,
    blend_inputs,
    entropy_from_logits,
    load_softmask,
    read_softmask,
    save_softmask,
    softmask_generate,
)
from dslbench.metrics.sample_stats import split_stats


class TableDenoiser:
    """A seam object with a fixed embedding table; forward is never needed for blend tests."""

    def __init__(self, table, mask_id):
        self.table = torch.tensor(table, dtype=torch.float32)
        self.mask_id = mask_id
        self.vocab_size = self.table.shape[0]

    def embed(self, ids):
        return F.embedding(ids, self.table)


class Recording:
    """Delegates to a denoiser and records every forward's inputs."""

    def __init__(self, inner):
        self.inner = inner
        self.inputs = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def forward(self, inputs_embeds, attention_mask):
        self.inputs.append(inputs_embeds.detach().clone())
        return self.inner.forward(inputs_embeds, attention_mask)


E = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0], [0.0, 0.5]]  # id 4 = [MASK]
MASK = 4
PREV = [2.0, 1.0, 0.0, -1.0, -3.0]


def _hand_blend(scale, centre, steepness, k):
    z = sum(math.exp(v) for v in PREV)
    p = [math.exp(v) / z for v in PREV]
    h = -sum(q * math.log(q) for q in p)
    lam = scale * (1 / (1 + math.exp(-steepness * (-h - centre))))
    top = sorted(range(len(PREV)), key=lambda j: -PREV[j])[:k]
    zt = sum(math.exp(PREV[j]) for j in top)
    guess = [sum(math.exp(PREV[j]) / zt * E[j][d] for j in top) for d in range(2)]
    return [(1 - lam) * E[MASK][d] + lam * guess[d] for d in range(2)], lam


# ---------------------------------------------------------------- parameters


def test_init_values_and_state_dict_keys():
    p = SoftMaskParams()
    v = p.values()
    assert v["scale"] == pytest.approx(1e-6, rel=1e-4)  # released: logit(0, eps=1e-6)
    assert v["centre"] == pytest.approx(INIT_CENTRE, abs=1e-6)
    assert v["steepness"] == pytest.approx(INIT_STEEPNESS, abs=1e-5)
    assert sorted(p.state_dict()) == ["raw_centre", "raw_scale", "raw_steepness"]
    assert all(t.dim() == 0 for t in p.state_dict().values())
    assert sum(x.numel() for x in p.parameters() if x.requires_grad) == 3


def test_constraints_hold_for_any_raw_values_and_lambda_formula():
    p = SoftMaskParams()
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        raw = (torch.randn(3, generator=g) * 5).tolist()
        with torch.no_grad():
            p.raw_scale.fill_(raw[0]), p.raw_centre.fill_(raw[1]), p.raw_steepness.fill_(raw[2])
        s, c, st = p.values()["scale"], p.values()["centre"], p.values()["steepness"]
        assert 0 < s < 1 and c < 0 and st > 0
        assert s == pytest.approx(1 / (1 + math.exp(-raw[0])), rel=1e-5)
        # the released parametrisation: -softplus - 1e-6 and softplus + 1e-6
        assert c == pytest.approx(-math.log1p(math.exp(raw[1])) - 1e-6, rel=1e-5)
        assert st == pytest.approx(math.log1p(math.exp(raw[2])) + 1e-6, rel=1e-5)
        h = torch.tensor([0.0, 0.3, 2.0])
        expect = [s / (1 + math.exp(-st * (-x - c))) for x in h.tolist()]
        assert p.lam(h).tolist() == pytest.approx(expect, rel=1e-5, abs=1e-7)


def test_invalid_values_are_rejected():
    for bad in ({"scale": 1.0}, {"scale": -0.1}, {"centre": 0.0}, {"centre": -1e-7}, {"steepness": 0.0}):
        with pytest.raises(ValueError):
            SoftMaskParams(**bad)


def test_entropy_by_hand_and_with_minus_inf():
    assert entropy_from_logits(torch.zeros(4)).item() == pytest.approx(math.log(4))
    assert entropy_from_logits(torch.tensor([0.0, 0.0, float("-inf")])).item() == pytest.approx(math.log(2))


# ---------------------------------------------------------------- blend


@pytest.mark.parametrize("k", [1, 3])
def test_blend_equals_hand_computation(k):
    den = TableDenoiser(E, MASK)
    scale, centre, steepness = 0.8, -1.5, 3.0
    params = SoftMaskParams(scale, centre, steepness)
    canvas = torch.tensor([[0, 2, MASK, MASK]])
    prev = torch.zeros(1, 4, 5)
    prev[0, 2] = torch.tensor(PREV)
    prev[0, 3] = torch.tensor(PREV)
    prev[0, 0] = torch.tensor([-9.0, -9.0, -9.0, 9.0, -9.0])  # unmasked: ignored
    is_masked = torch.tensor([[False, False, True, False]])  # position 3 not marked: stays plain
    out = blend_inputs(den, canvas, prev, is_masked, params, k=k)
    expect, lam = _hand_blend(scale, centre, steepness, k)
    assert 0.05 < lam < 0.75  # a real mixture, not an end point
    assert out[0, 2].tolist() == pytest.approx(expect, rel=1e-5)
    assert out[0, 0].tolist() == E[0] and out[0, 1].tolist() == E[2] and out[0, 3].tolist() == E[MASK]


def test_blend_reads_logits_of_the_last_positions_only():
    """The sampler keeps the logits of the generated span only: ``prev_logits`` covering the last
    T' positions gives the same blend as the whole canvas's; a masked position before them is an
    error, not a wrapped-around index."""
    den = TableDenoiser(E, MASK)
    params = SoftMaskParams(0.7, -1.2, 2.5)
    canvas = torch.tensor([[0, 2, MASK, 1, MASK], [3, MASK, MASK, MASK, 0]])
    prev = torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(4))
    is_masked = canvas == MASK
    is_masked[:, :1] = False
    whole = blend_inputs(den, canvas, prev, is_masked, params, k=2)
    torch.testing.assert_close(blend_inputs(den, canvas, prev[:, 1:], is_masked, params, k=2), whole, rtol=0, atol=0)
    with pytest.raises(ValueError, match="before the 3 positions"):
        blend_inputs(den, canvas, prev[:, 2:], is_masked, params, k=2)
    with pytest.raises(ValueError, match="prev_logits has shape"):
        blend_inputs(den, canvas, prev[:1], is_masked, params, k=2)


def test_blend_is_vectorised_over_rows_and_differentiable_in_params():
    den = TableDenoiser(E, MASK)
    params = SoftMaskParams(0.5, -1.0, 2.0)
    canvas = torch.full((3, 5), MASK)
    prev = torch.randn(3, 5, 5, generator=torch.Generator().manual_seed(1))
    is_masked = torch.rand(3, 5, generator=torch.Generator().manual_seed(2)) > 0.3
    out = blend_inputs(den, canvas, prev, is_masked, params, k=3)
    for b in range(3):
        for t in range(5):
            single = blend_inputs(den, canvas[b:b + 1, t:t + 1], prev[b:b + 1, t:t + 1], is_masked[b:b + 1, t:t + 1], params, k=3)
            assert torch.allclose(out[b, t], single[0, 0], atol=1e-6)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs() > 0 for p in params.parameters())


def test_first_step_and_scale_zero_give_the_plain_mask_embedding():
    den = TableDenoiser(E, MASK)
    canvas = torch.tensor([[1, MASK, MASK]])
    is_masked = canvas == MASK
    plain = den.embed(canvas)
    assert torch.equal(blend_inputs(den, canvas, None, is_masked, SoftMaskParams(0.9, -1.0, 1.0)), plain)
    prev = torch.randn(1, 3, 5)
    assert torch.equal(blend_inputs(den, canvas, prev, is_masked, SoftMaskParams(scale=0.0), k=3), plain)


# ---------------------------------------------------------------- decoding on a tiny model


@pytest.fixture(scope="module")
def tiny_denoiser(tiny_ckpt):
    from dslbench.models.loading import load_model

    model, tok, info = load_model(tiny_ckpt, device="cpu")
    den = ModelDenoiser(model, info.mask_id, info.eos_id, info.eos_ids, info.vocab_size)
    prompt = torch.tensor([[info.pad_id, info.pad_id, 20, 21, 22], [30, 31, 32, 33, 34]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    return den, prompt, mask


SETTINGS = [
    dict(gen_length=16, steps=8),
    dict(gen_length=16, steps=8, block_length=8, temperature=1.0, remasking="random"),
    dict(gen_length=8, steps=4, cfg_scale=1.0, logits_eos_inf=True, confidence_eos_eot_inf=True),
]


@pytest.mark.parametrize("kw", SETTINGS)
def test_scale_zero_is_token_identical_to_mdm(tiny_denoiser, kw):
    den, prompt, mask = tiny_denoiser
    ref = mdm_generate(den, prompt, mask, generator=torch.Generator().manual_seed(3), **kw)
    for k in (1, 3):
        out = softmask_generate(
            den, prompt, mask, params=SoftMaskParams(scale=0.0), k=k, generator=torch.Generator().manual_seed(3), **kw
        )
        assert torch.equal(out.tokens, ref.tokens)
        assert out.nfe == ref.nfe


@pytest.mark.parametrize("kw,budget", [(SETTINGS[0], 8), (SETTINGS[1], 8), (SETTINGS[2], 8)])
def test_nfe_equals_budget(tiny_denoiser, kw, budget):
    den, prompt, mask = tiny_denoiser
    rec = Recording(den)
    out = softmask_generate(rec, prompt, mask, params=SoftMaskParams(0.9, -5.0, 1.0), generator=torch.Generator().manual_seed(0), **kw)
    assert out.nfe == budget == len(rec.inputs)


def test_first_step_plain_later_steps_blended(tiny_denoiser):
    den, prompt, mask = tiny_denoiser
    rec = Recording(den)
    softmask_generate(rec, prompt, mask, params=SoftMaskParams(0.9, -5.0, 1.0), k=3, gen_length=8, steps=4)
    canvas0 = torch.cat([prompt, torch.full((2, 8), den.mask_id)], dim=1)
    plain0 = den.embed(canvas0)
    assert torch.equal(rec.inputs[0], plain0)
    # step 2: prompt positions plain, some still-masked generated positions blended
    second = rec.inputs[1]
    assert torch.equal(second[:, :5], plain0[:, :5])
    mask_row = den.embed(torch.tensor([den.mask_id]))[0]
    differs = (second[:, 5:] - mask_row).abs().amax(dim=-1) > 1e-6
    assert differs.sum() >= 2 * 8 - 2 * 2  # all but the committed ones (8 masks over 4 steps: 2 per step)


# ---------------------------------------------------------------- checkpoint files


def test_save_load_round_trip(tmp_path):
    p = SoftMaskParams(0.3, -1.25, 4.0)
    save_softmask(p, tmp_path, k=3)
    assert (tmp_path / SOFTMASK_WEIGHTS_FILE).is_file() and (tmp_path / "softmask_config.json").is_file()
    q = load_softmask(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(p.state_dict().values(), q.state_dict().values()))
    assert read_softmask(tmp_path).k == 3
    assert load_softmask(tmp_path / "nothing") is None
    from safetensors import safe_open

    with safe_open(str(tmp_path / SOFTMASK_WEIGHTS_FILE), framework="pt") as f:
        assert sorted(f.keys()) == ["softmask.raw_centre", "softmask.raw_scale", "softmask.raw_steepness"]


# ---------------------------------------------------------------- backend


class Req:
    def __init__(self, context, gen_kwargs, repeats=1):
        self.args = (context, gen_kwargs)
        self.repeats = repeats


GK = {"nfe": 8, "gen_length": 16, "return_stats": True, "until": [], "temperature": 1.0, "remasking": "random"}


def test_backend_scale_zero_matches_mdm_llada(tiny_ckpt):
    from dslbench.harness.mdm_backend import MDMLLaDA
    from dslbench.harness.softmask_backend import SoftMaskLLaDA

    reqs = [Req("summarize this.", GK), Req("another prompt here.", GK)]
    mdm = MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},seed=5,batch_size=2")
    sm = SoftMaskLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},seed=5,batch_size=2,scale=0,k=3")
    a = [split_stats(r) for r in mdm.generate_until(reqs)]
    b = [split_stats(r) for r in sm.generate_until(reqs)]
    assert [t for t, _ in a] == [t for t, _ in b]
    for (_, sa), (_, sb) in zip(a, b):
        assert sa["nfe"] == sb["nfe"] == 8
        assert sb["backend"] == "softmask_llada" and sb["softmask_scale"] == 0.0 and sb["softmask_k"] == 3
        assert sb["softmask_source"] == "init"


def test_backend_reads_scalars_from_checkpoint_and_overrides_win(tiny_ckpt, tmp_path):
    from dslbench.harness.softmask_backend import SoftMaskLLaDA

    ckpt = tmp_path / "sm"
    shutil.copytree(tiny_ckpt, ckpt)
    save_softmask(SoftMaskParams(0.4, -1.1, 5.0), ckpt, k=3)
    b = SoftMaskLLaDA.create_from_arg_string(f"pretrained={ckpt},gen_length=16,nfe=4")
    (resp,) = b.generate_until([Req("hello", {"return_stats": True})])
    _, stats = split_stats(resp)
    assert stats["softmask_source"] == "checkpoint" and stats["softmask_k"] == 3 and stats["nfe"] == 4
    assert stats["softmask_scale"] == pytest.approx(0.4, rel=1e-5)
    assert stats["softmask_centre"] == pytest.approx(-1.1, rel=1e-5)
    (resp,) = b.generate_until([Req("hello", {"return_stats": True, "k": 1, "steepness": 2.0})])
    _, stats = split_stats(resp)
    assert stats["softmask_k"] == 1 and stats["softmask_steepness"] == pytest.approx(2.0, rel=1e-5)
    assert stats["softmask_scale"] == pytest.approx(0.4, rel=1e-5)
    with pytest.raises(ValueError, match="centre"):
        b.generate_until([Req("hello", {"centre": 0.5})])


def test_backend_repair_mode_is_inherited(tiny_ckpt):
    from dslbench.harness.softmask_backend import SoftMaskLLaDA

    b = SoftMaskLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt}")
    gk = {"repair_mode": "random", "repair_rate": 0.3, "repair_nfe": 1, "return_stats": True}
    (resp,) = b.generate_until([Req("the council approved the budget on monday.", gk)])
    _, stats = split_stats(resp)
    assert stats["nfe"] == 1 and stats["repair_mode"] == "random" and stats["corrupted_positions"]
