"""dslbench.training: the adaptation script behind ``dslbench adapt``.

- :mod:`~dslbench.training.data`: ``--data`` specs, prompt formatting, response masks, padding, packing;
- :mod:`~dslbench.training.objectives`: ``mdm`` and ``dsl`` (and the registry other objectives join);
- :mod:`~dslbench.training.config`: the run's settings (``AdaptConfig``, validated), result and errors;
- :mod:`~dslbench.training.checkpointing`: what a run writes into ``--out``: log, resume states, final checkpoint;
- :mod:`~dslbench.training.loop`: the accelerate loop and exact resume (``run_adapt``);
- ``configs/``: accelerate launch configs (DDP, DeepSpeed ZeRO-2/3, FSDP), see :func:`config_path`.

Imports are lazy: ``import dslbench.training`` loads nothing heavy.

Layer: above the bottom. May import ``models``, ``diffusion``, ``data``, ``metrics`` and the
utilities; never ``harness`` (a sibling), ``runs``, ``report`` or the faces.
"""

from __future__ import annotations

from pathlib import Path

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def config_path(name: str) -> Path:
    """Path of a shipped accelerate config (``ddp``, ``deepspeed_zero2``, ``deepspeed_zero3``, ``fsdp``)."""
    path = CONFIGS_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not path.is_file():
        allowed = sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))
        raise ValueError(f"accelerate config {name!r} not found; allowed: {', '.join(allowed)}")
    return path


def __getattr__(name: str):
    if name in ("AdaptConfig", "AdaptResult", "run_adapt", "latest_checkpoint"):
        from dslbench.training import loop

        return getattr(loop, name)
    raise AttributeError(name)
