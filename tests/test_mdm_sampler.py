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
    with pytest.raises(ValueError, match="low_confidence, random, entropy, margin"):
        mdm_generate(oracle, prompt, gen_length=10, steps=10, remasking="topk")


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
    # low_confidence on these permuted rows: the order is fixed run to run (how exact ties break,
    # as torch.topk over the release's layout: test_ties_break_as_released_topk_*)
    runs = [commit_order(run_traced(oracle, torch.tensor([[9]]), gen_length=8, steps=8)[1]) for _ in range(2)]
    assert runs[0] == runs[1] and sorted(sum(runs[0], [])) == list(range(8))


def test_logits_eos_inf_never_emits_eos():
    oracle = OracleDenoiser(torch.tensor([EOS, EOS, 3, EOS]))
    plain = mdm_generate(oracle, torch.tensor([[1]]), gen_length=4, steps=4).tokens
    assert plain.tolist() == [[EOS, EOS, 3, EOS]]
    banned = mdm_generate(oracle, torch.tensor([[1]]), gen_length=4, steps=4, logits_eos_inf=True).tokens
    assert not (banned == EOS).any()
    assert banned[0, 2] == 3


def _eos_order(oracle, steps=4, **kw):
    return commit_order(run_traced(oracle, torch.tensor([[1]]), gen_length=4, steps=steps, **kw)[1])


def test_confidence_eos_eot_inf_as_released_at_temperature_zero_removes_eos_and_eot():
    """LLaDA's generate.py at T = 0: its noise function returns the logits tensor itself, so
    the EOS write and the EoT write both land in the confidence softmax: both score 0."""
    target = torch.tensor([EOS, 3, EOT, 4])
    oracle = OracleDenoiser(target, confidence=torch.tensor([0.9, 0.2, 0.95, 0.3]), eos_ids=(EOS, EOT))
    assert _eos_order(oracle) == [[2], [0], [3], [1]]
    for value in (True, "true", "released", "both"):
        # 0.3 and 0.2 first; EOS and EoT tie at 0 and go by position
        assert _eos_order(oracle, confidence_eos_eot_inf=value) == [[3], [1], [0], [2]]
    out = mdm_generate(oracle, torch.tensor([[1]]), gen_length=4, steps=4, confidence_eos_eot_inf=True)
    assert torch.equal(out.tokens[0], target)  # still emitted, only ranked last


def test_confidence_eos_eot_inf_as_released_at_positive_temperature_removes_only_eot():
    """At T > 0 the noisy logits are a new tensor: the EOS write misses the softmax, the EoT one
    does not. EOS keeps 0.9 / (1 - 0.1/15) (EoT's share of the rest removed) and goes first."""
    target = torch.tensor([EOS, 3, EOT, 4])
    oracle = OracleDenoiser(target, confidence=torch.tensor([0.9, 0.2, 0.95, 0.3]), eos_ids=(EOS, EOT))
    kw = dict(temperature=0.05)  # sharp enough that the Gumbel draw keeps every argmax
    gen = lambda: torch.Generator().manual_seed(0)
    assert _eos_order(oracle, confidence_eos_eot_inf=True, generator=gen(), **kw) == [[0], [3], [1], [2]]
    assert _eos_order(oracle, confidence_eos_eot_inf="both", generator=gen(), **kw) == [[3], [1], [0], [2]]
    assert _eos_order(oracle, generator=gen(), **kw) == [[2], [0], [3], [1]]

    from dslbench.diffusion.proposal import propose as _propose

    probs = torch.full((1, 1, V), 0.1 / (V - 1), dtype=torch.float64)
    probs[..., EOS] = 0.9  # EoT and every other id hold 0.1 / 15
    logits = torch.log(probs)
    common = dict(remasking="low_confidence", eos_id=EOS, rank_removed_last=False, logits_eos_inf=False)
    _, p_hot, _, _ = _propose(logits, temperature=0.05, removed=torch.tensor([EOT]), generator=gen(), **common)
    assert p_hot.item() == pytest.approx(0.9 / (1 - 0.1 / 15), rel=1e-6)
    x0, p_cold, _, _ = _propose(logits, temperature=0.0, removed=torch.tensor([EOS, EOT]), generator=None, **common)
    assert x0.item() == EOS and p_cold.item() == 0.0


def test_confidence_eos_eot_inf_with_random_remasking():
    """Released: random confidences are uniform draws, the option changes nothing. ``both``:
    positions proposing EOS / EoT rank below every draw."""
    target = torch.tensor([EOS, 3, EOT, 4])
    oracle = OracleDenoiser(target, confidence=torch.tensor([0.9, 0.2, 0.95, 0.3]), eos_ids=(EOS, EOT))
    for seed in range(5):
        kw = dict(steps=2, remasking="random")
        plain = _eos_order(oracle, generator=torch.Generator().manual_seed(seed), **kw)
        released = _eos_order(oracle, confidence_eos_eot_inf=True, generator=torch.Generator().manual_seed(seed), **kw)
        both = _eos_order(oracle, confidence_eos_eot_inf="both", generator=torch.Generator().manual_seed(seed), **kw)
        assert released == plain
        assert both[1] == [0, 2]


def test_confidence_eos_eot_inf_rejects_unknown_values():
    oracle = OracleDenoiser(torch.tensor([3, 4]))
    with pytest.raises(ValueError, match="confidence_eos_eot_inf='eot'.*released.*both"):
        mdm_generate(oracle, torch.tensor([[1]]), gen_length=2, steps=2, confidence_eos_eot_inf="eot")


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
    from dslbench.diffusion.proposal import _greedy_float64, _proposal_float64

    g = torch.Generator().manual_seed(3)
    full = torch.randn(3, 9, 50, generator=g) * scale
    full[0, 2, 7] = float("-inf")  # a banned token
    full[1, 4, :] = 2.5  # a row of ties: the first index wins in both
    logits = full[:, 2:]  # a sliced view, as the sampler passes it
    fast = _greedy_float64(logits)
    general = _proposal_float64(logits, 0.0, 1, torch.tensor([], dtype=torch.long), False, None)
    assert torch.equal(fast[0], general[0])
    assert torch.equal(fast[1], general[1])
    assert fast[1].dtype == torch.float64
    assert int(fast[0][1, 2]) == 0


def test_proposal_on_masked_rows_only_matches_the_full_proposal_there():
    from dslbench.diffusion.proposal import propose as _propose

    g = torch.Generator().manual_seed(5)
    logits = (torch.randn(2, 7, 40, generator=g) * 4)[:, 1:]  # a sliced view, as in the sampler
    rows = torch.rand(2, 6, generator=g) < 0.5
    for remasking in ("low_confidence", "entropy", "margin"):
        for removed in (torch.tensor([], dtype=torch.long), torch.tensor([1, 3])):
            kw = dict(temperature=0.0, remasking=remasking, eos_id=1, removed=removed, rank_removed_last=True,
                      logits_eos_inf=False, generator=None, need_entropy=True)
            full = _propose(logits, **kw)
            part = _propose(logits, **kw, rows=rows)
            for a, b in zip(full, part):
                assert torch.equal(a[rows], b[rows])
    assert torch.equal(part[1][~rows], torch.zeros(int((~rows).sum()), dtype=torch.float64))


# ---------------------------------------------------------------- token identity with the release


def _released_generate(denoiser, prompt, *, steps, gen_length, block_length, logits_eos_inf, confidence_eos_eot_inf):
    """LLaDA's released ``generate`` at temperature 0 (one row, no CFG), re-expressed over the
    seam from reading ML-GSAI/LLaDA generate.py: EOS logit banned before the argmax with
    ``logits_eos_inf``; with ``confidence_eos_eot_inf`` the EOS and EoT columns are set to -inf
    after it (at T = 0 both writes reach the confidence softmax); top-k over the current block."""
    eos, eot = denoiser.eos_ids
    p_len = prompt.shape[1]
    x = torch.cat([prompt, torch.full((1, gen_length), MASK)], dim=1)
    n_blocks = gen_length // block_length
    for b in range(n_blocks):
        lo, hi = p_len + b * block_length, p_len + (b + 1) * block_length
        counts = transfer_schedule((x[:, lo:hi] == MASK).sum(1), steps // n_blocks)
        for i in range(steps // n_blocks):
            masked = x == MASK
            logits = denoiser.forward(denoiser.embed(x), None).to(torch.float64)
            if logits_eos_inf:
                logits[..., eos] = float("-inf")
            x0 = logits.argmax(-1)
            if confidence_eos_eot_inf:
                logits[..., eos] = float("-inf")
                logits[..., eot] = float("-inf")
            conf = torch.softmax(logits, -1).gather(-1, x0[..., None]).squeeze(-1)
            conf[:, hi:] = float("-inf")
            conf = torch.where(masked, conf, torch.tensor(float("-inf"), dtype=torch.float64))
            pick = torch.topk(conf[0], int(counts[0, i])).indices
            x[0, pick] = x0[0, pick]
    return x[:, p_len:]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("eos_inf, conf_inf", [(False, False), (False, True), (True, True), (True, False)])
def test_token_identical_to_released_generate_at_temperature_zero(seed, eos_inf, conf_inf):
    base = RandomDenoiser(seed, eos_ids=(EOS, EOT), scale=4.0)
    # RandomDenoiser ignores positions (every mask reads alike); a fixed per-position offset
    # breaks the ties, whose order torch.topk leaves unspecified.
    offset = torch.randn(15, V, generator=torch.Generator().manual_seed(100 + seed))
    den = FunctionDenoiser(lambda ids, m, c: base.forward(base.embed(ids), m) + offset[: ids.shape[1]],
                           eos_ids=(EOS, EOT))
    prompt = torch.tensor([[1, 2, 3]])
    kw = dict(steps=6, gen_length=12, block_length=4)
    ours = mdm_generate(den, prompt, logits_eos_inf=eos_inf, confidence_eos_eot_inf=conf_inf, **kw).tokens
    ref = _released_generate(den, prompt, logits_eos_inf=eos_inf, confidence_eos_eot_inf=conf_inf, **kw)
    assert torch.equal(ours, ref)


def _eot_heavy_denoiser(seed, ender_logit=20.0, words_only=False):
    """A seam like a model that ends a thought where the text is still open: a masked position
    whose left neighbour is still masked proposes EoT (EOS at some positions), else a word of its
    own (per-position logits counted from the canvas end, so left padding changes nothing). Under
    ``confidence_eos_eot_inf`` every EoT/EOS proposal scores exactly 0, so most of a step's
    candidates tie, and which tied position goes first decides the text."""
    g = torch.Generator().manual_seed(200 + seed)
    words = torch.randn(32, V, generator=g) * 3.0
    words[:, [EOS, EOT, MASK]] = -5.0
    ender = torch.where(torch.rand(32, generator=g) < 0.75, EOT, EOS)
    if words_only:  # the open-left positions propose a word instead (one per position)
        ender = torch.randint(0, EOT, (32,), generator=g)

    def fn(ids, attention_mask, call_index):
        logits = words[-ids.shape[1]:].expand(ids.shape[0], -1, -1).clone()
        open_left = torch.zeros_like(ids, dtype=torch.bool)
        open_left[:, 1:] = ids[:, :-1] == MASK
        row, col = open_left.nonzero(as_tuple=True)
        logits[row, col, ender[-ids.shape[1]:][col]] = ender_logit
        return logits

    return FunctionDenoiser(fn, eos_ids=(EOS, EOT))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("eos_inf, conf_inf", [(False, True), (True, True), (False, False)])
def test_ties_break_as_released_topk_when_the_model_proposes_eot(seed, eos_inf, conf_inf):
    den = _eot_heavy_denoiser(seed)
    prompts = [torch.tensor([[1, 2, 3]]), torch.tensor([[4, 5, 6, 7, 8, 1]]), torch.tensor([[9]])]
    kw = dict(steps=8, gen_length=16, block_length=8)
    refs = [_released_generate(den, p, logits_eos_inf=eos_inf, confidence_eos_eot_inf=conf_inf, **kw)
            for p in prompts]
    for prompt, ref in zip(prompts, refs):  # alone
        ours = mdm_generate(den, prompt, logits_eos_inf=eos_inf, confidence_eos_eot_inf=conf_inf, **kw).tokens
        assert torch.equal(ours, ref)
    # together, left-padded: each row's topk still runs over its own unpadded sequence
    width = max(p.shape[1] for p in prompts)
    batch = torch.full((len(prompts), width), PAD)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        batch[row, width - p.shape[1]:] = p[0]
        mask[row, width - p.shape[1]:] = 1
    ours = mdm_generate(den, batch, mask, logits_eos_inf=eos_inf, confidence_eos_eot_inf=conf_inf, **kw).tokens
    assert torch.equal(ours, torch.cat(refs))


@pytest.mark.parametrize("seed", range(4))
def test_saturated_confidences_break_as_released_topk(seed):
    # the default path ties too where p(x0) rounds to exactly 1.0 in float64: proposals made with
    # a logit 60 above the rest (here the open-left positions, each with its own word)
    den = _eot_heavy_denoiser(seed, ender_logit=60.0, words_only=True)
    prompt = torch.tensor([[1, 2, 3]])
    kw = dict(steps=8, gen_length=16, block_length=8, logits_eos_inf=False, confidence_eos_eot_inf=False)
    assert torch.equal(mdm_generate(den, prompt, **kw).tokens, _released_generate(den, prompt, **kw))


# ---------------------------------------------------------------- orders and parallel decoding (#17)


def _table_denoiser(probs):
    """A seam whose generated span reads the probability table ``probs`` ``[G, V]`` at every call."""
    table = torch.log(torch.as_tensor(probs, dtype=torch.float64)).to(torch.float32)

    def fn(ids, attention_mask, call_index):
        out = torch.zeros(*ids.shape, V)
        out[:, -table.shape[0]:] = table
        return out

    return FunctionDenoiser(fn)


def _row(top, second=None):
    """A distribution with ``top`` on id 0, ``second`` on id 1 and the rest spread evenly over ids
    2..V-2 (the mask id gets nothing)."""
    p = torch.zeros(V, dtype=torch.float64)
    p[0] = top
    rest = 1 - top
    if second is not None:
        p[1] = second
        rest -= second
    others = list(range(1 if second is None else 2, V - 1))
    p[others] = rest / len(others)
    return p


# Four positions, each proposing id 0. By hand (nats), e.g. pos 0:
# 0.5 ln 2 + 0.45 ln(1/0.45) + 0.05 ln(13/0.05) = 0.347 + 0.359 + 0.278 = 0.98
#   pos 0: 0.5 / 0.45 / 0.05 over 13 ids   margin 0.05,   entropy 0.98  (a close pair)
#   pos 1: 0.6 / 0.4 over 14 ids           margin ~0.571, entropy 1.73
#   pos 2: 0.95 / 0.05 over 14 ids         margin ~0.946, entropy 0.33
#   pos 3: 0.7 / 0.05 / 0.25 over 13 ids   margin 0.65,   entropy 1.39
TABLE = torch.stack([_row(0.5, 0.45), _row(0.6), _row(0.95), _row(0.7, 0.05)])


def _entropy(p):
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def test_table_entropies_and_margins_by_hand():
    assert [round(_entropy(p), 2) for p in TABLE] == [0.98, 1.73, 0.33, 1.39]
    margins = [float(p.topk(2).values[0] - p.topk(2).values[1]) for p in TABLE]
    assert margins == pytest.approx([0.05, 0.6 - 0.4 / 14, 0.95 - 0.05 / 14, 0.65])


@pytest.mark.parametrize(
    "remasking, order",
    [
        ("low_confidence", [[2], [3], [1], [0]]),  # p(x0): 0.95 > 0.7 > 0.6 > 0.5
        ("entropy", [[2], [0], [3], [1]]),  # lowest entropy first: 0.33 < 0.98 < 1.39 < 1.73
        ("margin", [[2], [3], [1], [0]]),  # largest margin first: 0.946 > 0.65 > 0.571 > 0.05
    ],
)
def test_orders_by_hand(remasking, order):
    _, trace = run_traced(_table_denoiser(TABLE), torch.tensor([[1]]), gen_length=4, steps=4, remasking=remasking)
    assert commit_order(trace) == order


def test_margin_and_entropy_orders_differ_where_the_runner_up_is_close():
    # pos 0 holds 0.5 but shares the mass with one rival: low entropy, tiny margin
    table = torch.stack([_row(0.5, 0.45), _row(0.6)])
    by = lambda r: commit_order(run_traced(_table_denoiser(table), torch.tensor([[1]]), gen_length=2, steps=2,
                                           remasking=r)[1])
    assert by("entropy") == [[0], [1]]
    assert by("margin") == [[1], [0]]


def _parallel(rule, **kw):
    from dslbench.diffusion.mdm import ParallelConfig

    return ParallelConfig(rule, **kw)


def test_threshold_commits_every_position_at_or_above_it_and_at_least_one():
    den = _table_denoiser(TABLE)
    out, trace = run_traced(den, torch.tensor([[1]]), gen_length=4, steps=4, parallel=_parallel("threshold", threshold=0.65))
    # step 1: 0.95 and 0.7 clear 0.65; step 2: nothing does, the best (0.6) goes; step 3: 0.5
    assert commit_order(trace) == [[2, 3], [1], [0]]
    assert out.nfe == 3 and out.row_nfe == (3,) and out.steps == 3
    _, trace = run_traced(_table_denoiser(TABLE), torch.tensor([[1]]), gen_length=4, steps=4,
                          parallel=_parallel("threshold", threshold=0.5))
    assert commit_order(trace) == [[0, 1, 2, 3]]


def test_eb_commits_the_longest_prefix_whose_entropy_sum_minus_max_fits():
    h = sorted(_entropy(p) for p in TABLE)  # entropy order: 0.33, 0.98, 1.39, 1.73 (pos 2, 0, 3, 1)
    # gamma between h0 and h0 + h1: the prefix {2, 0} has sum - max = h0 <= gamma, adding pos 3 gives h0 + h1
    gamma = h[0] + 0.5 * h[1]
    _, trace = run_traced(_table_denoiser(TABLE), torch.tensor([[1]]), gen_length=4, steps=4, remasking="entropy",
                          parallel=_parallel("eb", eb_gamma=gamma))
    # step 2: {3, 1} remain; sum - max = h(pos 3) = 1.39 > gamma: one position
    assert commit_order(trace) == [[0, 2], [3], [1]]
    _, trace = run_traced(_table_denoiser(TABLE), torch.tensor([[1]]), gen_length=4, steps=4, remasking="entropy",
                          parallel=_parallel("eb", eb_gamma=0.0))
    assert commit_order(trace) == [[2], [0], [3], [1]]  # gamma 0: one position a step
    _, trace = run_traced(_table_denoiser(TABLE), torch.tensor([[1]]), gen_length=4, steps=4, remasking="entropy",
                          parallel=_parallel("eb", eb_gamma=sum(h[:3]) + 1e-4))
    assert commit_order(trace) == [[0, 1, 2, 3]]  # the whole sum minus the largest fits
    _, trace = run_traced(_table_denoiser(TABLE), torch.tensor([[1]]), gen_length=4, steps=4, remasking="entropy",
                          parallel=_parallel("eb", eb_gamma=sum(h[:3]) - 1e-4))
    assert commit_order(trace)[0] == [0, 2, 3]  # just below it: the largest-entropy position waits


def test_eb_follows_the_chosen_order():
    h = {i: _entropy(p) for i, p in enumerate(TABLE)}
    # margin order 2, 3, 1, 0: {2, 3} costs h2 (max is h3); adding 1 costs h2 + h3 (max is h1)
    gamma = h[2] + 0.5 * h[3]
    _, trace = run_traced(_table_denoiser(TABLE), torch.tensor([[1]]), gen_length=4, steps=4, remasking="margin",
                          parallel=_parallel("eb", eb_gamma=gamma))
    assert commit_order(trace)[0] == [2, 3]


@pytest.mark.parametrize("steps, per_step", [(2, [2, 2]), (3, [2, 1, 1]), (1, [4]), (6, [1, 1, 1, 1])])
def test_cap_forces_completion_within_the_budget(steps, per_step):
    """gamma 0 wants one position a step; with fewer steps than masks the floor ceil(m / left)
    takes over: 4 masks in 3 steps -> ceil(4/3) = 2, then ceil(2/2) = 1, then 1."""
    _, trace = run_traced(_table_denoiser(TABLE), torch.tensor([[1]]), gen_length=4, steps=steps, remasking="entropy",
                          parallel=_parallel("eb", eb_gamma=0.0))
    assert commit_counts(trace) == [[k] for k in per_step]


def test_cap_keeps_a_step_for_every_later_block():
    # 2 blocks of 4 in 3 steps: block 0 may use 3 - 1 = 2 steps (2, 2), block 1 gets the last (4)
    table = torch.cat([TABLE, TABLE])
    out, trace = run_traced(_table_denoiser(table), torch.tensor([[1]]), gen_length=8, block_length=4, steps=3,
                            remasking="entropy", parallel=_parallel("eb", eb_gamma=0.0))
    assert commit_counts(trace) == [[2], [2], [4]]
    assert [s.block for s in trace] == [0, 1, 1]
    assert out.nfe == 3 and not (out.tokens == MASK).any()
    with pytest.raises(ValueError, match=r"steps=1.*2 blocks"):
        mdm_generate(_table_denoiser(table), torch.tensor([[1]]), gen_length=8, block_length=4, steps=1,
                     parallel=_parallel("threshold"))


def test_batch_rows_advance_on_their_own_and_count_their_own_calls():
    sure = torch.stack([_row(0.99)] * 4)  # every position clears the threshold at once
    table = torch.stack([sure, TABLE])

    def fn(ids, attention_mask, call_index):
        out = torch.zeros(*ids.shape, V)
        out[:, -4:] = torch.log(table).to(torch.float32)
        return out

    out = mdm_generate(FunctionDenoiser(fn), torch.tensor([[1], [2]]), gen_length=4, steps=4,
                       parallel=_parallel("threshold", threshold=0.65))
    assert out.row_nfe == (1, 3)  # row 0 is done after one call; row 1 needs three
    assert out.nfe == 3 and out.steps == 3  # the batch's calls: its slowest row's


def test_cfg_counts_two_calls_per_adaptive_step():
    out = mdm_generate(FunctionDenoiser(prompt_aware), torch.tensor([[7]]), gen_length=4, steps=2, cfg_scale=1.0,
                       parallel=_parallel("threshold", threshold=0.99))
    assert out.steps == 2 and out.nfe == 4 and out.row_nfe == (4,)
    assert not (out.tokens == MASK).any()


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(remasking="random", parallel="threshold"), "parallel=threshold.*remasking=low_confidence.*remasking=random"),
        (dict(remasking="entropy", parallel="threshold"), "parallel=threshold.*remasking=entropy"),
        (dict(remasking="random", parallel="eb"), "parallel=eb.*remasking=random"),
        (dict(parallel="eb", remdm="cap"), "remdm=cap.*parallel=eb"),
    ],
)
def test_meaningless_combinations_are_refused_naming_both_args(kw, match):
    from dslbench.diffusion.remdm import RemdmConfig

    parallel = _parallel(kw.pop("parallel"))
    remdm = RemdmConfig(kw.pop("remdm")) if "remdm" in kw else None
    with pytest.raises(ValueError, match=match):
        mdm_generate(_table_denoiser(TABLE), torch.tensor([[1]]), gen_length=4, steps=4, parallel=parallel,
                     remdm=remdm, **kw)


def test_parallel_config_rejects_bad_values():
    with pytest.raises(ValueError, match="parallel='greedy'"):
        _parallel("greedy")
    with pytest.raises(ValueError, match="threshold=1.5"):
        _parallel("threshold", threshold=1.5)
    with pytest.raises(ValueError, match="eb_gamma=-1"):
        _parallel("eb", eb_gamma=-1.0)


def test_fixed_rule_is_the_default_and_unchanged():
    den = RandomDenoiser(2)
    prompt = torch.tensor([[1, 2, 3]])
    a = mdm_generate(den, prompt, gen_length=8, steps=4, block_length=4)
    b = mdm_generate(den, prompt, gen_length=8, steps=4, block_length=4, parallel=_parallel("fixed"))
    assert torch.equal(a.tokens, b.tokens) and a.row_nfe == (4,)
