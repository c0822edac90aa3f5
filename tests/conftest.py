"""Shared fixtures: one tiny LLaDA-format checkpoint per test session (seeded, built offline)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# pytest imports dslbench from this checkout (the repository root is on sys.path); the lm_eval /
# dslbench subprocesses the tests start must run the same code, not whichever dslbench the
# environment happens to have installed (another checkout, an older wheel).
ROOT = str(Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    from dslbench.models.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)
