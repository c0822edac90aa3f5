"""The ``mdm`` objective: LLaDA's SFT masked-diffusion loss (also the same-compute control
"MDM-CPT"). Per row ``t ~ U(0, 1)``, ``p = (1 - eps) t + eps``; each *response* position is masked independently
with probability ``p`` (prompt and pad positions never); the loss is
``(1/B) sum_b sum_{i masked} CE_bi / (p_b * len_b)`` with ``len_b`` the row's response length
(EOS fill included). ``--mdm-loss-weight none`` drops the ``1/p`` factor (a plain mean over the
masked tokens per row, still length-normalised) — not the published semantics, offered because
it learns faster on tiny models.

An MDLM-format base (family ``mdlm``) trains with MDLM's own released loss instead
(:mod:`dslbench.training.mdlm_loss`: antithetic times, mask rate ``(1 - eps) t``, SUBS, weight
``1/t``, token mean); ``--mdm-loss-weight none`` drops its ``1/t`` there.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dslbench.training.data import Batch
from dslbench.training.mdlm_loss import mdlm_corrupt, mdlm_loss
from dslbench.training.objective import AdaptModule, LossOutput, Objective, ObjectiveError, draw_uniform

MDM_EPS = 1e-3  # LLaDA's forward process: p = (1 - eps) t + eps
MDM_LOSS_WEIGHTS = ("inv_p", "none")


def mdm_corrupt(
    input_ids: torch.Tensor,
    response_mask: torch.Tensor,
    mask_id: int,
    generator: torch.Generator | None = None,
    eps: float = MDM_EPS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(noisy_ids, masked [B,T] bool, p [B])``: each response position masked with its row's p."""
    B, T = input_ids.shape
    device = input_ids.device
    t = draw_uniform((B,), generator, device)
    p = (1.0 - eps) * t + eps
    u = draw_uniform((B, T), generator, device)
    masked = (u < p[:, None]) & response_mask.bool()
    noisy = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    return noisy, masked, p


def mdm_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    p: torch.Tensor,
    response_mask: torch.Tensor,
    weighting: str = "inv_p",
) -> torch.Tensor:
    """``(1/B) sum_b sum_{i masked} CE_bi * w_b / len_b`` in float32, ``w_b = 1/p_b`` (LLaDA)
    or 1 (``weighting="none"``); ``len_b`` = the row's number of response positions."""
    B = input_ids.shape[0]
    lengths = response_mask.sum(dim=1).clamp(min=1).float()  # [B]
    if weighting == "inv_p":
        row_w = 1.0 / (p.float() * lengths)
    elif weighting == "none":
        row_w = 1.0 / lengths
    else:
        raise ObjectiveError(f"--mdm-loss-weight {weighting!r} is not valid; allowed: {', '.join(MDM_LOSS_WEIGHTS)}")
    if not bool(masked.any()):
        return logits.float().sum() * 0.0  # keeps the graph (every rank must run backward)
    ce = F.cross_entropy(logits[masked].float(), input_ids[masked], reduction="none")
    w = row_w[:, None].expand_as(masked)[masked]
    return (ce * w).sum() / B


class MDMObjective(Objective):
    name = "mdm"
    freeze_head_default = False

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.eps = float(self.options.get("mask_eps", MDM_EPS))
        if not 0.0 <= self.eps < 1.0:
            raise ObjectiveError(f"--mask-eps {self.eps} must lie in [0, 1)")
        self.weighting = self.options.get("mdm_loss_weight", "inv_p")
        if self.weighting not in MDM_LOSS_WEIGHTS:
            raise ObjectiveError(
                f"--mdm-loss-weight {self.weighting!r} is not valid; allowed: {', '.join(MDM_LOSS_WEIGHTS)}"
            )

    @classmethod
    def add_arguments(cls, parser) -> None:
        g = parser.add_argument_group("mdm objective")
        g.add_argument("--mask-eps", type=float, default=MDM_EPS, help="p = (1-eps) t + eps (default 1e-3, LLaDA); on an MDLM base the "
                       "release's sampling_eps, t = (1-eps) u + eps (default 1e-3, as released)")
        g.add_argument("--mdm-loss-weight", default="inv_p", help="inv_p (LLaDA: CE / p; on an MDLM base MDLM's 1/t) or none (plain mean)")

    # The forward process and the loss of the base's family: MDLM's own for an MDLM base.
    def corrupt(self, module: AdaptModule, batch: Batch, generator):
        """``(noisy_ids, masked, level [B])``: LLaDA's ``p`` or MDLM's ``t``."""
        if is_mdlm(module):
            return mdlm_corrupt(batch.input_ids, batch.response_mask, module.mask_id, generator, self.eps)
        return mdm_corrupt(batch.input_ids, batch.response_mask, module.mask_id, generator, self.eps)

    def masked_loss(self, module: AdaptModule, logits, batch: Batch, masked, level) -> torch.Tensor:
        if is_mdlm(module):
            weighting = "inv_t" if self.weighting == "inv_p" else "none"
            return mdlm_loss(logits, batch.input_ids, masked, level, batch.response_mask, module.mask_id, weighting)
        return mdm_loss(logits, batch.input_ids, masked, level, batch.response_mask, self.weighting)

    def loss(self, module: AdaptModule, batch: Batch, generator) -> LossOutput:
        noisy, masked, level = self.corrupt(module, batch, generator)
        logits = module.logits(input_ids=noisy, attention_mask=batch.attention_mask)
        loss = self.masked_loss(module, logits, batch, masked, level)
        return LossOutput(loss, batch.n_tokens, int(masked.sum()), {"mask_rate": float(masked.sum()) / max(1, int(batch.response_mask.sum()))})

    def config(self) -> dict[str, Any]:
        return {**super().config(), "mask_eps": self.eps, "loss_weight": self.weighting,
                "normalisation": "per-row response length (LLaDA SFT)"}


def is_mdlm(module: AdaptModule) -> bool:
    return getattr(module.info, "family", "") == "mdlm"
