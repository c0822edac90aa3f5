"""Same seed, same sample, whatever the batch: per-row generators seeded from each prompt."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dslbench.diffusion import rng
from dslbench.diffusion.mdm import mdm_generate
from dslbench.diffusion.remdm import RemdmConfig
from dslbench.harness.dsl_backend import DSLLLaDA
from dslbench.harness.mdm_backend import MDMLLaDA
from dslbench.metrics.sample_stats import split_stats

PROMPTS = [
    "short one.",
    "a somewhat longer prompt about the weather in the mountains today.",
    "the committee met on tuesday and agreed on a new budget for the school.",
    "cats.",
    "a story: once upon a time there was a small village by the sea, and a boat.",
    "numbers 1 2 3 4 5 6 7 8 9 10 11 12",
    "dialogue: anna: hi! bob: hello, how are you? anna: fine.",
    "the last prompt of the set, of middling length.",
]


class Req:
    def __init__(self, context, gen_kwargs, repeats=1):
        self.args = (context, gen_kwargs)
        self.repeats = repeats


# ------------------------------------------------------------------ rng helpers
def test_a_batch_of_one_with_its_generator_draws_what_the_single_generator_draws():
    for fn, shape in ((rng.rand, (1, 5, 37)), (rng.randn, (1, 3, 16)), (rng.randn, (1, 2, 3))):
        single = fn(shape, torch.Generator().manual_seed(11), dtype=torch.float64)
        rows = fn(shape, [torch.Generator().manual_seed(11)], dtype=torch.float64)
        assert torch.equal(single, rows)


def test_per_row_draws_do_not_depend_on_the_other_rows():
    a = rng.rand((3, 4, 9), rng.row_generators([1, 2, 3]), dtype=torch.float64)
    b = rng.rand((2, 4, 9), rng.row_generators([5, 2]), dtype=torch.float64)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[0], b[0])
    with pytest.raises(ValueError, match="one per row"):
        rng.rand((3, 4), rng.row_generators([1, 2]))


def test_prompt_seed_is_stable_across_processes_and_depends_on_seed_and_ids():
    ids = [1, 50, 7, 7, 300]
    here = rng.prompt_seed(ids, 1234)
    code = "from dslbench.diffusion.rng import prompt_seed; print(prompt_seed([1, 50, 7, 7, 300], 1234))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert int(other) == here  # no PYTHONHASHSEED dependence
    assert 0 <= here < 2**63
    assert rng.prompt_seed(ids, 1235) != here and rng.prompt_seed(ids[:-1], 1234) != here


# ------------------------------------------------------------------ samplers
class Flat:
    """A batch-invariant denoiser: logits depend only on each row's own tokens."""

    mask_id, eos_id, eos_ids, vocab_size = 0, 1, (1,), 40
    nfe = 0

    def embed(self, ids):
        return ids

    def forward(self, inputs, attention_mask=None):
        self.nfe += 1
        g = torch.Generator().manual_seed(0)
        table = torch.randn(self.vocab_size, self.vocab_size, generator=g)
        return table[inputs.long()].cumsum(dim=1) * 0.1


@pytest.mark.parametrize("kw", [
    dict(temperature=0.9),
    dict(temperature=0.5, remasking="random"),
    dict(temperature=0.7, remdm=RemdmConfig(strategy="cap", eta=0.5)),
])
def test_mdm_rows_with_their_own_generators_match_each_row_alone(kw):
    prompts = torch.tensor([[5, 6, 7], [8, 9, 10], [11, 12, 13]])
    seeds = [21, 22, 23]
    together = mdm_generate(Flat(), prompts, gen_length=8, steps=4, generator=rng.row_generators(seeds), **kw).tokens
    for i in range(3):
        alone = mdm_generate(Flat(), prompts[i:i + 1], gen_length=8, steps=4, generator=rng.row_generators(seeds[i:i + 1]), **kw)
        assert torch.equal(alone.tokens[0], together[i])


def test_a_batch_of_one_with_its_own_generator_is_the_single_generator_run():
    """The released samplers seed one global generator for a batch of one: the per-row path with
    that row's generator reproduces it exactly (DSL with published accounting, mdm with Gumbel)."""
    from dslbench.diffusion.dsl_denoiser import OracleDSLDenoiser
    from dslbench.diffusion.sde import dsl_generate

    target = torch.tensor([3, 5, 1, 7, 2, 9, 0, 4])
    prompt = torch.tensor([[1, 2, 3, 4]])
    for accounting in ("published", "strict"):
        kw = dict(gen_length=len(target), nfe=8, noise_scale=0.5, accounting=accounting)
        single = dsl_generate(OracleDSLDenoiser(target, mode="bayes", confidence=0.5), prompt,
                              generator=torch.Generator().manual_seed(9), **kw)
        rows = dsl_generate(OracleDSLDenoiser(target, mode="bayes", confidence=0.5), prompt,
                            generator=rng.row_generators([9]), **kw)
        assert torch.equal(single.y, rows.y) and torch.equal(single.tokens, rows.tokens)
    kw = dict(gen_length=8, steps=4, temperature=0.8, remasking="random")
    single = mdm_generate(Flat(), torch.tensor([[5, 6]]), generator=torch.Generator().manual_seed(4), **kw)
    rows = mdm_generate(Flat(), torch.tensor([[5, 6]]), generator=rng.row_generators([4]), **kw)
    assert torch.equal(single.tokens, rows.tokens)


def test_dsl_rows_with_their_own_generators_match_each_row_alone():
    from dslbench.diffusion.dsl_denoiser import OracleDSLDenoiser
    from dslbench.diffusion.sde import dsl_generate

    target = torch.tensor([3, 5, 1, 7, 2, 9, 0, 4])
    prompts = torch.tensor([[1, 2, 3, 4], [4, 3, 2, 1], [2, 2, 2, 2]])
    kw = dict(gen_length=len(target), nfe=6, noise_scale=1.0)
    seam = OracleDSLDenoiser(target, mode="bayes", confidence=0.5)
    together = dsl_generate(seam, prompts, generator=rng.row_generators([1, 2, 3]), **kw)
    for i in range(3):
        alone = dsl_generate(seam, prompts[i:i + 1], generator=rng.row_generators([i + 1]), **kw)
        assert torch.allclose(alone.y[0], together.y[i], atol=0, rtol=0)


# ------------------------------------------------------------------ backends, end to end
def _texts(backend_cls, ckpt, batch_size, prompts, gk):
    b = backend_cls.create_from_arg_string(f"pretrained={ckpt},seed=5", {"batch_size": batch_size})
    out = b.generate_until([Req(p, gk) for p in prompts])
    return [split_stats(r) for r in out]


@pytest.mark.parametrize("backend", ["mdm", "dsl"])
def test_per_sample_outputs_are_identical_at_batch_1_3_8_and_any_limit(backend, tiny_ckpt, untrained_dsl_ckpt):
    if backend == "mdm":
        cls, ckpt = MDMLLaDA, tiny_ckpt
        gk = {"nfe": 4, "gen_length": 8, "temperature": 1.0, "remasking": "random", "return_stats": True}
    else:
        cls, ckpt = DSLLLaDA, untrained_dsl_ckpt
        gk = {"nfe": 4, "gen_length": 8, "noise_scale": 1.0, "return_stats": True}
    one = _texts(cls, ckpt, 1, PROMPTS, gk)
    for batch in (3, 8):
        assert [t for t, _ in _texts(cls, ckpt, batch, PROMPTS, gk)] == [t for t, _ in one]
    # --limit 3 (the first three documents), batched differently: the same three samples
    assert [t for t, _ in _texts(cls, ckpt, 2, PROMPTS[:3], gk)] == [t for t, _ in one[:3]]
    seeds = [s["sample_seed"] for _, s in one]
    assert len(set(seeds)) == len(PROMPTS)  # each document its own stream
    # the seed matters: another run seed changes the samples
    other = cls.create_from_arg_string(f"pretrained={ckpt},seed=6", {"batch_size": 8})
    assert [split_stats(r)[0] for r in other.generate_until([Req(p, gk) for p in PROMPTS])] != [t for t, _ in one]


def test_batch_invariant_decodes_each_row_alone_unpadded(tiny_ckpt):
    # batch_invariant: every row of a batch of 8 is the batch-of-one run (same tokens, same calls),
    # decoded unpadded; its record says so
    gk = {"nfe": 4, "gen_length": 8, "temperature": 0.8, "return_stats": True}
    alone = _texts(MDMLLaDA, tiny_ckpt, 1, PROMPTS, gk)
    b = MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},seed=5,batch_invariant=true", {"batch_size": 8})
    calls = []
    forward = b.denoiser.forward
    b.denoiser.forward = lambda x, m=None, *a, **k: (calls.append(x.shape[0]), forward(x, m, *a, **k))[1]
    together = [split_stats(r) for r in b.generate_until([Req(p, gk) for p in PROMPTS])]
    assert [t for t, _ in together] == [t for t, _ in alone]
    assert [s["nfe"] for _, s in together] == [s["nfe"] for _, s in alone]
    assert all(s["batch_invariant"] is True for _, s in together)
    assert set(calls) == {1}  # no padded batch ever reached the network
