"""The tiny adaptation recipe of the embedded leaderboard (``baselines/tiny.yaml``): one random
tiny base, adapted a few steps on the synthetic data with each objective under the *same*
recipe (data, order, steps, batch, learning rate, seed), so the rows differ by the objective
only. CPU-cheap by design: the rows exercise the adapt -> checkpoint -> backend -> task path end
to end, they say nothing about the methods."""

from __future__ import annotations

import os
from pathlib import Path

TINY_ADAPT_OBJECTIVES = ("mdm", "softmask", "dsl")
TINY_RECIPE = {"data": "synth", "seq_len": 48, "batch_size": 4, "max_steps": 6, "lr": 1e-3, "warmup_steps": 0}
TINY_DSL_NOISE_DIM = 16  # as the tiny-dsl checkpoint


def adapt_tiny(base: str | os.PathLike, out: str | os.PathLike, objective: str, seed: int = 0) -> Path:
    """Adapt ``base`` with ``objective`` under :data:`TINY_RECIPE` into ``out`` (CPU, fp32)."""
    from dslbench.training.loop import AdaptConfig, run_adapt

    if objective not in TINY_ADAPT_OBJECTIVES:
        raise ValueError(f"tiny adaptation objective {objective!r} is not valid; allowed: {', '.join(TINY_ADAPT_OBJECTIVES)}")
    options = {"noise_dim": TINY_DSL_NOISE_DIM} if objective == "dsl" else {}
    cfg = AdaptConfig(base=str(base), out=str(out), objective=objective, objective_options=options, seed=seed,
                      device="cpu", precision="fp32", progress=False, save_every=0, resume=True, **TINY_RECIPE)
    return run_adapt(cfg).out


__all__ = ["adapt_tiny", "TINY_RECIPE", "TINY_ADAPT_OBJECTIVES"]
