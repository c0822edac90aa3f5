"""Random draws of the samplers: one generator for the batch, or one generator per row.

Every sampler takes ``generator``: ``None`` (torch's global stream), one ``torch.Generator``
(every draw is one tensor over the whole batch, as the released samplers do), or a sequence of
generators, one per batch row. With a sequence, row ``b``'s part of every draw comes from
``generator[b]`` only, so a row's sample does not depend on which rows share its batch.

A row's part of a draw is made as one call of shape ``shape[1:]``; on the CPU torch fills a
tensor from a generator's stream in element order, so a batch of one with ``[g]`` draws exactly
the numbers that ``g`` alone draws for the whole batch (the released single-generator behaviour).

:func:`prompt_seed` derives a row's seed from the run's seed and the row's own prompt token ids
(a stable hash, not Python's salted ``hash``), so a document gets the same draws whatever its
batch, its position in the run, the ``--limit`` or the data-parallel rank that decodes it.
"""

from __future__ import annotations

import hashlib
from typing import Sequence, Union

import torch

Generators = Union[torch.Generator, Sequence[torch.Generator], None]


def prompt_seed(token_ids: Sequence[int], seed: int) -> int:
    """A 63-bit seed from the run's ``seed`` and a prompt's token ids (stable across processes)."""
    h = hashlib.sha256(f"{int(seed)}:".encode())
    h.update(torch.as_tensor(list(token_ids), dtype=torch.int64).numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") >> 1


def row_generators(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One freshly seeded generator per row."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def _draw(fn, shape, generator: Generators, device, dtype, out: torch.Tensor | None = None, fill=None) -> torch.Tensor:
    """``fn``'s draw of ``shape``. ``out`` (of ``shape`` and ``dtype``) receives it instead of a new
    tensor; with ``fill(tensor, generator)`` (the in-place form of ``fn``) and the per-row
    generators on ``out``'s device, each contiguous row is filled straight from its generator,
    with the numbers a fresh tensor of its shape would get (no per-row tensors, no stacking)."""
    shape = tuple(int(s) for s in shape)
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else device
        drawn = fn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)
        return drawn if out is None else out.copy_(drawn)
    gens = list(generator)
    if not shape or len(gens) != shape[0]:
        raise ValueError(f"{len(gens)} per-row generators for a draw of shape {shape}: one per row is needed")
    if out is not None and fill is not None and out.is_contiguous() and all(torch.device(g.device) == out.device for g in gens):
        for row, g in zip(out, gens):
            fill(row, g)
        return out
    drawn = torch.stack([fn(shape[1:], generator=g, device=g.device, dtype=dtype) for g in gens]).to(device)
    return drawn if out is None else out.copy_(drawn)


def rand(shape, generator: Generators, device=None, dtype=torch.float32) -> torch.Tensor:
    """Uniform [0, 1) draws of ``shape`` (per-row generators: row b from ``generator[b]``), on ``device``."""
    return _draw(torch.rand, shape, generator, device, dtype)


def randn(shape, generator: Generators, device=None, dtype=torch.float32, out: torch.Tensor | None = None) -> torch.Tensor:
    """Standard normal draws of ``shape`` (per-row generators: row b from ``generator[b]``), on ``device``;
    ``out``: written there (``randn`` is ``normal_`` on a new tensor, so the numbers are the same)."""
    return _draw(torch.randn, shape, generator, device, dtype, out, lambda t, g: t.normal_(generator=g))


def randint(high: int, shape, generator: Generators, device=None) -> torch.Tensor:
    """Integers uniform in ``[0, high)`` of ``shape`` (per-row generators: row b from ``generator[b]``)."""
    return _draw(lambda s, **kw: torch.randint(0, high, s, **kw), shape, generator, device, torch.long)


def exponential(shape, generator: Generators, device=None, dtype=torch.float32) -> torch.Tensor:
    """Exp(1) draws of ``shape`` (per-row generators: row b from ``generator[b]``), on ``device``."""

    def fill(s, generator=None, device=None, dtype=None):
        return torch.empty(s, device=device, dtype=dtype).exponential_(1.0, generator=generator)

    return _draw(fill, shape, generator, device, dtype)


def categorical(probs: torch.Tensor, generator: Generators) -> torch.Tensor:
    """One draw per row of ``probs`` [..., V] (per-row generators: ``probs[b]`` from ``generator[b]``).

    ``argmax(p / q)``, ``q ~ Exp(1)``: how torch's CPU ``multinomial(p, 1)`` draws (its Gumbel-max
    fast path), so one generator gives exactly the tokens ``torch.multinomial`` gives it, while each
    row can have its own stream."""
    q = exponential(probs.shape, generator, device=probs.device, dtype=probs.dtype)
    return (probs / q).argmax(dim=-1)
