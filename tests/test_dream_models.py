"""Dream-format checkpoints: layout, loading through transformers' Qwen2, bidirectional attention,
the logit shift at the seam, and both backends on both families."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dslbench.diffusion.denoiser import ModelDenoiser
from dslbench.metrics.sample_stats import split_stats
from dslbench.models.loading import CheckpointFormatError, load_model
from dslbench.models.saving import read_weights

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def dream_ckpt(tmp_path_factory):
    from dslbench.models.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("dream") / "tiny-dream", seed=0, family="dream")


@pytest.fixture(scope="module")
def dream(dream_ckpt):
    return load_model(dream_ckpt, device="cpu")


def test_checkpoint_layout_is_dreams(dream_ckpt, dream):

    from dslbench.models.tokenizer import MASK_TOKEN, token_id

    raw = json.loads((dream_ckpt / "config.json").read_text())
    assert raw["model_type"] == "Dream" and raw["architectures"] == ["DreamModel"]
    for field in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "rope_theta", "rms_norm_eps"):
        assert field in raw
    keys = set(read_weights(dream_ckpt))
    n = raw["num_hidden_layers"]
    expected = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    for i in range(n):
        p = f"model.layers.{i}."
        expected |= {p + f"self_attn.{x}_proj.{w}" for x in "qkv" for w in ("weight", "bias")}
        expected |= {p + "self_attn.o_proj.weight", p + "input_layernorm.weight", p + "post_attention_layernorm.weight"}
        expected |= {p + f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")}
    assert keys == expected
    assert raw["mask_token_id"] == token_id(dream[1], MASK_TOKEN)  # the tiny tokenizer's own mask id


def test_loads_through_transformers_qwen2(dream):
    from transformers import Qwen2ForCausalLM

    model, tok, info = dream
    assert isinstance(model, Qwen2ForCausalLM)
    assert info.family == "dream" and info.shift_logits
    assert info.mask_id == tok.convert_tokens_to_ids("<|mdm_mask|>")
    assert info.eos_id == tok.eos_token_id and info.eot_id is not None
    assert model.model.rotary_emb.inv_freq.device.type == "cpu"


def test_mask_id_defaults_to_dreams(tmp_path, dream_ckpt):
    ckpt = tmp_path / "no-mask-id"
    shutil.copytree(dream_ckpt, ckpt)
    raw = json.loads((ckpt / "config.json").read_text())
    del raw["mask_token_id"]
    (ckpt / "config.json").write_text(json.dumps(raw))
    # Dream-7B's mask id is the default only where it is a token of the model (#21.6): on the
    # 806-token tiny vocabulary it is refused, naming the file, instead of failing later.
    with pytest.raises(CheckpointFormatError, match=r"no-mask-id/config.json: mask_token_id=151666 \(the Dream default"):
        load_model(ckpt, device="cpu")
    from dslbench.models.dream import validated_dream_config

    assert validated_dream_config({**raw, "vocab_size": 152064}).mask_token_id == 151666


def _logits(model, ids, mask=None):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def test_attention_is_bidirectional(dream):
    from dslbench.models.dream import make_bidirectional

    model = dream[0]
    ids = torch.randint(10, 700, (2, 12), generator=torch.Generator().manual_seed(0))
    late = ids.clone()
    late[:, -1] = (late[:, -1] + 1) % 700
    full = torch.ones_like(ids)
    for mask in (None, full):
        assert (_logits(model, ids, mask)[:, 0] - _logits(model, late, mask)[:, 0]).abs().max() > 1e-4
    # the same network made causal again ignores the late token at position 0 (the check has teeth)
    try:
        model.config.is_causal = True
        for m in model.modules():
            if hasattr(m, "is_causal"):
                m.is_causal = True
        assert torch.allclose(_logits(model, ids)[:, 0], _logits(model, late)[:, 0], atol=1e-6)
    finally:
        make_bidirectional(model)
    assert not model.config.is_causal


def test_left_padding_is_invisible(dream):
    model, _, info = dream
    ids = torch.randint(10, 700, (1, 9), generator=torch.Generator().manual_seed(1))
    padded = torch.cat([torch.full((1, 3), info.pad_id), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], dim=1)
    assert torch.allclose(_logits(model, padded, mask)[:, 3:], _logits(model, ids), atol=1e-5)


def test_logit_shift_at_the_seam(dream):
    model, _, info = dream
    den = ModelDenoiser(model, info.mask_id, info.eos_id, info.eos_ids, info.vocab_size, shift_logits=info.shift_logits)
    ids = torch.randint(10, 700, (2, 7), generator=torch.Generator().manual_seed(2))
    raw = _logits(model, ids)
    with torch.no_grad():
        seam = den.forward(den.embed(ids), None)
    assert torch.equal(seam[:, 1:], raw[:, :-1])  # position i's logits come from network position i-1
    assert torch.equal(seam[:, 0], raw[:, 0])
    assert den.nfe == 1


def test_logits_from_on_the_shifted_seam_keeps_one_extra_output(dream):
    """Dream's position i reads network output i-1: asking for positions 5.. runs the head on
    outputs 4.. (transformers' ``logits_to_keep``) and gives the full seam's rows 5.."""
    model, _, info = dream
    den = ModelDenoiser(model, info.mask_id, info.eos_id, info.eos_ids, info.vocab_size, shift_logits=info.shift_logits)
    ids = torch.randint(10, 700, (2, 9), generator=torch.Generator().manual_seed(3))
    head_rows = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: head_rows.append(i[0].shape[1]))
    with torch.no_grad():
        full = den.forward(den.embed(ids), None)
        tail = den.forward(den.embed(ids), None, logits_from=5)
    hook.remove()
    assert head_rows == [9, 5]
    assert tail.shape[1] == 4
    torch.testing.assert_close(tail, full[:, 5:], atol=1e-6, rtol=0)


def test_wrong_weights_fail_loudly(tmp_path, dream_ckpt):
    from safetensors.torch import save_file

    ckpt = tmp_path / "broken"
    shutil.copytree(dream_ckpt, ckpt)
    state = read_weights(ckpt)
    del state["model.layers.0.self_attn.q_proj.bias"]
    state["model.transformer.wte.weight"] = state["model.embed_tokens.weight"].clone()
    for shard in ckpt.glob("model*.safetensors*"):  # rewritten as one unindexed file (also a valid layout)
        shard.unlink()
    save_file(state, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointFormatError, match="q_proj.bias.*unexpected keys: model.transformer.wte.weight"):
        load_model(ckpt, device="cpu")


def test_make_tiny_cli_offers_dream():
    from dslbench.cli import build_parser

    args = build_parser().parse_args(["make-tiny", "--family", "dream", "--out", "x"])
    assert args.family == "dream"


# ---------------------------------------------------------------- backends on both families


class Req:
    def __init__(self, context, gen_kwargs, repeats=1):
        self.args = (context, gen_kwargs)
        self.repeats = repeats


@pytest.mark.parametrize("backend_name", ["mdm_llada", "softmask_llada"])
@pytest.mark.parametrize("family", ["llada", "dream"])
def test_backends_run_on_both_families(backend_name, family, tiny_ckpt, dream_ckpt):
    from dslbench.harness.mdm_backend import MDMLLaDA
    from dslbench.harness.softmask_backend import SoftMaskLLaDA

    cls = {"mdm_llada": MDMLLaDA, "softmask_llada": SoftMaskLLaDA}[backend_name]
    ckpt = tiny_ckpt if family == "llada" else dream_ckpt
    b = cls.create_from_arg_string(f"pretrained={ckpt},batch_size=2", {"device": "cuda:0"})
    assert b.denoiser.shift_logits == (family == "dream")
    gk = {"nfe": 4, "gen_length": 16, "block_length": 8, "return_stats": True, "until": []}
    prompt = b.apply_chat_template([{"role": "user", "content": "Summarize: the council met."}])
    out = b.generate_until([Req(prompt, gk), Req("a shorter one", gk)])
    for resp in out:
        text, stats = split_stats(resp)
        assert stats["nfe"] == 4 and stats["backend"] == backend_name and 0 <= stats["gen_tokens"] <= 16


def test_lm_eval_softmask_on_tiny_dream(dream_ckpt, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "lm_eval", "--model", "softmask_llada", "--model_args", f"pretrained={dream_ckpt}",
        "--tasks", "dsl_summ_synth_16step", "--limit", "2", "--log_samples", "--output_path", str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (samples,) = out.rglob("samples_dsl_summ_synth_16step_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        _, stats = split_stats(row["resps"][0][0])
        assert stats["backend"] == "softmask_llada" and 0 < stats["nfe"] <= 16
