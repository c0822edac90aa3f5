"""dslbench.models: checkpoint formats and loading (LLaDA-format native module, tiny checkpoints).

Import-light on purpose (no torch/transformers at import time); the public names below resolve
lazily on first use.

Layer: bottom. May import ``diffusion`` (the DSL modules a DSL checkpoint holds), ``data`` (the
tiny tokenizer's corpus), ``metrics`` and the utilities; never ``training``, ``harness``, ``runs``,
``report`` or the faces.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "LLaDAConfig": "dslbench.models.llada_config",
    "llada_8b_config": "dslbench.models.llada_config",
    "LLaDAModelLM": "dslbench.models.llada",
    "ModelInfo": "dslbench.models.loading",
    "load_llada": "dslbench.models.loading",
    "load_llada_model": "dslbench.models.loading",
    "load_model": "dslbench.models.loading",
    "register_family": "dslbench.models.loading",
    "CheckpointFetchError": "dslbench.models.loading",
    "CheckpointFormatError": "dslbench.models.loading",
    "train_tokenizer": "dslbench.models.tokenizer",
    "tiny_config": "dslbench.models.tiny",
    "make_tiny": "dslbench.models.tiny",
    "save_checkpoint": "dslbench.models.tiny",
    "make_tiny_gpt2": "dslbench.models.tiny_evaluator",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
