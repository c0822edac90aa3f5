"""Uniform-state block diffusion with the entropy-bound sampler: DiffusionGemma's ``generate`` loop
over a canvas seam, with one random stream per row.

The loop of transformers' ``DiffusionGemmaForBlockDiffusion.generate`` (5.x), step for step:
canvases of ``canvas_length`` tokens one after the other; each starts as uniform random tokens
and is refined for at most ``steps`` decoder evaluations. At each step the logits are divided by
the linear temperature schedule, a token is drawn at every position, the positions with the
lowest entropies are accepted while ``sum - max`` of their entropies stays within
``entropy_bound`` (the EB-sampler rule), every other position is re-drawn uniformly, and the
logits feed the next step as self-conditioning. A canvas stops early when its argmax has been
stable for ``stability_threshold`` steps and its mean entropy is below ``confidence_threshold``;
the kept canvas is the last step's argmax; a canvas holding an EOS ends its row (tokens after the
first EOS become pad).

What differs from calling ``generate`` on a batch, and why (a batch of one is token-identical,
pinned by the tests):
* every row draws from its own generator, and a row draws nothing once it has stopped, so its
  sample does not depend on which rows share its batch (``generate`` draws for the whole batch
  from torch's global stream and keeps drawing for rows that have stopped);
* the NFE is counted per row: the decoder evaluations made while the row was still denoising
  (a stopped row rides along in the batch without being counted, as ``generate`` counts it);
* ``draw="accepted"`` (a named departure, not the default) draws tokens only at the positions the
  entropy bound accepts: the same distribution (acceptance depends on the entropies alone, and a
  rejected position's draw is thrown away), a fraction of the random numbers; the default
  ``"all"`` draws at every position as ``generate`` does.

Samplers never import a model class: the seam (``models/diffusiongemma.py``) holds the prompt
cache and runs transformers' encoder and decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from dslbench.diffusion import rng

DRAWS = ("all", "accepted")


class CanvasSeam(Protocol):
    """A block-diffusion model as the sampler sees it (one batch at a time)."""

    vocab_size: int
    canvas_length: int

    def begin(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> None:
        """Encode the prompts (left-padded) into the cache the decoder reads."""

    def denoise(self, canvas: torch.Tensor, self_conditioning: torch.Tensor | None) -> torch.Tensor:
        """Float32 logits [B, L, V] of one decoder evaluation of ``canvas`` (one NFE)."""

    def append(self, canvas: torch.Tensor) -> None:
        """Encode a finished canvas after the prompt, for the next canvas to read."""


@dataclass(frozen=True)
class EntropyBoundConfig:
    steps: int  # at most this many decoder evaluations per canvas
    entropy_bound: float
    t_min: float | None = None  # linear temperature schedule (None: raw logits)
    t_max: float | None = None
    stability_threshold: int | None = None  # adaptive stopping (either None: off)
    confidence_threshold: float | None = None
    eos_ids: tuple[int, ...] | None = None  # None: EOS does not end a row
    pad_id: int = 0
    draw: str = "all"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"entropy-bound sampler: steps={self.steps} must be >= 1")
        if self.draw not in DRAWS:
            raise ValueError(f"entropy-bound sampler: draw={self.draw!r}; allowed: {', '.join(DRAWS)}")

    @property
    def adaptive_stopping(self) -> bool:
        return self.stability_threshold is not None and self.confidence_threshold is not None


@dataclass
class EntropyBoundOutput:
    tokens: torch.Tensor  # [B, canvases * canvas_length]; pad where a row had ended
    nfe: tuple[int, ...]  # decoder evaluations per row
    calls: int  # batched decoder calls
    canvases: tuple[int, ...]  # canvases each row denoised


def categorical_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``torch.distributions.Categorical(logits=logits).entropy()``, the same operations in the same
    order (so the same bits: the acceptance and stopping thresholds see what ``generate`` sees),
    in place where the distribution object allocates."""
    log_p = logits - logits.logsumexp(dim=-1, keepdim=True)
    probs = torch.softmax(log_p, dim=-1)
    return -log_p.clamp_(min=torch.finfo(log_p.dtype).min).mul_(probs).sum(-1)


def entropy_bound_accept(entropy: torch.Tensor, bound: float) -> torch.Tensor:
    """[B, L] bool: the lowest-entropy positions whose entropies' sum minus their max is <= bound."""
    ordered, order = torch.sort(entropy, dim=-1)
    keep = torch.cumsum(ordered, dim=-1) - ordered <= bound  # ascending: the max is the last one
    return torch.scatter(torch.zeros_like(keep), -1, order, keep)


def temperature_scaled(logits: torch.Tensor, cfg: EntropyBoundConfig, remaining: int) -> torch.Tensor:
    if cfg.t_min is None or cfg.t_max is None:
        return logits
    # the schedule in float32 tensor arithmetic, as generate computes it (a Python float would
    # round differently and move a token now and then)
    step = torch.tensor(remaining, dtype=torch.int32, device=logits.device)
    return logits.div_(cfg.t_min + (cfg.t_max - cfg.t_min) * (step / cfg.steps))  # the seam's fresh tensor


def _draw_tokens(processed: torch.Tensor, accept: torch.Tensor, rows: list[int], gens: list, draw: str) -> torch.Tensor:
    """Sampled tokens [B, L] for ``rows`` (other rows and, with draw="accepted", unaccepted positions: 0)."""
    out = torch.zeros(accept.shape, dtype=torch.long, device=processed.device)
    if draw == "all":
        if rows:
            probs = torch.softmax(processed[rows], dim=-1, dtype=torch.float32)
            out[rows] = rng.categorical(probs, [gens[b] for b in rows])
        return out
    for b in rows:  # each row draws at its own accepted positions
        where = accept[b].nonzero().squeeze(-1)
        if where.numel():
            probs = torch.softmax(processed[b, where], dim=-1, dtype=torch.float32)
            out[b, where] = rng.categorical(probs, gens[b])
    return out


def _row_randint(high: int, length: int, rows: list[int], gens: list, batch: int, fill: int, device) -> torch.Tensor:
    """Uniform tokens [batch, length] for ``rows`` from their own generators; ``fill`` elsewhere."""
    out = torch.full((batch, length), fill, dtype=torch.long, device=device)
    if rows:
        out[rows] = rng.randint(high, (len(rows), length), [gens[b] for b in rows], device=device)
    return out


def entropy_bound_generate(
    seam: CanvasSeam,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    canvases: int,
    cfg: EntropyBoundConfig,
    generator: rng.Generators,
) -> EntropyBoundOutput:
    """Generate ``canvases`` canvases after each (left-padded) prompt."""
    B, L, V, device = prompt_ids.shape[0], seam.canvas_length, seam.vocab_size, prompt_ids.device
    # one generator (or None: torch's global stream) is shared: rows draw from it one after the other
    gens = [generator] * B if generator is None or isinstance(generator, torch.Generator) else list(generator)
    if len(gens) != B:
        raise ValueError(f"{len(gens)} per-row generators for a batch of {B}: one per row is needed")
    eos = torch.tensor(cfg.eos_ids, device=device) if cfg.eos_ids else None
    tokens = torch.full((B, canvases * L), cfg.pad_id, dtype=torch.long, device=device)
    nfe = torch.zeros(B, dtype=torch.long)
    done_canvases = torch.zeros(B, dtype=torch.long)
    ended = torch.zeros(B, dtype=torch.bool, device=device)  # the row met EOS in an earlier canvas
    calls = 0
    seam.begin(prompt_ids, prompt_mask)
    for k in range(canvases):
        live = (~ended).nonzero().squeeze(-1).tolist()
        stopped = ended.clone()  # rows that make no further step in this canvas
        canvas = _row_randint(V, L, live, gens, B, cfg.pad_id, device)
        argmax = canvas
        self_cond = None
        history = None
        for remaining in range(cfg.steps, 0, -1):
            active = (~stopped).nonzero().squeeze(-1).tolist()
            nfe[~stopped.cpu()] += 1
            logits = seam.denoise(canvas, self_cond)
            calls += 1
            processed = temperature_scaled(logits, cfg, remaining)
            entropy = categorical_entropy(processed)
            accept = entropy_bound_accept(entropy, cfg.entropy_bound)
            sampled = _draw_tokens(processed, accept, active, gens, cfg.draw)
            renoise = _row_randint(V, L, active, gens, B, cfg.pad_id, device)
            step_argmax = processed.argmax(dim=-1)
            new_canvas = torch.where(accept, sampled, renoise)
            keep = stopped[:, None]  # a stopped row keeps its state (generate does the same)
            canvas = torch.where(keep, canvas, new_canvas)
            argmax = torch.where(keep, argmax, step_argmax)
            frozen = self_cond is not None and bool(stopped.any())
            self_cond = torch.where(keep[..., None], self_cond, processed) if frozen else processed
            if cfg.adaptive_stopping:
                stable, history = _stable(history, argmax, cfg.stability_threshold)
                confident = entropy.mean(dim=-1) < cfg.confidence_threshold
                stopped = stopped | (stable & confident)
            if bool(stopped.all()):
                break
        done_canvases[~ended.cpu()] += 1
        if eos is not None:
            is_eos = torch.isin(argmax, eos)
            hit = is_eos.any(dim=-1) & ~ended
            after_first = (is_eos.cumsum(dim=-1) > 0) & ~((is_eos.cumsum(dim=-1) == 1) & is_eos)
            argmax = torch.where(hit[:, None] & after_first, cfg.pad_id, argmax)
        else:
            hit = torch.zeros_like(ended)
        tokens[:, k * L:(k + 1) * L] = torch.where(ended[:, None], cfg.pad_id, argmax)
        ended = ended | hit
        if bool(ended.all()) or k == canvases - 1:
            break
        seam.append(tokens[:, k * L:(k + 1) * L])  # the canvas as kept (pad after an EOS), as generate encodes it
    return EntropyBoundOutput(tokens, tuple(int(n) for n in nfe), calls, tuple(int(c) for c in done_canvases))


def _stable(history: torch.Tensor | None, argmax: torch.Tensor, threshold: int):
    """(rows whose argmax equals each of the last ``threshold`` ones, the updated history)."""
    if threshold == 0:
        return torch.ones(argmax.shape[0], dtype=torch.bool, device=argmax.device), history
    if history is None:
        history = torch.full((threshold, *argmax.shape), -1, dtype=argmax.dtype, device=argmax.device)
    stable = (history == argmax[None]).all(dim=-1).all(dim=0)
    history = torch.cat([history[1:], argmax[None]])
    return stable, history
