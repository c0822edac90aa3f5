"""The stochastic-localization sampler over oracle DSL seams: grid, budgets, convergence, seeds."""

from __future__ import annotations

import math

import pytest
import torch

from dslbench.diffusion.dsl_denoiser import OracleDSLDenoiser
from dslbench.diffusion.sde import (
    dsl_generate,
    dsl_repair,
    noise_scale_for_budget,
    plan_steps,
    kth_largest,
    posterior_mean,
    published_snr_grid,
    schedule_grid,
    snr_grid,
    uniform_snr_grid,
)

TARGET = torch.tensor([3, 5, 1, 7, 2, 9, 0, 4, 11, 12, 6, 8, 3, 3, 10, 1])
PROMPT = torch.tensor([[1, 2, 3, 4], [4, 3, 2, 1]])


def _oracle(**kw):
    return OracleDSLDenoiser(kw.pop("target", TARGET), **kw)


# ------------------------------------------------------------------ grid and budgets
def test_sensitive_grid_hand_computed_values():
    r = (74 / 7) ** (1 / 3)  # 3 log-steps from 7 to 74
    assert r == pytest.approx(2.1947138, abs=1e-6)
    cases = {
        # steps: n1 = max(1, int(.05 n)), n2 = max(1, int(.9 n)), n3 = n - n1 - n2
        2: [0.01, 7.0, 74.0],  # 1 + 1 + 0: the grid ends at 74
        4: [0.01, 7.0, 15.36300, 33.71739, 74.0],  # 1 + 3 + 0
    }
    for steps, expected in cases.items():
        assert snr_grid(steps).tolist() == pytest.approx(expected, abs=1e-4)
        assert published_snr_grid(steps).tolist() == pytest.approx(expected, abs=1e-4)
    g16 = published_snr_grid(16)  # 1 + 14 + 1
    assert len(g16) == 17 and g16[:2].tolist() == pytest.approx([0.01, 7.0])
    assert g16[15].item() == pytest.approx(74.0) and g16[16].item() == pytest.approx(100.0)
    assert g16[2].item() == pytest.approx(7 * (74 / 7) ** (1 / 14))
    g64 = published_snr_grid(64)  # 3 + 57 + 4
    assert len(g64) == 65
    assert g64[:4].tolist() == pytest.approx([0.01, 0.0887904, 0.7883735, 7.0], rel=1e-6)
    assert g64[60].item() == pytest.approx(74.0) and g64[-1].item() == pytest.approx(100.0)
    assert g64[61].item() == pytest.approx(74 * (100 / 74) ** 0.25)
    # Quirks: the published construction gives 2 steps for 1; the exact-count grid does not.
    assert published_snr_grid(1).tolist() == pytest.approx([0.01, 7.0, 74.0])
    assert snr_grid(1).tolist() == [0.01, 100.0] and snr_grid(0).tolist() == [100.0]
    for n in range(2, 130):
        g = snr_grid(n)
        assert len(g) == n + 1 and torch.all(g[1:] > g[:-1])
        assert g[-1].item() == pytest.approx(100.0 if n >= 11 else 74.0)


def test_uniform_grid_hand_computed_values():
    # log-spaced 0.01 -> 100: four decades split evenly
    cases = {0: [100.0], 1: [0.01, 100.0], 2: [0.01, 1.0, 100.0], 4: [0.01, 0.1, 1.0, 10.0, 100.0],
             8: [10 ** (e / 2) for e in range(-4, 5)]}  # half decades: 0.01, 0.0316.., 0.1, ..., 100
    for steps, expected in cases.items():
        assert uniform_snr_grid(steps).tolist() == pytest.approx(expected, rel=1e-6)
        assert schedule_grid(steps, "uniform", published=True).tolist() == pytest.approx(expected, rel=1e-6)
    # both accountings use it: strict 8 = 3 Heun + 1 one-call step; published 8 = 4 Heun steps
    assert plan_steps(8, snr_schedule="uniform").grid.tolist() == pytest.approx(cases[4], rel=1e-6)
    published = plan_steps(8, accounting="published", snr_schedule="uniform")
    assert published.heun == 4 and published.grid.tolist() == pytest.approx(cases[4], rel=1e-6)
    assert plan_steps(1, snr_schedule="uniform").grid.tolist() == [100.0]
    with pytest.raises(ValueError, match="snr_schedule"):
        plan_steps(8, snr_schedule="linear")


def test_noise_scale_by_budget():
    assert [noise_scale_for_budget(b) for b in (4, 8, 9, 16, 17, 32, 33, 128)] == [
        0.1, 0.1, 0.05, 0.05, 0.01, 0.01, 0.005, 0.005,
    ]


def test_step_fitting_uses_the_whole_budget_and_no_more():
    expected = {1: (0, 0), 2: (0, 1), 3: (1, 0), 4: (1, 1), 8: (3, 1), 16: (7, 1), 17: (8, 0), 128: (63, 1)}
    for budget, (heun, extra) in expected.items():
        plan = plan_steps(budget)
        assert (plan.heun, plan.euler) == (heun, extra) and plan.calls == budget
    for budget in range(1, 129):
        assert plan_steps(budget).calls == budget
        assert plan_steps(budget, "euler").calls == budget
    for budget in range(2, 129):
        published = plan_steps(budget, accounting="published")
        assert published.heun == max(budget // 2, 2) and published.euler == 0
        assert published.calls == 2 * max(budget // 2, 2) + 1  # NFE + 1 for even NFE >= 4
    with pytest.raises(ValueError, match="final argmax"):
        plan_steps(0)
    with pytest.raises(ValueError, match="nfe >= 2"):
        plan_steps(1, accounting="published")
    with pytest.raises(ValueError, match="sampler"):
        plan_steps(8, "heun")


def test_measured_nfe_never_exceeds_the_budget():
    seam = _oracle(mode="sharp", target=torch.tensor([1, 2, 3]))
    prompt = torch.tensor([[4, 5]])
    for budget in range(2, 129):
        for sampler in ("sde", "ode", "euler") if budget % 5 == 0 else ("sde",):
            before = seam.nfe
            out = dsl_generate(seam, prompt, gen_length=3, nfe=budget, sampler=sampler, topk=4,
                               generator=torch.Generator().manual_seed(budget))
            assert out.nfe == seam.nfe - before == budget
    # Published accounting: the released script's nfe//2 Heun steps + 1 final pass, reported as measured.
    for budget in (2, 3, 4, 8, 16, 33, 64):
        out = dsl_generate(seam, prompt, gen_length=3, nfe=budget, accounting="published", topk=4)
        assert out.nfe == 2 * max(budget // 2, 2) + 1
    assert dsl_generate(seam, prompt, gen_length=3, nfe=16, accounting="published").nfe == 17


# ------------------------------------------------------------------ trajectories
@pytest.mark.parametrize("budget", [4, 8, 16])
@pytest.mark.parametrize("sampler", ["sde", "ode"])
def test_trajectory_converges_to_the_target(budget, sampler):
    """Bayes oracle (prior 0.9 on the target): the state ends near E_n[target] and the argmax is the target."""
    seam = _oracle(mode="bayes", confidence=0.9)
    for seed in (0, 1):
        out = dsl_generate(seam, PROMPT, gen_length=len(TARGET), nfe=budget, sampler=sampler,
                           generator=torch.Generator().manual_seed(seed))
        assert torch.equal(out.tokens, TARGET.expand(2, -1))
        cos = torch.nn.functional.cosine_similarity(out.y.float(), seam.noise_embedding[TARGET][None], dim=-1)
        assert cos.min().item() > (0.7 if budget == 4 else 0.95)


@pytest.mark.parametrize("budget", [4, 8, 16])
def test_noise_free_one_call_steps_converge(budget):
    seam = _oracle(mode="bayes", confidence=0.9)
    out = dsl_generate(seam, PROMPT, gen_length=len(TARGET), nfe=budget, sampler="euler", noise_scale=0.0,
                       generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.tokens, TARGET.expand(2, -1))


def test_sharp_oracle_state_converges_to_the_target_embedding():
    seam = _oracle(mode="sharp")
    out = dsl_generate(seam, PROMPT, gen_length=len(TARGET), nfe=16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.y.float(), seam.noise_embedding[TARGET].expand(2, -1, -1), atol=0.05, rtol=0)


def test_unit_noise_scale_samples_the_prior():
    """ns = 1 is the exact stochastic-localization SDE: with the Bayes oracle the sampled tokens
    follow its prior (0.6 on the target, 0.4 spread over the other 7 ids), given enough steps."""
    seam = OracleDSLDenoiser(torch.zeros(1000, dtype=torch.long), mode="bayes", confidence=0.6,
                             vocab_size=8, noise_dim=16, mask_id=7, eos_id=6)
    out = dsl_generate(seam, torch.tensor([[1]]), gen_length=1000, nfe=1025, noise_scale=1.0, topk=None,
                       generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(out.tokens.flatten(), minlength=8).float() / 1000
    assert abs(freq[0].item() - 0.6) < 0.05  # binomial sd 0.016
    assert freq[1:].max().item() < 0.4 / 7 + 0.04


def test_same_seed_same_output_and_seed_matters():
    seam = _oracle(mode="bayes", confidence=0.5)
    kw = dict(gen_length=len(TARGET), nfe=8, noise_scale=1.0)
    a = dsl_generate(seam, PROMPT, generator=torch.Generator().manual_seed(7), **kw)
    b = dsl_generate(seam, PROMPT, generator=torch.Generator().manual_seed(7), **kw)
    c = dsl_generate(seam, PROMPT, generator=torch.Generator().manual_seed(8), **kw)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.y, b.y)
    assert not torch.equal(a.y, c.y)


def test_prompt_positions_get_clean_embeddings_and_convert_is_not_an_nfe():
    seam = _oracle(mode="sharp", record=True)
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    seen = []
    forward = seam.forward
    seam.forward = lambda x, m: (seen.append(m), forward(x, m))[1]
    out = dsl_generate(seam, PROMPT, mask, gen_length=len(TARGET), nfe=6)
    assert out.nfe == 6 and seam.convert_calls == 6
    for inputs in seam.calls:
        assert torch.equal(inputs[:, :4], seam.embed(PROMPT))
    for m in seen:
        assert torch.equal(m, torch.cat([mask, torch.ones(2, len(TARGET), dtype=mask.dtype)], 1))


def test_posterior_mean_topk():
    emb = torch.nn.functional.normalize(torch.randn(6, 3), dim=-1)
    logits = torch.randn(2, 4, 6) * 3
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(posterior_mean(logits, emb, None), p @ emb)
    torch.testing.assert_close(posterior_mean(logits, emb, 6), p @ emb)
    torch.testing.assert_close(posterior_mean(logits, emb, 1), emb[p.argmax(-1)])
    for k in (2, 4):  # k < V/2 and k > V/2
        v, i = p.topk(k, -1)
        want = ((v / v.sum(-1, keepdim=True))[..., None] * emb[i]).sum(-2)
        torch.testing.assert_close(posterior_mean(logits, emb, k), want)


def test_posterior_mean_keeps_every_token_tied_at_the_kth_logit():
    emb = torch.eye(4)
    logits = torch.tensor([[2.0, 1.0, 1.0, 0.0]])
    # top-2 with a tie for second place: tokens 0, 1 and 2 are all kept.
    w = torch.softmax(torch.tensor([2.0, 1.0, 1.0]), -1)
    torch.testing.assert_close(posterior_mean(logits, emb, 2), torch.cat([w, torch.zeros(1)])[None])


def test_posterior_mean_reuses_its_buffers_and_gives_the_same_values():
    emb = torch.nn.functional.normalize(torch.randn(50, 4), dim=-1)
    buffers: dict = {}

    def check(shape):
        logits = torch.randn(*shape) * 3
        before = logits.clone()
        got = posterior_mean(logits, emb, 7, buffers)
        assert torch.equal(got, posterior_mean(logits, emb, 7))  # bit-identical to the fresh path
        assert torch.equal(logits, before)  # the caller's logits are read, never overwritten
        p = torch.softmax(logits, -1)
        v, i = p.topk(7, -1)
        torch.testing.assert_close(got, ((v / v.sum(-1, keepdim=True))[..., None] * emb[i]).sum(-2))
        return {k: (b.data_ptr(), tuple(b.shape)) for k, b in buffers.items()}

    first = check((2, 3, 50))
    assert set(first) == {"keep", "weights"}
    assert check((2, 3, 50)) == first  # same shape: the same memory
    other = check((1, 5, 40))  # a new shape (and width) gets buffers of that shape
    assert {k: shape for k, (_, shape) in other.items()} == {"keep": (1, 5, 40), "weights": (1, 5, 40)}


def test_posterior_mean_on_logits_far_below_the_maximum_keeps_its_bits():
    # Dropped logits 100-300 below the maximum are raised to the threshold before exp (whose CPU
    # kernel is slow for them); the result must equal the plain formula bit for bit.
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 40, generator=g) * 2
    logits[..., 20:] -= 100 + 200 * torch.rand(2, 5, 20, generator=g)
    emb = torch.randn(40, 6, generator=g)
    for k in (3, 19, 20, 25):  # 25: the threshold itself far below the maximum
        thr = logits.sort(dim=-1, descending=True).values[..., k - 1 : k]
        top = logits.amax(dim=-1, keepdim=True)
        w = (logits - top).exp() * (logits >= thr)
        want = (w @ emb) / w.sum(dim=-1, keepdim=True)
        assert torch.equal(posterior_mean(logits, emb, k, {}), want), k
        assert torch.equal(posterior_mean(logits, emb, k), want), k


def test_kth_largest_with_a_work_buffer_matches_sorting():
    x = torch.randn(3, 5, 8)
    work = torch.empty(3, 5, 8)
    for k in (1, 4, 8):
        assert torch.equal(kth_largest(x, k, work), x.sort(dim=-1, descending=True).values[..., k - 1 : k])
    t = x.transpose(0, 1)  # non-contiguous scores into a contiguous work buffer
    assert torch.equal(kth_largest(t, 3, torch.empty(5, 3, 8)), t.sort(dim=-1, descending=True).values[..., 2:3])


@pytest.mark.parametrize("k", [1, 3, 7, 8])
def test_kth_largest_matches_sorting(k):
    x = torch.randn(3, 5, 8)
    want = x.sort(dim=-1, descending=True).values[..., k - 1 : k]
    assert torch.equal(kth_largest(x, k), want)
    assert torch.equal(kth_largest(x.transpose(0, 1), k), want.transpose(0, 1))  # non-contiguous input
    xb = x.bfloat16()
    assert torch.equal(kth_largest(xb, k), xb.sort(dim=-1, descending=True).values[..., k - 1 : k])


def test_bad_arguments_are_refused():
    seam = _oracle()
    with pytest.raises(ValueError, match="ode"):
        dsl_generate(seam, PROMPT, gen_length=4, nfe=8, sampler="ode", noise_scale=0.5)
    with pytest.raises(ValueError, match="topk"):
        dsl_generate(seam, PROMPT, gen_length=4, nfe=8, topk=0)
    with pytest.raises(ValueError, match="one_call_step"):
        dsl_generate(seam, PROMPT, gen_length=4, nfe=8, one_call_step="rk4")
    with pytest.raises(ValueError, match="accounting"):
        dsl_generate(seam, PROMPT, gen_length=4, nfe=8, accounting="loose")


def test_repair_passes_are_counted_and_keep_fixed_positions():
    target = torch.tensor([3, 5, 1, 7])
    seam = _oracle(mode="sharp", target=target)
    ids = torch.tensor([[9, 9, 3, 6, 1, 7]])
    editable = torch.tensor([[False, False, True, True, True, True]])
    repaired, nfe = dsl_repair(seam, ids, None, editable, passes=2)
    assert nfe == 2 and torch.equal(repaired, torch.tensor([[9, 9, 3, 5, 1, 7]]))
    assert not math.isnan(float(repaired.sum()))
