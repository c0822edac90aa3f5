"""The few-step unmasking controls of issue #17, timed like the backends (by
``sampler_overhead`` / ``summarization_canvas``) on ``mdm_llada``'s checkpoint. Adaptive rules
may stop before the budget: the overhead is per network evaluation."""

from __future__ import annotations

from pathlib import Path

import torch

from workload import load_backend

# backend label -> mdm_llada args
CONTROL_VARIANTS = {
    "mdm_llada+entropy": {"remasking": "entropy"},
    "mdm_llada+margin": {"remasking": "margin"},
    "mdm_llada+threshold": {"parallel": "threshold", "threshold": 0.9},
    "mdm_llada+eb": {"parallel": "eb", "remasking": "entropy", "eb_gamma": 1.0},
}


def load_controls(mdm_ckpt: Path, size: dict, device: torch.device) -> dict:
    """label -> an ``mdm_llada`` backend with that control's arguments."""
    return {v: load_backend("mdm_llada", mdm_ckpt, size, device, extra=a) for v, a in CONTROL_VARIANTS.items()}
