"""What a backend's sampler hands back for one batch (:meth:`DiffusionBackend._sample`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SampleResult:
    tokens: torch.Tensor  # [B, gen_length] generated span
    # denoiser calls made for this batch (each call evaluates every row once), or one count per
    # row when rows stop at different times (adaptive samplers: the calls each row needed)
    nfe: int | tuple[int, ...]
    extra: dict  # recorded for every row of the batch
    row_extra: list[dict] = field(default_factory=list)  # per row, when rows differ (empty: none)
