"""The released open-ended script's arithmetic for the DSL sampler (``numerics="released"``).

:func:`dslbench.diffusion.sde.dsl_generate` runs one loop for both numerics; this module holds
the pieces whose *rounding* differs from dslbench's own (mathematically equal) forms, so that a
batch of one reproduces the released ``generate_sde`` token for token:

- the SNR grid from float32 torch ops (``exp(linspace(log a, log b, n + 1))`` per segment, the
  endpoints from ``math.log``), kept as 0-dim float32 tensors by the loop;
- the converter as written there: ``softmax(beta * (z @ K^T) + b)`` over the V token slots and
  the mask slot (``K = [E_n; 0]``), then ``F.linear(p, W, c)`` (dslbench's fused form skips the
  ``V + 1`` probabilities);
- the posterior mean as written there: softmax, top-k, renormalise, gather the k rows of ``E_n``
  and sum (dslbench's form thresholds and does one dense matmul).

The state and the draws are float32 and the loop keeps the released order of draws (start
vectors, then one ``dW`` per step before its first evaluation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NUMERICS = ("dslbench", "released")
SNR_SCHEDULES = ("sensitive", "uniform")
_SNR_MIN, _KNOTS, _SNR_MAX = 0.01, (7.0, 74.0), 100.0


def _segment(lo: float, hi: float, n: int) -> torch.Tensor:
    # linspace with n + 1 points; n <= 0 gives 1 or 0 points, as in the released construction
    return torch.exp(torch.linspace(math.log(lo), math.log(hi), max(n + 1, 0)))


def released_grid(steps: int, schedule: str = "sensitive", published: bool = False) -> torch.Tensor:
    """The float32 grid for ``steps`` steps, built with the released torch ops.

    ``published``: the sensitive grid's released quirk for ``steps = 1`` (three points) is kept;
    otherwise, as :func:`dslbench.diffusion.sde.schedule_grid`, one step is ``[0.01, 100]``.
    No steps is ``[100]`` (only the final pass; the released script never runs that).
    """
    if steps < 0 or (published and steps < 1):
        raise ValueError(f"steps={steps} is too few for this grid")
    if steps == 0:
        return torch.tensor([_SNR_MAX], dtype=torch.float32)
    if schedule == "uniform":
        return _segment(_SNR_MIN, _SNR_MAX, steps)
    if steps == 1 and not published:
        return torch.tensor([_SNR_MIN, _SNR_MAX], dtype=torch.float32)
    n1 = max(1, int(steps * 0.05))
    n2 = max(1, int(steps * 0.90))
    n3 = steps - n1 - n2
    (k1, k2) = _KNOTS
    return torch.cat([_segment(_SNR_MIN, k1, n1), _segment(k1, k2, n2)[1:], _segment(k2, _SNR_MAX, n3)[1:]])


def released_converter(seam):
    """``convert(z, beta_scale)`` with the released converter's arithmetic, from the seam's DSL
    modules (``seam.dsl``); a seam without them (a test oracle) keeps its own ``convert``."""
    dsl = getattr(seam, "dsl", None)
    if dsl is None:
        return seam.convert
    conv = dsl.converter
    emb = dsl.noise_embed.weight.detach().float()
    keys = torch.cat([emb, torch.zeros(1, emb.shape[1], dtype=emb.dtype, device=emb.device)])
    bias = conv.logit_bias.detach().float()
    weight = conv.backbone_embedding.weight.detach().float()
    linear_bias = conv.backbone_embedding.bias.detach().float()
    learned = float(conv.beta.detach())  # the released script reads beta as a Python float

    def convert(z: torch.Tensor, beta_scale: float = 1.0) -> torch.Tensor:
        scores = (learned * float(beta_scale)) * (z.float() @ keys.to(z.device).T) + bias.to(z.device)
        return F.linear(torch.softmax(scores.float(), dim=-1), weight.to(z.device), linear_bias.to(z.device))

    return convert


def released_posterior_mean(logits: torch.Tensor, noise_embedding: torch.Tensor, topk: int | None) -> torch.Tensor:
    """``sum_j p_j E_n[j]`` over the top-k of ``softmax(logits)`` renormalised, as released
    (float32 ``[..., d]``; ids past the last ``E_n`` row read that row, as the released clamp does).
    Holds a ``[..., k, d]`` temporary where dslbench's form holds ``[..., V]``."""
    probs = torch.softmax(logits.float(), dim=-1)
    k = probs.shape[-1] if topk is None else min(topk, probs.shape[-1])
    top, ids = probs.topk(k, dim=-1)
    top = top / top.sum(dim=-1, keepdim=True)
    emb = noise_embedding.to(device=logits.device, dtype=torch.float32)
    return (top.unsqueeze(-1) * emb[ids.clamp_max(emb.shape[0] - 1)]).sum(dim=-2)


def by_row(generate, seam, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor | None, generator, **options) -> list:
    """``generate`` on each row alone, its left padding dropped: per-row generators give row b
    ``[generator[b]]``; one generator (or None) is drawn from by the rows in turn."""
    gens = list(generator) if isinstance(generator, (list, tuple)) else None
    outs = []
    for b in range(prompt_ids.shape[0]):
        ids = prompt_ids[b : b + 1]
        if prompt_mask is not None:
            ids = ids[:, prompt_mask[b].bool()]
        outs.append(generate(seam, ids, None, generator=[gens[b]] if gens is not None else generator, **options))
    return outs
