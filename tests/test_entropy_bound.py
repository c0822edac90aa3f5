"""The entropy-bound block-diffusion sampler over a toy canvas seam: per-row streams, per-row NFE,
stopping, EOS, and the ``draw`` modes. (Token identity with transformers' ``generate`` is pinned
in tests/test_diffusiongemma_backend.py on a real DiffusionGemma checkpoint.)"""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chi2_contingency

from dslbench.diffusion import rng
from dslbench.diffusion.entropy_bound import (
    EntropyBoundConfig,
    categorical_entropy,
    entropy_bound_accept,
    entropy_bound_generate,
)


class ToySeam:
    """Logits that depend on each row's own prompt and canvas only: a row's sharpness grows with
    its prompt's first token and with how much of its canvas already holds the row's target."""

    vocab_size, canvas_length = 11, 6

    def __init__(self):
        self.calls, self.canvases, self.appended = 0, [], []

    def begin(self, prompt_ids, prompt_mask):
        self.prompts = prompt_ids[:, -1].clone()  # left-padded: the last token is always real

    def targets(self):
        return (self.prompts[:, None] + torch.arange(self.canvas_length)[None]) % self.vocab_size

    def denoise(self, canvas, self_conditioning):
        self.calls += 1
        self.canvases.append(canvas.clone())
        target = self.targets()
        match = (canvas == target).float().mean(-1, keepdim=True)
        sharp = (0.5 + self.prompts.float()[:, None] / 4 + 6 * match)[..., None]
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(self.vocab_size, self.vocab_size, generator=g)[canvas]
        return noise + sharp * torch.nn.functional.one_hot(target, self.vocab_size)

    def append(self, canvas):
        self.appended.append(canvas.clone())


def _cfg(**kw):
    return EntropyBoundConfig(**{"steps": 6, "entropy_bound": 0.5, "t_min": 0.4, "t_max": 0.8, "pad_id": 0, **kw})


PROMPTS = torch.tensor([[0, 1, 2], [0, 0, 9], [3, 4, 5], [0, 7, 1]])
MASK = torch.tensor([[1, 1, 1], [0, 0, 1], [1, 1, 1], [0, 1, 1]])
SEEDS = [11, 12, 13, 14]


def test_entropy_is_categorical_entropy_to_the_bit():
    x = torch.randn(3, 7, 50) * 4
    x[0, 0, :10] = -float("inf")
    assert torch.equal(categorical_entropy(x.clone()), torch.distributions.Categorical(logits=x).entropy())


def test_acceptance_is_the_entropy_bound_rule():
    entropy = torch.tensor([[0.3, 0.05, 0.2, 0.01, 0.9]])
    # ascending 0.01, 0.05, 0.2, 0.3, 0.9: sums minus max 0, 0.01, 0.06, 0.26, 0.56
    assert entropy_bound_accept(entropy, 0.1).tolist() == [[False, True, True, True, False]]
    assert entropy_bound_accept(entropy, 0.0).tolist() == [[False, False, False, True, False]]


def test_a_row_alone_draws_and_stops_as_it_does_in_any_batch():
    cfg = _cfg(stability_threshold=1, confidence_threshold=1.5, eos_ids=(4,))
    together = entropy_bound_generate(ToySeam(), PROMPTS, MASK, 3, cfg, rng.row_generators(SEEDS))
    for i in range(len(SEEDS)):
        alone = entropy_bound_generate(ToySeam(), PROMPTS[i:i + 1], MASK[i:i + 1], 3, cfg, rng.row_generators(SEEDS[i:i + 1]))
        assert torch.equal(alone.tokens[0], together.tokens[i])
        assert alone.nfe[0] == together.nfe[i] and alone.canvases[0] == together.canvases[i]
    assert len(set(together.nfe)) > 1  # rows stopped at different steps: counted per row
    assert together.calls == max(alone_calls(cfg, i) for i in range(len(SEEDS)))


def alone_calls(cfg, i):
    seam = ToySeam()
    entropy_bound_generate(seam, PROMPTS[i:i + 1], MASK[i:i + 1], 3, cfg, rng.row_generators(SEEDS[i:i + 1]))
    return seam.calls


def test_without_stopping_every_row_spends_every_step():
    seam = ToySeam()
    out = entropy_bound_generate(seam, PROMPTS, MASK, 3, _cfg(), rng.row_generators(SEEDS))
    assert out.nfe == (18,) * 4 and out.calls == 18 == seam.calls and out.canvases == (3,) * 4
    assert len(seam.appended) == 2  # the last canvas is not encoded: nothing reads it


def test_eos_ends_a_row_pads_after_it_and_stops_its_draws():
    cfg = _cfg(eos_ids=(4,))
    seam = ToySeam()
    out = entropy_bound_generate(seam, PROMPTS, MASK, 3, cfg, rng.row_generators(SEEDS))
    L = ToySeam.canvas_length
    for row, tokens in enumerate(out.tokens.tolist()):
        if 4 in tokens:
            first = tokens.index(4)
            assert all(t == 0 for t in tokens[first + 1:])  # pad after the first EOS
            assert out.canvases[row] == first // L + 1 and out.nfe[row] == 6 * out.canvases[row]
    assert min(out.canvases) < 3 and max(out.canvases) == 3  # the toy's targets put an EOS in some rows
    for call, canvas in enumerate(seam.canvases):  # once a row has ended, its canvas is pad: nothing drawn
        ended = torch.tensor(out.canvases) <= call // 6
        assert (canvas[ended] == 0).all()


def test_draw_accepted_has_the_distribution_of_draw_all():
    """The canvas the second step sees (accepted positions: drawn tokens, others: uniform) over 1500
    rows with their own streams, position by position: a chi-square test of the two modes' tables."""
    n = 1500
    prompts = torch.full((n, 1), 3)
    tables = {}
    for draw in ("all", "accepted"):
        seam = ToySeam()
        gens = rng.row_generators(range(n) if draw == "all" else range(10**6, 10**6 + n))
        entropy_bound_generate(seam, prompts, torch.ones_like(prompts), 1, _cfg(steps=2, draw=draw), gens)
        second = seam.canvases[1]
        tables[draw] = torch.stack([torch.bincount(second[:, i], minlength=ToySeam.vocab_size) for i in range(6)])
    for i in range(6):
        table = torch.stack([tables["all"][i], tables["accepted"][i]]).numpy()
        table = table[:, table.sum(0) > 0]
        assert chi2_contingency(table).pvalue > 1e-3, (i, table)
    # and the test can tell distributions apart: all-uniform draws fail it
    uniform = torch.stack([torch.bincount(rng.randint(11, (n,), torch.Generator().manual_seed(i)), minlength=11) for i in range(6)])
    assert min(chi2_contingency(torch.stack([tables["all"][i], uniform[i]]).numpy()).pvalue for i in range(6)) < 1e-6


def test_one_generator_for_a_batch_of_one_is_the_single_stream():
    cfg = _cfg(stability_threshold=1, confidence_threshold=1.5)
    a = entropy_bound_generate(ToySeam(), PROMPTS[:1], MASK[:1], 2, cfg, torch.Generator().manual_seed(3))
    b = entropy_bound_generate(ToySeam(), PROMPTS[:1], MASK[:1], 2, cfg, rng.row_generators([3]))
    assert torch.equal(a.tokens, b.tokens)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="draw='some'; allowed: all, accepted"):
        _cfg(draw="some")
    with pytest.raises(ValueError, match="steps=0 must be >= 1"):
        _cfg(steps=0)
    with pytest.raises(ValueError, match="2 per-row generators for a batch of 4"):
        entropy_bound_generate(ToySeam(), PROMPTS, MASK, 1, _cfg(), rng.row_generators([1, 2]))
