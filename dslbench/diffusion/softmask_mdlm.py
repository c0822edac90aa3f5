"""Soft-masking on MDLM as IBM's ``language/`` code computes it (``algo: mdlm_sm``).

Source: ishnbl/soft-masked-diffusion-language-models ``language/transparency_head.py``
(``TransparencyHead`` with ``transparency_alg=mixinputs_with_topk``) and the DiT embedding patch
(``patches/dit.patch``). The blend is the one of :mod:`dslbench.diffusion.softmask` (same learned
scalars, :class:`~dslbench.diffusion.softmask.SoftMaskParams`), written here in the release's
arithmetic so that the sampler matches it token for token:

- the feedback is the previous call's substitution-parameterized log-probabilities;
- ``-H = sum p log(p + 1e-10)`` over ``p = softmax(log_p)`` (not the exact entropy);
- ``lambda = scale * sigmoid(steepness * (-H - centre))`` at masked positions;
- the input is ``sum_j w_j E[i_j]`` over ``k + 1`` ids: the mask with ``w = 1 - lambda`` and the
  top-k ids of ``log_p`` with ``w = lambda * softmax(top-k log_p)``, summed in that order.

Departure, with its reason: the fork rescales the centre by a training-time NLL ratio kept in
its checkpoint buffers (``current_nll_ema / initial_nll``); that is an addition of the fork's
training schedule, not of soft-masking, and no dslbench checkpoint carries those buffers.
"""

from __future__ import annotations

import torch

from dslbench.diffusion.softmask import SoftMaskParams


def released_blend(denoiser, ids: torch.Tensor, log_p_prev: torch.Tensor | None, is_masked: torch.Tensor,
                   params: SoftMaskParams, k: int = 3) -> torch.Tensor:
    """Input embeddings ``[B, T, D]``; ``log_p_prev`` ``[B, T, V]`` (None: plain embeddings)."""
    embeds = denoiser.embed(ids)
    if log_p_prev is None or not bool(is_masked.any()):
        return embeds
    rows = log_p_prev[is_masked]  # [M, V]
    p = torch.softmax(rows, dim=-1)
    neg_entropy = torch.sum(p * torch.log(p + 1e-10), dim=-1).to(rows.dtype)
    lam = params.scale * torch.sigmoid(params.steepness * (neg_entropy - params.centre))
    top_logits, top_ids = torch.topk(rows, k=k, dim=-1)
    top_p = torch.softmax(top_logits.to(torch.float32), dim=-1).to(rows.dtype)
    ids_k = torch.cat([ids[is_masked][:, None], top_ids], dim=-1)  # [M, k + 1]
    weights = torch.cat([(1.0 - lam)[:, None], lam[:, None] * top_p], dim=-1)
    blended = torch.sum(denoiser.embed(ids_k) * weights.unsqueeze(-1), dim=1)
    return embeds.index_put((is_masked,), blended.to(embeds.dtype))


def released_blend_fn(denoiser, params: SoftMaskParams, k: int = 3):
    """The ``input_embeds_fn`` of :func:`~dslbench.diffusion.mdlm_sampler.mdlm_generate`."""

    def fn(ids: torch.Tensor, log_p_prev: torch.Tensor | None, is_masked: torch.Tensor) -> torch.Tensor:
        return released_blend(denoiser, ids, log_p_prev, is_masked, params, k)

    return fn
