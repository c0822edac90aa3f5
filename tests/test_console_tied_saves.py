"""Resume states of a model with tied weights (DiffusionGemma: encoder and decoder share their
layers, the head shares the embedding) are written without accelerate's "Removed shared tensor"
warning, hold the keys accelerate's own clean-up keeps, and resume to identical weights."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from dslbench.models.saving import drop_shared_aliases, read_weights
from dslbench.training.loop import AdaptConfig, latest_checkpoint, run_adapt


@pytest.fixture(scope="module")
def dg_base(tiny_ckpt, tmp_path_factory):
    from transformers import AutoTokenizer

    from dslbench.models.diffusiongemma import make_tiny_diffusiongemma

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_ckpt))
    return make_tiny_diffusiongemma(tmp_path_factory.mktemp("dg") / "tiny-dg", tokenizer, seed=0,
                                    hidden_size=32, num_hidden_layers=1, canvas_length=16)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    from dslbench.data.synth import make_summarization_examples

    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    with path.open("w") as f:
        for r in make_summarization_examples(8, seed=1, split="train"):
            f.write(json.dumps({"prompt": r["document"][:120], "response": r["summary"][:60]}) + "\n")
    return path


def _cfg(base, out, data, **kw) -> AdaptConfig:
    return AdaptConfig(base=str(base), out=str(out), objective="uniform", data=str(data), max_steps=4, batch_size=2,
                       seq_len=96, response_len=16, warmup_steps=0, lr=3e-3, save_every=2, progress=False, seed=0,
                       objective_options={"freeze_router": "no"}, **kw)


class _Crash(RuntimeError):
    pass


def _crash_at(step_to_crash: int):
    def hook(step, loss):
        if step == step_to_crash:
            raise _Crash(step)
    return hook


def test_drop_shared_aliases_keeps_what_accelerate_keeps(dg_base):
    from accelerate import PartialState
    from accelerate.utils import clean_state_dict_for_safetensors

    from dslbench.models.diffusiongemma import load_diffusiongemma

    model, _, _ = load_diffusiongemma(str(dg_base), dtype="float32", device="cpu")
    ours = model.state_dict()
    removed = drop_shared_aliases(ours)
    assert "lm_head.weight" in removed and len(removed) > 10  # the head and the shared layers
    PartialState()  # accelerate's logger (which its clean-up warns through) needs it
    theirs = clean_state_dict_for_safetensors(model.state_dict())
    assert list(ours) == list(theirs)
    assert drop_shared_aliases(ours) == []  # nothing shared is left


def test_tied_resume_state_is_quiet_and_resumes_to_identical_weights(dg_base, pairs, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        ref = run_adapt(_cfg(dg_base, tmp_path / "ref", pairs))
    assert not [r for r in caplog.records if "Removed shared tensor" in r.getMessage()]
    killed = tmp_path / "killed"
    with pytest.raises(_Crash):
        run_adapt(_cfg(dg_base, killed, pairs), on_step_end=_crash_at(3))
    state = latest_checkpoint(killed)
    assert state.name == "step-00000002"
    saved = load_file(str(state / "model.safetensors"))
    assert not any(k.endswith("lm_head.weight") for k in saved)  # the tied copy is not stored twice
    run_adapt(_cfg(dg_base, killed, pairs, resume=True))
    a, b = read_weights(ref.out), read_weights(killed)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
