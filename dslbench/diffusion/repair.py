"""Repair mode of the token-space backends: denoise a fully visible, partly corrupted sequence.

The corrupted tokens are given as ordinary (clean-looking) inputs, with no mask anywhere: the
model has to notice which tokens do not fit. The **published** protocol, the one behind the
published repair table for every model, is one forward pass of the backbone on the corrupted
token ids (their token embeddings) and an argmax at every position. A larger budget feeds each
pass's prediction back as the next input: a dslbench variant (:func:`repair_protocol` names it).
Positions outside ``editable`` (padding) are never changed.
"""

from __future__ import annotations

import torch

from dslbench.diffusion.denoiser import Denoiser

PUBLISHED_PROTOCOL = "published"
# How the corrupted tokens enter the backbone: their token embeddings (published), or a backend's
# own input path (e.g. dsl_llada's converter), a variant.
TOKEN_PATH = "token"


def repair_protocol(path: str = TOKEN_PATH, passes: int = 1) -> str:
    """The name recorded with every repaired passage: ``published`` for one pass on the token
    path, else the variant's parts joined by ``+`` (``converter``, ``iterative-3``, ...)."""
    parts = [] if path == TOKEN_PATH else [path]
    if passes != 1:
        parts.append(f"iterative-{passes}")
    return "+".join(parts) or PUBLISHED_PROTOCOL


@torch.inference_mode()
def argmax_repair(
    denoiser: Denoiser,
    ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    editable: torch.Tensor,
    passes: int = 1,
) -> tuple[torch.Tensor, int]:
    """``(repaired_ids [B, L], nfe)``; every pass is one counted denoiser call on the token
    embeddings of the current ids (``passes=1``: the published protocol)."""
    if passes < 1:
        raise ValueError(f"repair passes={passes} must be >= 1")
    start = denoiser.nfe
    current = ids.clone()
    for _ in range(passes):
        logits = denoiser.forward(denoiser.embed(current), attention_mask)
        current = torch.where(editable, logits.argmax(dim=-1), ids)
    return current, denoiser.nfe - start
