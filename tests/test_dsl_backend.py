"""The DSL checkpoint format and the ``dsl_llada`` backend on a tiny checkpoint (in-process and CLI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dslbench.harness.dsl_backend import DSLLLaDA
from dslbench.harness.mdm_backend import MDMLLaDA
from dslbench.metrics.sample_stats import split_stats
from dslbench.models.dsl_checkpoint import DSL_KEYS, load_dsl_checkpoint, save_dsl_checkpoint
from dslbench.models.loading import CheckpointFormatError
from dslbench.models.saving import read_weights

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


class Req:
    def __init__(self, context, gen_kwargs, repeats=1):
        self.args = (context, gen_kwargs)
        self.repeats = repeats


@pytest.fixture(scope="module")
def dsl_parts(tiny_ckpt):
    from dslbench.diffusion.dsl import DSLModules
    from dslbench.models.loading import load_llada

    model, tokenizer, info = load_llada(tiny_ckpt)
    dsl = DSLModules(info.vocab_size, 16, model.config.d_model, beta_init=2.0, noise_seed=7)
    dsl.init_from_backbone(model.get_input_embeddings().weight, info.mask_id)
    with torch.no_grad():
        dsl.converter.beta.fill_(1.5)  # as if training had moved it
    return model, dsl, tokenizer, info


@pytest.fixture(scope="module")
def dsl_ckpt(dsl_parts, tmp_path_factory):
    model, dsl, tokenizer, _ = dsl_parts
    out = tmp_path_factory.mktemp("dsl") / "dsl-ckpt"
    return save_dsl_checkpoint(model, dsl, tokenizer, out, {"beta_train": 2.0, "max_steps": 0, "data": "none"})


@pytest.fixture(scope="module")
def backend(dsl_ckpt):
    return DSLLLaDA.create_from_arg_string(f"pretrained={dsl_ckpt},gen_length=16,nfe=8", {"batch_size": 2, "device": "cuda:0"})


# ------------------------------------------------------------------ checkpoint format
def test_checkpoint_holds_backbone_and_published_dsl_keys_side_by_side(dsl_ckpt, dsl_parts):
    model, dsl, _, info = dsl_parts
    names = {p.name for p in dsl_ckpt.iterdir()}
    assert {"config.json", "model-00001-of-00001.safetensors", "model.safetensors.index.json", "tokenizer.json",
            "dsl_config.json"} <= names
    tensors = read_weights(dsl_ckpt)
    assert set(tensors) == set(model.state_dict()) | set(DSL_KEYS)
    v, d = info.vocab_size, 16
    assert tensors["noise_embed.weight"].shape == (v, d)
    assert tensors["converter.logit_bias"].shape == (v + 1,)
    assert tensors["converter.backbone_embedding.weight"].shape == (model.config.d_model, v + 1)
    assert tensors["converter.backbone_embedding.bias"].shape == (model.config.d_model,)
    assert tensors["converter.beta"].shape == () and tensors["converter.beta"].item() == 1.5
    cfg = json.loads((dsl_ckpt / "dsl_config.json").read_text())
    assert cfg["objective"] == "dsl" and cfg["noise_dim"] == 16 and cfg["vocab_size"] == v
    assert cfg["noise_seed"] == 7 and cfg["beta_train"] == 1.5 and cfg["beta_init"] == 2.0
    assert cfg["max_steps"] == 0 and cfg["topk"] == 512 and cfg["snr_grid"] == "sensitive"


def test_round_trip(dsl_ckpt, dsl_parts):
    model, dsl, _, info = dsl_parts
    m2, dsl2, tok2, info2, cfg = load_dsl_checkpoint(dsl_ckpt, device="cpu")
    for key, value in model.state_dict().items():
        assert torch.equal(m2.state_dict()[key], value), key
    for key, value in dsl.state_dict().items():
        assert torch.equal(dsl2.state_dict()[key], value), key
    assert not dsl2.noise_embed.weight.requires_grad
    assert info2.mask_id == info.mask_id and cfg["layout"] == "dslbench" and cfg["beta_train"] == 1.5


def _published_copy(dsl_ckpt: Path, dst: Path, mutate) -> Path:
    """The same weights laid out like a released DSL-LLaDA checkpoint (no dsl_config.json)."""
    shutil.copytree(dsl_ckpt, dst)
    (dst / "dsl_config.json").unlink()
    tensors = read_weights(dst)
    mutate(tensors)
    for shard in dst.glob("model*.safetensors*"):
        shard.unlink()
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_published_layout_with_output_head_lora_is_merged(dsl_ckpt, tmp_path):
    rank = 4
    g = torch.Generator().manual_seed(0)
    captured = {}

    def to_lora(t):
        base = t.pop("model.transformer.ff_out.weight")
        d_out, d_in = base.shape
        t["model.transformer.ff_out.base.weight"] = base
        t["model.transformer.ff_out.lora_A"] = torch.randn(d_in, rank, generator=g) / rank
        t["model.transformer.ff_out.lora_B"] = torch.randn(rank, d_out, generator=g) * 0.01
        t["log_snr_max"] = torch.tensor(4.6)
        t["converter.embed.weight"] = t["noise_embed.weight"].clone()
        captured.update(t)

    path = _published_copy(dsl_ckpt, tmp_path / "pub", to_lora)
    model, dsl, _, _, cfg = load_dsl_checkpoint(path, device="cpu")
    a, b = captured["model.transformer.ff_out.lora_A"], captured["model.transformer.ff_out.lora_B"]
    expected = captured["model.transformer.ff_out.base.weight"] + (128.0 / rank) * (a @ b).T
    torch.testing.assert_close(model.state_dict()["model.transformer.ff_out.weight"], expected)
    assert cfg["layout"] == "published" and cfg["ffout_lora"]["rank"] == rank
    assert cfg["beta_train"] == 1.5 and cfg["noise_dim"] == 16 and cfg["log_snr_max"] == pytest.approx(4.6)


def test_unsupported_or_non_dsl_checkpoints_are_refused(dsl_ckpt, tiny_ckpt, tmp_path):
    with pytest.raises(CheckpointFormatError, match="mdm_llada"):
        load_dsl_checkpoint(tiny_ckpt, device="cpu")

    def residual(t):
        t["converter.residual_proj.weight"] = torch.zeros(2, 2)

    with pytest.raises(CheckpointFormatError, match="residual"):
        load_dsl_checkpoint(_published_copy(dsl_ckpt, tmp_path / "res", residual), device="cpu")

    def stray(t):
        t["something.else"] = torch.zeros(1)

    with pytest.raises(CheckpointFormatError, match="unexpected keys: something.else"):
        load_dsl_checkpoint(_published_copy(dsl_ckpt, tmp_path / "stray", stray), device="cpu")


# ------------------------------------------------------------------ backend in-process
def test_generation_records_measured_nfe_within_budget(backend):
    reqs = [Req(f"prompt number {i} about the report.", {"nfe": nfe, "gen_length": 16, "return_stats": True, "until": []})
            for i, nfe in enumerate((4, 8, 16, 5))]
    before = backend.denoiser.nfe
    out = backend.generate_until(reqs)
    budgets = (4, 8, 16, 5)
    for resp, budget in zip(out, budgets):
        text, stats = split_stats(resp)
        assert stats["nfe"] == budget and stats["nfe_budget"] == budget  # strict: the whole budget, no more
        assert stats["accounting"] == "strict" and stats["sampler"] == "sde"
        assert stats["response_cut"] == "none" and stats["beta"] == pytest.approx(3.0)  # 2 x learned 1.5
        assert stats["noise_scale"] == (0.1 if budget <= 8 else 0.05)
        assert 2 * stats["heun_steps"] + stats["one_call_steps"] + 1 == budget
        assert "dslbench-stats" not in text
    assert backend.denoiser.nfe - before == sum(budgets)  # each request its own batch (different kwargs)


def test_published_accounting_is_reported_truthfully(backend):
    (resp,) = backend.generate_until([Req("x", {"nfe": 8, "accounting": "published", "return_stats": True})])
    stats = split_stats(resp)[1]
    assert stats["nfe"] == 9 and stats["nfe_budget"] == 8 and stats["heun_steps"] == 4


def test_response_cut_defaults_to_published_only_for_dsl(dsl_ckpt, tiny_ckpt):
    assert DSLLLaDA.create_from_arg_string(f"pretrained={dsl_ckpt}").args["response_cut"] == "none"
    assert DSLLLaDA.create_from_arg_string(f"pretrained={dsl_ckpt},response_cut=eos").args["response_cut"] == "eos"
    assert MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt}").args["response_cut"] == "eos"


def test_bad_model_args_are_clear(dsl_ckpt, tiny_ckpt):
    with pytest.raises(ValueError, match=r"unknown model arg\(s\) stepz.*Valid model args: .*noise_scale"):
        DSLLLaDA.create_from_arg_string(f"pretrained={dsl_ckpt},stepz=3")
    with pytest.raises(ValueError, match="sampler='rk4' is not allowed"):
        DSLLLaDA.create_from_arg_string(f"pretrained={dsl_ckpt},sampler=rk4")
    with pytest.raises(CheckpointFormatError, match="not a DSL checkpoint"):
        DSLLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt}")


def test_same_seed_same_output_and_sampler_options(dsl_ckpt):
    gk = {"nfe": 6, "gen_length": 8, "noise_scale": 1.0}
    runs = []
    for _ in range(2):
        b = DSLLLaDA.create_from_arg_string(f"pretrained={dsl_ckpt},seed=3")
        runs.append(b.generate_until([Req("a prompt", gk), Req("b prompt", gk)]))
    assert runs[0] == runs[1]
    for extra in ({"sampler": "ode"}, {"sampler": "euler"}, {"beta": 1.0, "topk": 8}):
        (resp,) = b.generate_until([Req("c", {"nfe": 4, "gen_length": 8, "return_stats": True, **extra})])
        stats = split_stats(resp)[1]
        assert stats["nfe"] == 4 and all(stats[k] == v for k, v in extra.items())


def test_repair_defaults_to_the_published_token_path(backend, monkeypatch):
    from tests.test_repair_tasks import PASSAGES, one_forward_argmax, repair_records

    def no_converter(*_a, **_k):
        raise AssertionError("the published repair protocol never calls the converter")

    monkeypatch.setattr(backend.denoiser, "convert", no_converter)

    for mode in ("random", "semantic"):
        for passage, rec in zip(PASSAGES, repair_records(backend, mode)):
            assert rec["original_ids"] == backend.tokenizer(passage, add_special_tokens=False)["input_ids"]
            # the backbone on the corrupted ids, no converter: one forward, argmax at every position
            assert rec["repaired_ids"] == one_forward_argmax(backend.model, rec["corrupted_ids"])
            assert rec["repair_protocol"] == "published" and rec["repair_path"] == "token" and rec["nfe"] == 1


def test_converter_repair_is_a_named_variant(dsl_ckpt):
    b = DSLLLaDA.create_from_arg_string(f"pretrained={dsl_ckpt},repair_path=converter")
    gk = {"repair_mode": "random", "repair_rate": 0.3, "repair_nfe": 2, "return_stats": True}
    (resp,) = b.generate_until([Req("the council approved the budget on monday after a long debate.", gk)])
    stats = split_stats(resp)[1]
    assert stats["repair_protocol"] == "converter+iterative-2" and stats["repair_path"] == "converter"
    assert stats["nfe"] == 2 and stats["repair_passes"] == 2 and stats["repair_snr"] == 100.0
    assert len(stats["repaired_ids"]) == len(stats["original_ids"]) and stats["corrupted_positions"]
    (resp,) = b.generate_until([Req("the council met.", {**gk, "repair_nfe": 1})])
    assert split_stats(resp)[1]["repair_protocol"] == "converter"
    with pytest.raises(ValueError, match="repair_path"):
        DSLLLaDA.create_from_arg_string(f"pretrained={dsl_ckpt},repair_path=snr")


def test_likelihood_is_refused(backend):
    with pytest.raises(NotImplementedError, match="loglikelihood"):
        backend.loglikelihood([Req("a", " b")])


# ------------------------------------------------------------------ lm_eval CLI
def test_lm_eval_cli_end_to_end(dsl_ckpt, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "lm_eval", "--model", "dsl_llada", "--model_args", f"pretrained={dsl_ckpt}",
        "--tasks", "dsl_summ_synth_16step", "--limit", "4", "--log_samples", "--output_path", str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (samples,) = out.rglob("samples_dsl_summ_synth_16step_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(rows) == 4
    for row in rows:
        stats = split_stats(row["resps"][0][0])[1]
        assert stats["backend"] == "dsl_llada" and stats["nfe"] <= 16 and stats["response_cut"] == "none"
