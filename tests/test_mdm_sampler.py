"""The masked-diffusion sampler against hand-computed expectations, on toy denoisers."""

from __future__ import annotations

import math

import pytest
import torch

from dslbench.diffusion.mdm import (
    MDMOutput,
    guided_logits,
    mdm_generate,
    steps_for_budget,
    transfer_schedule,
)
from dslbench.diffusion.oracle import (
    DEFAULT_EOS_ID as EOS,
    DEFAULT_EOT_ID as EOT,
    DEFAULT_MASK_ID as MASK,
    DEFAULT_VOCAB as V,
    FunctionDenoiser,
    IdentityDenoiser,
    OracleDenoiser,
    RandomDenoiser,
)

PAD = 0


def run_traced(denoiser, prompt, prompt_mask=None, **kw):
    steps = []
    out = mdm_generate(denoiser, prompt, prompt_mask, trace=steps.append, **kw)
    return out, steps


def commit_counts(steps):
    """[steps][B] number of positions committed at each step."""
    return [s.committed.sum(dim=1).tolist() for s in steps]


def commit_order(steps, row=0):
    return [torch.nonzero(s.committed[row]).flatten().tolist() for s in steps]


# ---------------------------------------------------------------- schedule


def test_transfer_schedule_by_hand():
    assert transfer_schedule(torch.tensor([10]), 4).tolist() == [[3, 3, 2, 2]]
    assert transfer_schedule(torch.tensor([8]), 4).tolist() == [[2, 2, 2, 2]]
    assert transfer_schedule(torch.tensor([3]), 4).tolist() == [[1, 1, 1, 0]]
    # rows with different masked counts
    assert transfer_schedule(torch.tensor([10, 7, 0, 1]), 3).tolist() == [
        [4, 3, 3],
        [3, 2, 2],
        [0, 0, 0],
        [1, 0, 0],
    ]
    with pytest.raises(ValueError, match="steps=0"):
        transfer_schedule(torch.tensor([4]), 0)


@pytest.mark.parametrize(
    "gen_length, block_length, steps, expected",
    [
        (10, None, 4, [3, 3, 2, 2]),
        (8, 8, 4, [2, 2, 2, 2]),
        (12, 4, 6, [2, 2, 2, 2, 2, 2]),  # 3 blocks x 2 steps, 4 masks each
        (6, 3, 4, [2, 1, 2, 1]),  # 2 blocks x 2 steps, 3 masks each
        (8, 4, 8, [1] * 8),
        (4, 4, 6, [1, 1, 1, 1, 0, 0]),  # more steps than masks: still one call each
    ],
)
def test_committed_counts_per_step(gen_length, block_length, steps, expected):
    target = torch.arange(1, gen_length + 1) % 12 + 1
    oracle = OracleDenoiser(target)
    prompt = torch.tensor([[5, 6], [7, 8]])
    out, trace = run_traced(oracle, prompt, gen_length=gen_length, block_length=block_length, steps=steps)
    assert commit_counts(trace) == [[k, k] for k in expected]
    assert out.nfe == steps == len(trace)
    assert (out.tokens == target).all()


# ---------------------------------------------------------------- oracle reproduction, padding


@pytest.mark.parametrize("block_length", [None, 2, 3])
def test_oracle_target_reproduced_with_left_padding(block_length):
    prompt = torch.tensor([[PAD, PAD, PAD, 4], [PAD, 2, 3, 4], [1, 2, 3, 4]])
    prompt_mask = torch.tensor([[0, 0, 0, 1], [0, 1, 1, 1], [1, 1, 1, 1]])
    target = torch.tensor([[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1], [7, 7, 8, 8, 9, 9]])
    oracle = OracleDenoiser(target, record=True)
    out = mdm_generate(oracle, prompt, prompt_mask, gen_length=6, steps=6, block_length=block_length)
    assert isinstance(out, MDMOutput)
    assert torch.equal(out.tokens, target)
    ids, attention_mask = oracle.calls[0]
    assert torch.equal(attention_mask, torch.cat([prompt_mask, torch.ones(3, 6, dtype=torch.long)], dim=1))
    assert torch.equal(ids[:, :4], prompt)
    assert (ids[:, 4:] == MASK).all()


def test_padded_row_matches_row_alone():
    """Pads are hidden by the attention mask: a row decodes the same alone and in a padded batch."""
    short = torch.tensor([[3, 9]])
    batch = torch.tensor([[PAD, PAD, 3, 9], [1, 5, 7, 2]])
    batch_mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    kw = dict(gen_length=8, steps=8, block_length=4)
    alone = mdm_generate(RandomDenoiser(3), short, None, **kw).tokens
    together = mdm_generate(RandomDenoiser(3), batch, batch_mask, **kw).tokens
    assert torch.equal(together[0], alone[0])


# ---------------------------------------------------------------- invariants


def test_committed_tokens_never_change_without_remasking():
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    gen = torch.Generator().manual_seed(0)
    out, trace = run_traced(
        RandomDenoiser(1), prompt, gen_length=12, steps=12, block_length=4,
        temperature=1.0, remasking="random", generator=gen,
    )
    seen = torch.full((2, 12), MASK)
    for step in trace:
        was_set = seen != MASK
        assert torch.equal(step.tokens[was_set], seen[was_set])
        assert not step.remasked.any()
        seen = step.tokens
    assert torch.equal(seen, out.tokens)
    assert (out.tokens != MASK).all()


@pytest.mark.parametrize("cfg_scale, calls_per_step", [(0.0, 1), (1.0, 2)])
def test_nfe_equals_step_budget_at_the_denoiser(cfg_scale, calls_per_step):
    denoiser = RandomDenoiser(0)
    denoiser.nfe = 7  # earlier work on the same denoiser must not be counted
    out = mdm_generate(denoiser, torch.tensor([[1, 2]]), gen_length=8, steps=4, block_length=4, cfg_scale=cfg_scale)
    assert out.steps == 4
    assert out.nfe == 4 * calls_per_step
    assert denoiser.nfe == 7 + 4 * calls_per_step


def test_steps_for_budget():
    assert steps_for_budget(16) == 16
    assert steps_for_budget(16, cfg_scale=1.0) == 8
    assert steps_for_budget(5, cfg_scale=0.5) == 2
    with pytest.raises(ValueError, match="NFE budget of 1"):
        steps_for_budget(1, cfg_scale=1.0)


def test_blocks_are_filled_in_order():
    prompt = torch.tensor([[1, 2], [3, 4]])
    gen = torch.Generator().manual_seed(1)
    _, trace = run_traced(
        RandomDenoiser(2), prompt, gen_length=9, steps=6, block_length=3,
        temperature=0.7, remasking="random", generator=gen,
    )
    for step in trace:
        lo, hi = 3 * step.block, 3 * step.block + 3
        committed_at = torch.nonzero(step.committed)[:, 1]
        assert ((committed_at >= lo) & (committed_at < hi)).all()
        assert (step.tokens[:, :lo] != MASK).all(), "an earlier block is not full"
        assert (step.tokens[:, hi:] == MASK).all(), "a later block was touched"


def test_budget_errors_name_arguments_and_values():
    oracle = OracleDenoiser(torch.arange(10))
    prompt = torch.tensor([[1]])
    with pytest.raises(ValueError, match=r"gen_length=10.*block_length=4"):
        mdm_generate(oracle, prompt, gen_length=10, block_length=4, steps=5)
    with pytest.raises(ValueError, match=r"steps=5.*2 blocks"):
        mdm_generate(oracle, prompt, gen_length=10, block_length=5, steps=5)
    with pytest.raises(ValueError, match="low_confidence, random"):
        mdm_generate(oracle, prompt, gen_length=10, steps=10, remasking="entropy")


# ---------------------------------------------------------------- confidence rules


def test_low_confidence_commits_most_confident_first():
    target = torch.tensor([1, 2, 3, 4])
    oracle = OracleDenoiser(target, confidence=torch.tensor([0.3, 0.9, 0.5, 0.7]))
    _, trace = run_traced(oracle, torch.tensor([[9]]), gen_length=4, steps=4)
    assert commit_order(trace) == [[1], [3], [2], [0]]
    _, trace = run_traced(oracle, torch.tensor([[9]]), gen_length=4, steps=2)
    assert commit_order(trace) == [[1, 3], [0, 2]]


def test_random_confidence_depends_on_seed_and_is_reproducible():
    oracle = OracleDenoiser(torch.arange(1, 9), confidence=torch.full((8,), 0.5))

    def order(seed):
        gen = torch.Generator().manual_seed(seed)
        _, trace = run_traced(oracle, torch.tensor([[9]]), gen_length=8, steps=8, remasking="random", generator=gen)
        return commit_order(trace)

    assert order(0) == order(0)
    assert len({str(order(seed)) for seed in range(4)}) > 1
    # low_confidence on equal confidences: ties go to the lower index
    _, trace = run_traced(oracle, torch.tensor([[9]]), gen_length=8, steps=8)
    assert commit_order(trace) == [[i] for i in range(8)]


def test_logits_eos_inf_never_emits_eos():
    oracle = OracleDenoiser(torch.tensor([EOS, EOS, 3, EOS]))
    plain = mdm_generate(oracle, torch.tensor([[1]]), gen_length=4, steps=4).tokens
    assert plain.tolist() == [[EOS, EOS, 3, EOS]]
    banned = mdm_generate(oracle, torch.tensor([[1]]), gen_length=4, steps=4, logits_eos_inf=True).tokens
    assert not (banned == EOS).any()
    assert banned[0, 2] == 3


def test_confidence_eos_eot_inf_orders_eos_and_eot_last():
    target = torch.tensor([EOS, 3, EOT, 4])
    oracle = OracleDenoiser(target, confidence=torch.tensor([0.9, 0.2, 0.95, 0.3]), eos_ids=(EOS, EOT))
    _, trace = run_traced(oracle, torch.tensor([[1]]), gen_length=4, steps=4)
    assert commit_order(trace) == [[2], [0], [3], [1]]
    out, trace = run_traced(oracle, torch.tensor([[1]]), gen_length=4, steps=4, confidence_eos_eot_inf=True)
    assert commit_order(trace) == [[3], [1], [0], [2]]
    assert torch.equal(out.tokens[0], target)  # still emitted, only ranked last
    gen = torch.Generator().manual_seed(0)
    _, trace = run_traced(
        oracle, torch.tensor([[1]]), gen_length=4, steps=2, remasking="random",
        confidence_eos_eot_inf=True, generator=gen,
    )
    assert commit_order(trace)[1] == [0, 2]


# ---------------------------------------------------------------- classifier-free guidance

COND = [1.0, 1.5] + [-5.0] * (V - 2)
UNCOND = [0.0, 2.0] + [-5.0] * (V - 2)


def prompt_aware(ids, attention_mask, call_index):
    """Logits COND when the prompt (position 0) is visible, UNCOND when it is masked."""
    rows, length = ids.shape
    cond = torch.tensor(COND).expand(rows, length, V)
    uncond = torch.tensor(UNCOND).expand(rows, length, V)
    return torch.where((ids[:, :1] == MASK)[..., None], uncond, cond).clone()


def test_cfg_formula_by_hand():
    denoiser = FunctionDenoiser(prompt_aware, record=True)
    canvas = torch.tensor([[7, MASK, MASK]])
    guided = guided_logits(denoiser, canvas, None, prompt_len=1, cfg_scale=1.5)
    # un + (s + 1)(cond - un) with s = 1.5: token 0 -> 0 + 2.5 * 1 = 2.5, token 1 -> 2 + 2.5 * -0.5 = 0.75
    assert guided[0, 1, 0].item() == pytest.approx(2.5)
    assert guided[0, 1, 1].item() == pytest.approx(0.75)
    assert guided[0, 1, 5].item() == pytest.approx(-5.0)
    assert denoiser.nfe == 2
    assert denoiser.calls[1][0].tolist() == [[MASK, MASK, MASK]]  # unconditional copy: prompt masked


def test_cfg_changes_the_argmax_and_doubles_nfe():
    no_cfg = mdm_generate(FunctionDenoiser(prompt_aware), torch.tensor([[7]]), gen_length=2, steps=2)
    assert no_cfg.tokens.tolist() == [[1, 1]] and no_cfg.nfe == 2
    # s = 1: token 0 -> 0 + 2 * 1 = 2, token 1 -> 2 + 2 * -0.5 = 1
    guided = mdm_generate(FunctionDenoiser(prompt_aware), torch.tensor([[7]]), gen_length=2, steps=2, cfg_scale=1.0)
    assert guided.tokens.tolist() == [[0, 0]] and guided.nfe == 4


def test_cfg_scale_zero_is_no_cfg():
    prompt, kw = torch.tensor([[1, 2, 3]]), dict(gen_length=8, steps=4, block_length=4)
    a = mdm_generate(RandomDenoiser(5), prompt, **kw)
    b = mdm_generate(RandomDenoiser(5), prompt, cfg_scale=0.0, **kw)
    assert torch.equal(a.tokens, b.tokens) and a.nfe == b.nfe == 4


# ---------------------------------------------------------------- temperature / Gumbel


def flat(ids, attention_mask, call_index):
    return torch.zeros(*ids.shape, V)


def test_gumbel_same_seed_same_tokens_and_differs_from_argmax():
    kw = dict(gen_length=16, steps=4, temperature=1.0)
    a = mdm_generate(FunctionDenoiser(flat), torch.tensor([[1]]), generator=torch.Generator().manual_seed(0), **kw)
    b = mdm_generate(FunctionDenoiser(flat), torch.tensor([[1]]), generator=torch.Generator().manual_seed(0), **kw)
    c = mdm_generate(FunctionDenoiser(flat), torch.tensor([[1]]), generator=torch.Generator().manual_seed(1), **kw)
    greedy = mdm_generate(FunctionDenoiser(flat), torch.tensor([[1]]), gen_length=16, steps=4)
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)
    assert (greedy.tokens == 0).all()  # argmax of a flat distribution: the first id
    assert not (a.tokens == 0).all()


def test_gumbel_matches_llada_formula_in_float64():
    """One position, one step: the token equals argmax(exp(l) / (-log u)^T) with u drawn in float64
    from the same generator, i.e. LLaDA's add_gumbel_noise."""
    logits = torch.tensor([0.3, 1.2, -0.4, 2.0, 0.0, 1.9] + [-3.0] * (V - 6), dtype=torch.float64)
    denoiser = FunctionDenoiser(lambda ids, m, c: logits.expand(*ids.shape, V).clone())
    for seed in range(20):
        out = mdm_generate(
            denoiser, torch.tensor([[1]]), gen_length=1, steps=1, temperature=0.8,
            generator=torch.Generator().manual_seed(seed),
        )
        u = torch.rand((1, 1, V), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        expected = (logits.exp() / (-torch.log(u)) ** 0.8).argmax(-1)
        assert out.tokens.item() == expected.item()


def test_identity_denoiser_keeps_prompt_and_predicts_input():
    identity = IdentityDenoiser()
    canvas = torch.tensor([[3, 4, MASK]])
    logits = identity.forward(identity.embed(canvas), None)
    assert logits.argmax(-1).tolist() == [[3, 4, MASK]]
    assert identity.nfe == 1
    assert math.isclose(torch.softmax(logits[0, 0], -1)[3].item(), 1.0, abs_tol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_greedy_fast_path_is_bit_identical_to_the_general_float64_path(scale):
    from dslbench.diffusion.mdm import _greedy_float64, _proposal_float64

    g = torch.Generator().manual_seed(3)
    full = torch.randn(3, 9, 50, generator=g) * scale
    full[0, 2, 7] = float("-inf")  # a banned token
    full[1, 4, :] = 2.5  # a row of ties: the first index wins in both
    logits = full[:, 2:]  # a sliced view, as the sampler passes it
    fast = _greedy_float64(logits)
    general = _proposal_float64(logits, 0.0, 1, torch.tensor([1]), False, False, None)
    assert torch.equal(fast[0], general[0])
    assert torch.equal(fast[1], general[1])
    assert fast[1].dtype == torch.float64
    assert int(fast[0][1, 2]) == 0


def test_proposal_on_masked_rows_only_matches_the_full_proposal_there():
    from dslbench.diffusion.mdm import _propose

    g = torch.Generator().manual_seed(5)
    logits = (torch.randn(2, 7, 40, generator=g) * 4)[:, 1:]  # a sliced view, as in the sampler
    rows = torch.rand(2, 6, generator=g) < 0.5
    kw = dict(temperature=0.0, remasking="low_confidence", eos_id=1, eos_ids=torch.tensor([1]),
              logits_eos_inf=False, confidence_eos_eot_inf=False, generator=None)
    full = _propose(logits, **kw)
    part = _propose(logits, **kw, rows=rows)
    for a, b in zip(full, part):
        assert torch.equal(a[rows], b[rows])
    assert torch.equal(part[1][~rows], torch.zeros(int((~rows).sum()), dtype=torch.float64))
