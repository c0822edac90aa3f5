"""MDLM's training loss as released (kuleshov-group/mdlm ``diffusion.py``; the same step in the
duo-based trainer of IBM's soft-masking ``language/`` code), for MDLM-format bases.

With the released settings (``noise: log-linear``, ``T: 0``, ``parameterization: subs``,
``training.sampling_eps: 1e-3``, ``antithetic_sampling: True``, ``time_conditioning: False``):

- one time per row, antithetic over the batch: ``u_b = (r_b / B + b / B) mod 1`` with ``r ~ U(0, 1)``,
  ``t_b = (1 - eps) u_b + eps``;
- log-linear noise (its own eps, also 1e-3): each position is masked with probability
  ``1 - alpha_t = (1 - eps) t``;
- SUBS: the network's logit of [MASK] gets ``-1e6`` (the model never predicts the mask), a
  float32 log-softmax, and unmasked positions copy their input (log-probability 0, no loss);
- weight ``-alpha'_t / (1 - alpha_t) = 1 / t`` (the log-linear ELBO weight, *not* ``1 / p``
  with ``p`` the mask rate as in LLaDA);
- loss = ``sum of 1/t * -log p(x0)`` over masked positions / number of real tokens of the
  micro-batch (a token mean over the batch, not LLaDA's per-row length normalisation).

How it differs from LLaDA's ``mdm`` loss (:mod:`dslbench.training.mdm_objective`): the mask rate
(``(1 - eps) t`` vs ``(1 - eps) t + eps``), the weight (``1/t`` vs ``1/p``), the exclusion of the
[MASK] logit from the softmax, the antithetic draw and the normalisation. So the MDLM family has
its own loss.

Departures, each forced by the adaptation setting: (1) the antithetic stratification runs over
the micro-batch (the release stratifies the global batch, then hands each device and
accumulation step its chunk); (2) only *response* positions are masked and scored, with prompt
and pad positions never masked (the release trains unconditionally on packed 1024-token blocks:
with ``--data`` as plain text blocks every real position is a response position and this is the
release's step); (3) the normaliser is the micro-batch's response-token count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dslbench.training.objective import ObjectiveError, draw_uniform

MDLM_EPS = 1e-3  # training.sampling_eps and the log-linear noise's eps of the release
SUBS_NEG_INF = -1_000_000.0  # the release's neg_infinity, added to the [MASK] logit
MDLM_LOSS_WEIGHTS = ("inv_t", "none")


def mdlm_sample_t(n: int, generator: torch.Generator | None, device, eps: float = MDLM_EPS) -> torch.Tensor:
    """``[n]`` times, antithetic: one uniform per row, stratified over the rows."""
    u = draw_uniform((n,), generator, device)
    u = (u / n + torch.arange(n, device=device) / n) % 1
    return (1.0 - eps) * u + eps


def mdlm_corrupt(
    input_ids: torch.Tensor,
    response_mask: torch.Tensor,
    mask_id: int,
    generator: torch.Generator | None = None,
    eps: float = MDLM_EPS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(noisy_ids, masked [B,T] bool, t [B])``: response positions masked with rate ``(1 - 1e-3) t``."""
    B, T = input_ids.shape
    t = mdlm_sample_t(B, generator, input_ids.device, eps)
    move_chance = (1.0 - MDLM_EPS) * t
    u = draw_uniform((B, T), generator, input_ids.device)
    masked = (u < move_chance[:, None]) & response_mask.bool()
    noisy = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    return noisy, masked, t


def subs_logits(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """float32 logits with the [MASK] logit pushed to ``-1e6`` (SUBS's zero-masking half; the
    softmax over these is the release's ``log_x_theta`` at masked positions)."""
    out = logits.float().clone()
    out[..., mask_id] += SUBS_NEG_INF
    return out


def mdlm_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    t: torch.Tensor,
    response_mask: torch.Tensor,
    mask_id: int,
    weighting: str = "inv_t",
) -> torch.Tensor:
    """``sum_{b, i masked} w_b * -log softmax(subs(logits))[x0] / N_response`` (float32),
    ``w_b = 1/t_b`` (released) or 1 (``weighting="none"``)."""
    if weighting not in MDLM_LOSS_WEIGHTS:
        raise ObjectiveError(f"--mdm-loss-weight {weighting!r} is not valid for an MDLM base; allowed: inv_p "
                             "(read as MDLM's 1/t), none")
    n = max(1, int(response_mask.bool().sum()))
    if not bool(masked.any()):
        return logits.float().sum() * 0.0  # keeps the graph (every rank must run backward)
    logp = F.log_softmax(subs_logits(logits[masked], mask_id), dim=-1)
    nll = -logp.gather(-1, input_ids[masked][:, None])[:, 0]
    if weighting == "inv_t":
        nll = nll / t.float()[:, None].expand_as(masked)[masked]
    return nll.sum() / n


__all__ = ["MDLM_EPS", "mdlm_sample_t", "mdlm_corrupt", "mdlm_loss", "subs_logits"]
