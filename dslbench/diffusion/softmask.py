"""Soft-masking: feed still-masked positions a blend of [MASK] and the previous step's guesses.

For every position that is still masked, with the previous step's distribution ``p`` (entropy
``H`` in nats) over the vocabulary::

    lambda = scale * sigmoid(steepness * (-H - centre))        (0 at unmasked positions)
    input  = (1 - lambda) * E[mask] + lambda * sum_{j in top-k} softmax(topk logits)_j * E[j]

The three scalars are learned through unconstrained raw parameters (:class:`SoftMaskParams`),
parametrised as the released soft-masking code does (IBM's ``TransparencyHead``):
``scale = sigmoid(raw_scale)`` in (0, 1), ``centre = -softplus(raw_centre) - 1e-6`` < 0 and
``steepness = softplus(raw_steepness) + 1e-6`` > 0, the raw values initialised as
the exact inverses, so a requested value is the value held (the release initialises
``softplus^-1(-centre)`` / ``softplus^-1(steepness)``, so its centre starts 1e-6 lower and its
steepness 1e-6 higher than the configured values). Confident
positions (low entropy) get a large lambda; ``scale`` caps it. The release computes the entropy
as ``-sum p log(p + 1e-10)``; here it is exact (the two differ by at most ``V * 1e-10`` nats).

Decoding (:func:`softmask_generate`) is :func:`dslbench.diffusion.mdm.mdm_generate` with every
option, given an ``input_embeds_fn`` that applies this blend: the sampler itself is not copied.
The first step has no previous prediction and feeds the plain mask embedding; afterwards the
previous step's (guided, with CFG) logits over the whole canvas are used, also across block
boundaries. Blending never costs a forward pass, so the NFE is that of ``mdm_generate``.

Checkpoint layout (written by :func:`save_softmask`, read by :func:`load_softmask`), next to the
model's own files in a checkpoint directory:

- ``softmask.safetensors``: float32 scalars ``softmask.raw_scale``, ``softmask.raw_centre``,
  ``softmask.raw_steepness`` (the module's state dict under the ``softmask.`` prefix; unprefixed
  keys are read too) with safetensors metadata ``{"k": "<top-k>", "format": "dslbench-softmask-v1"}``;
- ``softmask_config.json``: the same in readable form (``k``, ``scale``, ``centre``,
  ``steepness``, the raw values); informative only, the safetensors file is authoritative.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dslbench import fsio
from dslbench.diffusion.denoiser import Denoiser

SOFTMASK_WEIGHTS_FILE = "softmask.safetensors"
SOFTMASK_CONFIG_FILE = "softmask_config.json"
SOFTMASK_PREFIX = "softmask."
SOFTMASK_FORMAT = "dslbench-softmask-v1"
PARAM_NAMES = ("raw_scale", "raw_centre", "raw_steepness")

# Initial values of the released training (IBM soft-masking, coding/ base configs): init_scale 0
# goes through ``logit(., eps=1e-6)``, i.e. scale 1e-6, so an unadapted model decodes (almost)
# exactly like plain masked diffusion; centre -0.75, steepness 6.66.
INIT_SCALE = 1e-6
INIT_CENTRE = -0.75
INIT_STEEPNESS = 6.66
PARAM_EPS = 1e-6  # the release's offset keeping centre < 0 and steepness > 0 strictly
TOP_K_CHOICES = (1, 3)


def _logit(p: float) -> float:
    if p <= 0.0:
        return float("-inf")
    if p >= 1.0:
        return float("inf")
    return math.log(p) - math.log1p(-p)


def _inverse_softplus(y: float) -> float:
    # log(exp(y) - 1), stable for large y
    return y + math.log(-math.expm1(-y))


class SoftMaskParams(nn.Module):
    """The three learned scalars of soft-masking, stored unconstrained.

    State-dict keys: ``raw_scale``, ``raw_centre``, ``raw_steepness`` (0-dim float32 tensors).
    """

    def __init__(
        self,
        scale: float = INIT_SCALE,
        centre: float = INIT_CENTRE,
        steepness: float = INIT_STEEPNESS,
    ) -> None:
        super().__init__()
        _check_values(scale, centre, steepness)
        self.raw_scale = nn.Parameter(torch.tensor(_logit(scale), dtype=torch.float32))
        # exact inverses of the properties, so the values asked for are the values held
        self.raw_centre = nn.Parameter(torch.tensor(_inverse_softplus(-centre - PARAM_EPS), dtype=torch.float32))
        self.raw_steepness = nn.Parameter(torch.tensor(_inverse_softplus(steepness - PARAM_EPS), dtype=torch.float32))

    @property
    def scale(self) -> torch.Tensor:
        return torch.sigmoid(self.raw_scale)

    @property
    def centre(self) -> torch.Tensor:
        return -F.softplus(self.raw_centre) - PARAM_EPS

    @property
    def steepness(self) -> torch.Tensor:
        return F.softplus(self.raw_steepness) + PARAM_EPS

    def values(self) -> dict[str, float]:
        with torch.no_grad():
            return {"scale": float(self.scale), "centre": float(self.centre), "steepness": float(self.steepness)}

    def with_overrides(
        self, scale: float | None = None, centre: float | None = None, steepness: float | None = None
    ) -> "SoftMaskParams":
        """A copy with the given constrained values replacing this one's (None keeps the raw value)."""
        current = self.values()
        given = SoftMaskParams(
            scale=current["scale"] if scale is None else scale,
            centre=current["centre"] if centre is None else centre,
            steepness=current["steepness"] if steepness is None else steepness,
        )
        out = copy.deepcopy(self)
        with torch.no_grad():
            for name, value in (("raw_scale", scale), ("raw_centre", centre), ("raw_steepness", steepness)):
                if value is not None:
                    getattr(out, name).copy_(getattr(given, name))
        return out

    def lam(self, entropy: torch.Tensor) -> torch.Tensor:
        """``scale * sigmoid(steepness * (-H - centre))`` for entropies ``H`` (any shape)."""
        return self.scale * torch.sigmoid(self.steepness * (-entropy - self.centre))

    def extra_repr(self) -> str:
        v = self.values()
        return f"scale={v['scale']:.4g}, centre={v['centre']:.4g}, steepness={v['steepness']:.4g}"


def _check_values(scale: float, centre: float, steepness: float) -> None:
    # scale = 0 exactly is allowed (raw -inf): it turns soft-masking off, bit for bit.
    if not 0.0 <= scale < 1.0:
        raise ValueError(f"soft-mask scale={scale} must lie in [0, 1)")
    if not centre < -PARAM_EPS:
        raise ValueError(f"soft-mask centre={centre} must be < -{PARAM_EPS:g} (it is -softplus(raw) - {PARAM_EPS:g})")
    if not steepness > PARAM_EPS:
        raise ValueError(f"soft-mask steepness={steepness} must be > {PARAM_EPS:g} (it is softplus(raw) + {PARAM_EPS:g})")


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(logits)`` over the last axis; -inf logits are allowed."""
    # H = logsumexp(l) - sum p l with p = softmax(l), and logsumexp(l) = max(l) - log(max(p)):
    # one fused softmax and a dot product instead of log_softmax, exp, a mask and a product.
    p = torch.softmax(logits, dim=-1)
    lse = logits.amax(dim=-1) - torch.log(p.amax(dim=-1))
    entropy = lse - torch.linalg.vecdot(p, logits)
    if bool(torch.isnan(entropy).any()):  # -inf logits (0 * -inf): the masked formula for those rows
        logp = torch.log_softmax(logits, dim=-1)
        exact = -torch.where(logp.exp() > 0, logp.exp() * logp, torch.zeros_like(logp)).sum(dim=-1)
        entropy = torch.where(torch.isnan(entropy), exact, entropy)
    return entropy


def blend_inputs(
    denoiser: Denoiser,
    canvas_ids: torch.Tensor,
    prev_logits: torch.Tensor | None,
    is_masked: torch.Tensor,
    params: SoftMaskParams,
    k: int = 1,
) -> torch.Tensor:
    """Input embeddings ``[B, T, D]`` for ``canvas_ids`` ``[B, T]`` with soft-masked positions.

    ``prev_logits`` ``[B, T', V]`` is the previous step's prediction for the last ``T' <= T``
    positions (the whole canvas, or the generated span the sampler reads; None on the first step:
    the plain embeddings are returned); ``is_masked`` ``[B, T]`` marks the positions to blend (the
    still-masked generated positions, all within those T'). Every other position gets
    ``denoiser.embed`` of its id.
    The blend is computed in float32 on the masked positions only and cast to the embedding
    dtype; it stays differentiable in ``params`` (and in the embedding table) for training.
    """
    if k < 1:
        raise ValueError(f"soft-mask top-k must be >= 1, got k={k}")
    embeds = denoiser.embed(canvas_ids)
    if prev_logits is None:
        return embeds
    rows, length = canvas_ids.shape
    if prev_logits.dim() != 3 or prev_logits.shape[0] != rows or not 1 <= prev_logits.shape[1] <= length:
        raise ValueError(
            f"prev_logits has shape {tuple(prev_logits.shape)}, expected [{rows}, T', V] "
            f"covering the last T' <= {length} canvas positions"
        )
    offset = length - prev_logits.shape[1]  # canvas position of prev_logits' first row
    if offset and bool(is_masked[:, :offset].any()):
        raise ValueError(f"a masked position lies before the {prev_logits.shape[1]} positions prev_logits covers")
    where = is_masked.to(torch.bool).nonzero(as_tuple=True)
    if where[0].numel() == 0:
        return embeds
    logits = prev_logits[where[0], where[1] - offset].to(torch.float32)  # [N, V]
    lam = params.lam(entropy_from_logits(logits).to(params.raw_scale.device)).to(logits.device)  # [N]
    top_logits, top_ids = logits.topk(k, dim=-1)  # [N, k]
    weights = torch.softmax(top_logits, dim=-1)
    guess = (weights[..., None] * denoiser.embed(top_ids).to(torch.float32)).sum(dim=-2)  # [N, D]
    mask_embed = denoiser.embed(top_ids.new_full((1,), denoiser.mask_id)).to(torch.float32)  # [1, D], broadcast
    blended = (1 - lam)[:, None] * mask_embed + lam[:, None] * guess
    return embeds.index_put(where, blended.to(embeds.dtype))


def softmask_embeds_fn(denoiser: Denoiser, params: SoftMaskParams, k: int = 1):
    """The ``input_embeds_fn`` for :func:`mdm_generate` that applies :func:`blend_inputs`."""

    def fn(canvas_ids: torch.Tensor, prev_logits: torch.Tensor | None, is_masked: torch.Tensor) -> torch.Tensor:
        return blend_inputs(denoiser, canvas_ids, prev_logits, is_masked, params, k)

    return fn


def softmask_generate(
    denoiser: Denoiser,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor | None = None,
    *,
    params: SoftMaskParams,
    k: int = 1,
    **mdm_kwargs: Any,
):
    """:func:`mdm_generate` (all of its options in ``mdm_kwargs``) with soft-masked inputs."""
    from dslbench.diffusion.mdm import mdm_generate

    if "input_embeds_fn" in mdm_kwargs:
        raise TypeError("softmask_generate sets input_embeds_fn itself")
    return mdm_generate(
        denoiser, prompt_ids, prompt_mask, input_embeds_fn=softmask_embeds_fn(denoiser, params, k), **mdm_kwargs
    )


# ---------------------------------------------------------------------------------------------
# Checkpoint files


@dataclass(frozen=True)
class SoftMaskCheckpoint:
    params: SoftMaskParams
    k: int | None  # the top-k the scalars were trained with, when recorded


def save_softmask(params: SoftMaskParams, out_dir: str | os.PathLike, k: int | None = None) -> Path:
    """Write ``softmask.safetensors`` (+ readable ``softmask_config.json``) into ``out_dir``.

    Both files are written to temporary names first and renamed into place.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {SOFTMASK_PREFIX + name: getattr(params, name).detach().to("cpu", torch.float32).clone() for name in PARAM_NAMES}
    metadata = {"format": SOFTMASK_FORMAT}
    if k is not None:
        metadata["k"] = str(int(k))
    tmp = out / f".{SOFTMASK_WEIGHTS_FILE}.tmp"
    with fsio.written_file(tmp):
        save_file(tensors, str(tmp), metadata=metadata)
    fsio.replace(tmp, out / SOFTMASK_WEIGHTS_FILE)
    readable = {
        "format": SOFTMASK_FORMAT,
        "k": None if k is None else int(k),
        **params.values(),
        **{name: float(getattr(params, name).detach()) for name in PARAM_NAMES},
    }
    fsio.write_text_atomic(json.dumps(readable, indent=2) + "\n", out / SOFTMASK_CONFIG_FILE)
    return out / SOFTMASK_WEIGHTS_FILE


def read_softmask(directory: str | os.PathLike) -> SoftMaskCheckpoint | None:
    """The scalars (and recorded top-k) of a checkpoint directory, or None when it has none."""
    from safetensors import safe_open

    path = Path(directory) / SOFTMASK_WEIGHTS_FILE
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        metadata = f.metadata() or {}
        state = {}
        for name in PARAM_NAMES:
            key = SOFTMASK_PREFIX + name if SOFTMASK_PREFIX + name in keys else name
            if key not in keys:
                raise ValueError(f"{path} lacks the soft-mask scalar {SOFTMASK_PREFIX + name} (has {sorted(keys)})")
            state[name] = f.get_tensor(key).to(torch.float32).reshape(())
    params = SoftMaskParams()
    params.load_state_dict(state, strict=True)
    k = int(metadata["k"]) if metadata.get("k") not in (None, "") else None
    return SoftMaskCheckpoint(params=params, k=k)


def load_softmask(directory: str | os.PathLike) -> SoftMaskParams | None:
    """The :class:`SoftMaskParams` saved in ``directory``, or None when it has no soft-mask file."""
    ckpt = read_softmask(directory)
    return None if ckpt is None else ckpt.params
