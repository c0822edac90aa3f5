"""Tiny checkpoints: written like the published layout, reloadable, deterministic, fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dslbench.models.loading import load_llada
from dslbench.models.saving import read_weights
from dslbench.models.tiny import make_tiny, save_checkpoint
from dslbench.models.tokenizer import SPECIAL_TOKENS

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    # (its build time is measured by benchmarks/, not asserted: a wall-clock limit fails on a busy machine)
    return make_tiny(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


def test_files_written(tiny_dir):
    for name in ("config.json", "model-00001-of-00001.safetensors", "model.safetensors.index.json", "tokenizer.json",
                 "tokenizer_config.json"):
        assert (tiny_dir / name).is_file(), name
    leftovers = [p.name for p in tiny_dir.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temporary siblings left behind
    raw = json.loads((tiny_dir / "config.json").read_text())
    assert raw["model_type"] == "llada" and raw["architectures"] == ["LLaDAModelLM"]
    for field in ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "rope_theta",
                  "rms_norm_eps", "mask_token_id", "eos_token_id", "pad_token_id", "block_type", "weight_tying"):
        assert field in raw, field
    keys = set(read_weights(tiny_dir))
    assert "model.transformer.wte.weight" in keys and "model.transformer.ff_out.weight" in keys
    assert "model.transformer.blocks.1.up_proj.weight" in keys


def test_reloads_with_consistent_special_tokens(tiny_dir):
    model, tokenizer, info = load_llada(str(tiny_dir), device="cpu")
    config = model.config
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    assert len(set(ids.values())) == len(SPECIAL_TOKENS)
    assert info.mask_id == config.mask_token_id == ids["<|mdm_mask|>"] == tokenizer.mask_token_id
    assert info.eos_id == config.eos_token_id == ids["<|endoftext|>"] == tokenizer.eos_token_id
    assert info.pad_id == config.pad_token_id == ids["<|pad|>"] == tokenizer.pad_token_id
    assert info.eot_id == ids["<|eot_id|>"]
    assert tokenizer.bos_token_id == ids["<|startoftext|>"]
    assert info.eos_ids == (info.eos_id, info.eot_id)
    assert info.vocab_size == config.vocab_size == len(tokenizer)
    assert info.has_chat_template and info.family == "llada"

    text = "The council approved the budget."
    encoded = tokenizer(text)["input_ids"]
    assert tokenizer.decode(encoded) == text
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([encoded])).logits
    assert logits.shape == (1, len(encoded), config.vocab_size)
    assert torch.isfinite(logits).all()


def test_chat_template_renders_llada_format(tiny_dir):
    _, tokenizer, _ = load_llada(str(tiny_dir), device="cpu")
    messages = [{"role": "user", "content": "Summarize this."}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nSummarize this.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    without = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    assert without.endswith("Summarize this.<|eot_id|>")
    ids = tokenizer(prompt)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.convert_tokens_to_ids("<|eot_id|>")) == 1


def test_same_seed_same_checkpoint(tiny_dir, tmp_path):
    again = make_tiny(tmp_path / "again", seed=0)
    first, second = read_weights(tiny_dir), read_weights(again)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert (tiny_dir / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()

    other = read_weights(make_tiny(tmp_path / "other", seed=1))
    assert not torch.equal(first["model.transformer.wte.weight"], other["model.transformer.wte.weight"])


def test_rewrite_replaces_checkpoint_and_refuses_foreign_dirs(tmp_path):
    texts = [f"sentence number {i} about the river and the council" for i in range(300)]
    out = make_tiny(tmp_path / "ckpt", seed=0, texts=texts)
    before = read_weights(out)["model.transformer.wte.weight"]
    make_tiny(out, seed=5, texts=texts)  # an existing checkpoint is replaced in place
    after = read_weights(out)["model.transformer.wte.weight"]
    assert not torch.equal(before, after)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    model, tokenizer, _ = load_llada(str(out), device="cpu")
    with pytest.raises(FileExistsError, match="not a checkpoint"):
        save_checkpoint(model, tokenizer, foreign)
    assert (foreign / "keep.txt").read_text() == "mine"

    with pytest.raises(ValueError, match="family='bert'"):  # gpt2 is a family now: the tiny evaluator
        make_tiny(tmp_path / "bert", family="bert", texts=texts)


def test_make_tiny_cli(tmp_path):
    out = tmp_path / "cli-ckpt"
    result = subprocess.run(
        [sys.executable, "-m", "dslbench.cli", "make-tiny", "--out", str(out), "--seed", "3"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    _, _, info = load_llada(str(out), device="cpu")
    assert info.family == "llada"
