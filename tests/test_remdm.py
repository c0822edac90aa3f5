"""ReMDM remasking inside the LLaDA sampler: budget, equivalences, hand-computed sigmas, revision."""

from __future__ import annotations

import math

import pytest
import torch

from dslbench.diffusion.mdm import mdm_generate
from dslbench.diffusion.oracle import DEFAULT_MASK_ID as MASK, DEFAULT_VOCAB as V, FunctionDenoiser, RandomDenoiser
from dslbench.diffusion.remdm import (
    REMDM_STRATEGIES,
    RemdmConfig,
    block_schedule,
    loop_phases,
    remask_probability,
)

STRONG = {
    "cap": RemdmConfig("cap", eta=0.5),
    "rescale": RemdmConfig("rescale", eta=1.0),
    "conf": RemdmConfig("conf"),
    "loop": RemdmConfig("loop", eta=0.5),
}


def traced(denoiser, prompt, **kw):
    steps = []
    out = mdm_generate(denoiser, prompt, trace=steps.append, **kw)
    return out, steps


def test_config_validation_lists_strategies():
    with pytest.raises(ValueError, match="cap, rescale, conf, loop"):
        RemdmConfig("sometimes")
    with pytest.raises(ValueError, match="t_off"):
        RemdmConfig("loop", t_on=0.1, t_off=0.2)
    with pytest.raises(ValueError, match="alpha_on"):
        RemdmConfig("loop", alpha_on=1.0)
    assert REMDM_STRATEGIES == ("cap", "rescale", "conf", "loop")


@pytest.mark.parametrize("strategy", REMDM_STRATEGIES)
@pytest.mark.parametrize("cfg_scale, per_step", [(0.0, 1), (0.5, 2)])
def test_remdm_keeps_the_nfe_budget(strategy, cfg_scale, per_step):
    denoiser = RandomDenoiser(4)
    out, trace = traced(
        denoiser, torch.tensor([[1, 2], [3, 4]]), gen_length=16, steps=16, block_length=8,
        cfg_scale=cfg_scale, remdm=STRONG[strategy], generator=torch.Generator().manual_seed(0),
    )
    assert out.nfe == denoiser.nfe == 16 * per_step
    assert len(trace) == 16
    assert (out.tokens != MASK).all()


@pytest.mark.parametrize("strategy", ["cap", "rescale", "conf"])
def test_masked_count_follows_llada_schedule_despite_remasking(strategy):
    prompt = torch.tensor([[1, 2], [3, 4]])
    kw = dict(gen_length=12, steps=12, block_length=12, temperature=1.0)
    _, plain = traced(RandomDenoiser(6), prompt, generator=torch.Generator().manual_seed(0), **kw)
    _, remdm = traced(
        RandomDenoiser(6), prompt, remdm=STRONG[strategy], generator=torch.Generator().manual_seed(0), **kw
    )
    assert any(step.remasked.any() for step in remdm), "expected some remasking at these settings"
    for a, b in zip(plain, remdm):
        assert torch.equal((a.tokens == MASK).sum(1), (b.tokens == MASK).sum(1))
        assert not (b.remasked & b.committed).any()


@pytest.mark.parametrize("strategy", ["cap", "rescale"])
def test_eta_zero_equals_plain_sampling(strategy):
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    kw = dict(gen_length=8, steps=8, block_length=4, temperature=0.9)
    plain = mdm_generate(RandomDenoiser(7), prompt, generator=torch.Generator().manual_seed(3), **kw)
    off = mdm_generate(
        RandomDenoiser(7), prompt, remdm=RemdmConfig(strategy, eta=0.0),
        generator=torch.Generator().manual_seed(3), **kw,
    )
    assert torch.equal(plain.tokens, off.tokens)


def test_remasking_stays_inside_the_current_block():
    _, trace = traced(
        RandomDenoiser(8), torch.tensor([[1, 2]]), gen_length=12, steps=12, block_length=4,
        remdm=RemdmConfig("rescale", eta=1.0), generator=torch.Generator().manual_seed(0),
    )
    assert any(step.remasked.any() for step in trace)
    for step in trace:
        where = torch.nonzero(step.remasked)[:, 1]
        assert ((where >= 4 * step.block) & (where < 4 * step.block + 4)).all()
        assert (step.tokens[:, : 4 * step.block] != MASK).all()


# ---------------------------------------------------------------- sigma by hand


def test_sigma_cap_and_rescale_by_hand():
    committed = torch.tensor([[True, True, False, False]])
    probs = torch.zeros(1, 4, dtype=torch.float64)
    # step 2 of 4: alpha_t = 1/2, alpha_s = 3/4, (1 - alpha_s) / alpha_t = 1/2
    cap = remask_probability(RemdmConfig("cap", eta=0.02), 2, 4, committed, probs)
    assert cap.tolist() == [[0.02, 0.02, 0.0, 0.0]]
    cap = remask_probability(RemdmConfig("cap", eta=0.9), 2, 4, committed, probs)
    assert cap.tolist() == [[0.5, 0.5, 0.0, 0.0]]
    rescale = remask_probability(RemdmConfig("rescale", eta=0.5), 2, 4, committed, probs)
    assert rescale.tolist() == [[0.25, 0.25, 0.0, 0.0]]
    # step 1 of 4: ratio (1 - 1/2) / (1/4) = 2, so sigma_max = 1
    rescale = remask_probability(RemdmConfig("rescale", eta=0.5), 1, 4, committed, probs)
    assert rescale.tolist() == [[0.5, 0.5, 0.0, 0.0]]
    # last step: alpha_s = 1, nothing may go back
    assert remask_probability(RemdmConfig("cap", eta=0.5), 3, 4, committed, probs) is None
    assert remask_probability(RemdmConfig("cap", eta=0.0), 1, 4, committed, probs) is None


def test_sigma_conf_by_hand():
    committed = torch.tensor([[True, True, False]])
    probs = torch.tensor([[0.9, 0.1, 0.0]], dtype=torch.float64)
    sigma = remask_probability(RemdmConfig("conf"), 2, 4, committed, probs)  # sigma_max = 1/2
    z = math.exp(-0.9) + math.exp(-0.1)
    assert sigma[0, 0].item() == pytest.approx(0.5 * math.exp(-0.9) / z)
    assert sigma[0, 1].item() == pytest.approx(0.5 * math.exp(-0.1) / z)
    assert sigma[0, 2].item() == 0.0
    assert sigma[0, 1] > sigma[0, 0]  # the less confident token is likelier to go back


def test_loop_phases_and_schedule_by_hand():
    config = RemdmConfig("loop", eta=0.02, t_on=0.55, t_off=0.05, alpha_on=0.9)
    # t_i = 1, .9, .8, .7, .6 | .5, .4, .3, .2, .1 ; the last step is forced into the final phase
    assert loop_phases(config, 10) == ["first"] * 5 + ["loop"] * 4 + ["last"]
    # 20 masks: floor(0.9 * 20) = 18 over 5 steps -> 4,4,4,3,3 ; the other 2 at the last step
    assert block_schedule(config, torch.tensor([20]), 10).tolist() == [[4, 4, 4, 3, 3, 0, 0, 0, 0, 2]]
    # 4 steps: t = 1, .75 (first) | .5, .25 (loop) -> last forced; floor(3.6) = 3
    assert loop_phases(config, 4) == ["first", "first", "loop", "last"]
    assert block_schedule(config, torch.tensor([4]), 4).tolist() == [[2, 1, 0, 1]]
    assert block_schedule(config, torch.tensor([5]), 1).tolist() == [[5]]
    # other strategies keep LLaDA's schedule
    assert block_schedule(RemdmConfig("cap"), torch.tensor([10]), 4).tolist() == [[3, 3, 2, 2]]


def test_loop_remasks_only_in_the_loop_phase():
    _, trace = traced(
        RandomDenoiser(9), torch.tensor([[1, 2]]), gen_length=20, steps=10,
        remdm=RemdmConfig("loop", eta=0.5), generator=torch.Generator().manual_seed(0),
    )
    phases = loop_phases(RemdmConfig("loop"), 10)
    remasked_steps = {step.step for step in trace if step.remasked.any()}
    assert remasked_steps and all(phases[s] == "loop" for s in remasked_steps)
    # the loop phase trades tokens one for one: the masked count is flat there
    masked = [int((step.tokens == MASK).sum()) for step in trace]
    assert masked == [16, 12, 8, 5, 2, 2, 2, 2, 2, 0]


# ---------------------------------------------------------------- revision


WRONG, RIGHT = 7, [1, 2, 3, 4]


def changes_its_mind(ids, attention_mask, call_index):
    """Predicts RIGHT (position 0 most confident); on its first call position 0 says WRONG."""
    rows, length = ids.shape
    logits = torch.full((rows, length, V), -4.0)
    for j, token in enumerate(RIGHT):
        logits[:, length - 4 + j, token] = 3.0 - 0.5 * j
    if call_index == 0:
        logits[:, length - 4, WRONG] = 9.0
    return logits


def test_plain_sampling_keeps_the_early_mistake():
    out = mdm_generate(FunctionDenoiser(changes_its_mind), torch.tensor([[9]]), gen_length=4, steps=4)
    assert out.tokens.tolist() == [[WRONG, 2, 3, 4]]


@pytest.mark.parametrize("seed", range(5))
def test_remdm_revises_a_wrong_committed_token(seed):
    # rescale, eta = 1: at step 1, alpha_t = 1/4, alpha_s = 1/2, so sigma = min(1, 2) = 1
    out, trace = traced(
        FunctionDenoiser(changes_its_mind), torch.tensor([[9]]), gen_length=4, steps=4,
        remdm=RemdmConfig("rescale", eta=1.0), generator=torch.Generator().manual_seed(seed),
    )
    assert trace[0].tokens[0, 0] == WRONG
    assert trace[1].remasked[0, 0] and trace[1].tokens[0, 0] == MASK
    assert out.tokens.tolist() == [RIGHT]
    assert out.nfe == 4


def test_remdm_and_the_schedules_do_not_import_the_sampler():
    """mdm imports remdm; the pieces both need live in diffusion/schedule.py, so no import of
    dslbench.diffusion.mdm (even a lazy one inside a function) may appear in remdm or schedule."""
    import ast
    from pathlib import Path

    import dslbench.diffusion.remdm as remdm_module
    import dslbench.diffusion.schedule as schedule_module

    for module in (remdm_module, schedule_module):
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "dslbench.diffusion.mdm" not in imported, module.__name__
