"""MDLM's ddpm_cache sampler and ReMDM's four strategies, token for token against a
re-implementation of the released loop (tests/mdlm_reference.py), same tiny weights, same uniforms."""

from __future__ import annotations

import pytest
import torch

from dslbench.diffusion.denoiser import ModelDenoiser
from dslbench.diffusion.mdlm_sampler import mdlm_generate
from dslbench.diffusion.remdm import RemdmConfig
from dslbench.models.loading import load_model
from tests.mdlm_reference import ReleasedSampler


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tiny_mdlm):
    model, _, info = load_model(str(tiny_mdlm), dtype="float32", device="cpu")
    return model, info


def _seam(model, info):
    return ModelDenoiser(model, mask_id=info.mask_id, eos_id=info.eos_id, eos_ids=info.eos_ids,
                         vocab_size=info.vocab_size)


def _released(model, info, sampler, **kw):
    backbone = lambda ids: model(input_ids=ids).logits  # noqa: E731  (the same weights, raw logits)
    return ReleasedSampler(backbone, info.mask_id, sampler=sampler, **kw)


CASES = [
    ("mdlm", None, {}),
    ("remdm-cap", "cap", {"eta": 0.3}),
    ("remdm-rescale", "rescale", {"eta": 0.5}),
    ("remdm-conf", "conf", {}),
    ("remdm-loop", "loop", {"eta": 0.3, "t_on": 0.55, "t_off": 0.05, "alpha_on": 0.9}),
]


@pytest.mark.parametrize("nucleus_p", [1.0, 0.9])
@pytest.mark.parametrize("sampler, strategy, knobs", CASES, ids=[c[0] for c in CASES])
def test_tokens_and_calls_equal_the_released_loop(tiny, sampler, strategy, knobs, nucleus_p):
    model, info = tiny
    batch, length, steps = 3, 20, 40
    ref = _released(model, info, sampler, nucleus_p=nucleus_p, generator=torch.Generator().manual_seed(7), **knobs)
    expected = ref.sample(batch, length, steps)
    remdm = None if strategy is None else RemdmConfig(strategy=strategy, **knobs)
    seam = _seam(model, info)
    out = mdlm_generate(seam, torch.zeros((batch, 0), dtype=torch.long), gen_length=length, steps=steps,
                        nucleus_p=nucleus_p, remdm=remdm, generator=torch.Generator().manual_seed(7))
    assert torch.equal(out.tokens, expected)
    assert out.nfe == ref.calls == seam.nfe
    if sampler == "mdlm":
        assert out.nfe < steps + 1  # the cache skipped calls: T = 40 steps for 20 positions
    assert not (out.tokens == info.mask_id).any()


def test_remasking_changes_the_sample(tiny):
    """The strategies are not plain MDLM in disguise (the comparison above could not tell)."""
    model, info = tiny
    runs = {}
    for strategy, knobs in ((None, {}), ("cap", {"eta": 0.3})):
        remdm = None if strategy is None else RemdmConfig(strategy=strategy, **knobs)
        runs[strategy] = mdlm_generate(_seam(model, info), torch.zeros((2, 0), dtype=torch.long), gen_length=20,
                                       steps=40, remdm=remdm, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(runs[None].tokens, runs["cap"].tokens)
    assert runs["cap"].nfe > runs[None].nfe  # remasking keeps the canvas moving: fewer cache hits


def test_per_row_generators_make_rows_independent_of_their_batch(tiny):
    model, info = tiny
    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]
    empty = torch.zeros((3, 0), dtype=torch.long)
    together = mdlm_generate(_seam(model, info), empty, gen_length=16, steps=16, generator=gens([1, 2, 3]))
    alone = mdlm_generate(_seam(model, info), empty[:1], gen_length=16, steps=16, generator=gens([2]))
    assert torch.equal(together.tokens[1:2], alone.tokens)


def test_a_prompt_is_kept_and_never_remasked(tiny):
    model, info = tiny
    prompt = torch.tensor([[5, 6, 7, 8], [info.pad_id, info.pad_id, 9, 10]])
    prompt_mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    out = mdlm_generate(_seam(model, info), prompt, prompt_mask, gen_length=12, steps=24,
                        remdm=RemdmConfig(strategy="cap", eta=0.9), generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (2, 12) and not (out.tokens == info.mask_id).any()


@pytest.mark.parametrize("strategy", [None, "conf"])
def test_row_cache_runs_fewer_rows_and_keeps_the_tokens(tiny, strategy):
    """cache=row: only rows that changed go through the network (per-row counts); on this model
    the tokens stay the release's (the ~1e-6 logit moves of a smaller batch flip no draw here)."""
    model, info = tiny
    remdm = None if strategy is None else RemdmConfig(strategy=strategy)
    runs = {}
    for cache in ("batch", "row"):
        seam = _seam(model, info)
        runs[cache] = mdlm_generate(seam, torch.zeros((4, 0), dtype=torch.long), gen_length=16, steps=64,
                                    nucleus_p=0.9, remdm=remdm, cache=cache, generator=torch.Generator().manual_seed(5))
        assert runs[cache].nfe == seam.nfe
    assert torch.equal(runs["row"].tokens, runs["batch"].tokens)
    assert runs["batch"].row_nfe == (runs["batch"].nfe,) * 4
    assert max(runs["row"].row_nfe) < runs["batch"].nfe
    assert sum(runs["row"].row_nfe) < 4 * runs["batch"].nfe


@pytest.mark.parametrize("sampler, strategy, knobs", [CASES[0], CASES[1]], ids=["mdlm", "remdm-cap"])
def test_softmask_on_mdlm_equals_the_released_loop(tiny, sampler, strategy, knobs):
    """IBM's MDLM_SM sampler: the previous call's predictions blended into masked inputs inside
    the time band [0.2, 0.8]; same tokens and calls as a re-implementation of its loop."""
    from dslbench.diffusion.softmask import SoftMaskParams
    from dslbench.diffusion.softmask_mdlm import released_blend_fn

    model, info = tiny
    params = SoftMaskParams(scale=0.7, centre=-8.0, steepness=3.0)  # the tiny model is near-uniform: H ~ 6 nats
    values = params.values()
    soft_mask = {
        "embedding": model.get_input_embeddings().weight.detach(),
        "embeds_backbone": lambda e: model(inputs_embeds=e).logits,
        "scale": params.scale.detach(), "centre": params.centre.detach(), "steepness": params.steepness.detach(),
        "k": 3, "t_min": 0.2, "t_max": 0.8,
    }
    ref = _released(model, info, sampler, nucleus_p=0.9, generator=torch.Generator().manual_seed(11),
                    soft_mask=soft_mask, **knobs)
    expected = ref.sample(3, 20, 40)
    seam = _seam(model, info)
    remdm = None if strategy is None else RemdmConfig(strategy=strategy, **knobs)
    out = mdlm_generate(seam, torch.zeros((3, 0), dtype=torch.long), gen_length=20, steps=40, nucleus_p=0.9,
                        remdm=remdm, generator=torch.Generator().manual_seed(11),
                        input_embeds_fn=released_blend_fn(seam, params, 3))
    plain = mdlm_generate(_seam(model, info), torch.zeros((3, 0), dtype=torch.long), gen_length=20, steps=40,
                          nucleus_p=0.9, remdm=remdm, generator=torch.Generator().manual_seed(11))
    assert values["scale"] > 0.5
    assert torch.equal(out.tokens, expected) and out.nfe == ref.calls
    assert not torch.equal(out.tokens, plain.tokens)  # the blend changed the sample
