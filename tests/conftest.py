"""Shared fixtures: one tiny LLaDA-format checkpoint per test session (seeded, built offline), and
the same backbone with untrained DSL modules."""

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


@pytest.fixture(scope="session")
def tiny_mdlm(tmp_path_factory):
    """A tiny MDLM-format DiT in the released mdlm-owt layout (``make-tiny --family mdlm``); read only."""
    from dslbench.models.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("mdlm") / "tiny-mdlm", seed=0, family="mdlm")


@pytest.fixture(scope="module")
def one_thread():
    """Two shared cores: one torch thread per process keeps tiny loops fast and never oversubscribed."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def untrained_dsl_ckpt(tiny_ckpt, tmp_path_factory):
    """``tiny_ckpt`` with freshly initialised DSL modules (noise dim 16), in the DSL checkpoint layout."""
    from dslbench.diffusion.dsl import DSLModules
    from dslbench.models.dsl_checkpoint import save_dsl_checkpoint
    from dslbench.models.loading import load_llada

    model, tokenizer, info = load_llada(tiny_ckpt)
    dsl = DSLModules(info.vocab_size, 16, model.config.d_model, beta_init=2.0, noise_seed=7)
    dsl.init_from_backbone(model.get_input_embeddings().weight, info.mask_id)
    out = tmp_path_factory.mktemp("untrained-dsl") / "dsl"
    return save_dsl_checkpoint(model, dsl, tokenizer, out, {"beta_train": 2.0, "max_steps": 0, "data": "none"})


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    """The tiny GPT-2 evaluator of the open-ended tasks (``make-tiny --family gpt2``); its folder
    name holds ``gpt2`` so mauve-text's own text path can load it too."""
    from dslbench.models.tiny_evaluator import make_tiny_gpt2

    return make_tiny_gpt2(tmp_path_factory.mktemp("evaluator") / "tiny-gpt2", seed=0)


@pytest.fixture
def stub_checkpoints(monkeypatch):
    """``/ckpt/...`` (the checkpoints of the leaderboard tests' stub evaluators) exist for no one:
    the leaderboard's pre-run check of local checkpoints skips them, as it skips hub ids; every
    other path is still checked."""
    import dslbench.runs.model_args as model_args

    real = model_args._local_checkpoint

    def local(spec):
        found = real(spec)
        return None if found is not None and str(found).startswith("/ckpt/") else found

    monkeypatch.setattr(model_args, "_local_checkpoint", local)
