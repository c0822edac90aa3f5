"""The native MDLM-format DiT against a re-implementation of the released forward (tests/mdlm_reference.py)."""

from __future__ import annotations

import json

import pytest
import torch

from dslbench.models.loading import CheckpointFormatError, load_model
from tests.mdlm_reference import load_released

# The released hub checkpoint's key names (kuleshov-group/mdlm-owt), per block and elsewhere.
RELEASED_BLOCK_KEYS = ("adaLN_modulation.bias", "adaLN_modulation.weight", "attn_out.weight", "attn_qkv.weight",
                       "mlp.0.bias", "mlp.0.weight", "mlp.2.bias", "mlp.2.weight", "norm1.weight", "norm2.weight")
RELEASED_OTHER_KEYS = ("backbone.output_layer.adaLN_modulation.bias", "backbone.output_layer.adaLN_modulation.weight",
                       "backbone.output_layer.linear.bias", "backbone.output_layer.linear.weight",
                       "backbone.output_layer.norm_final.weight", "backbone.rotary_emb.inv_freq",
                       "backbone.sigma_map.mlp.0.bias", "backbone.sigma_map.mlp.0.weight", "backbone.sigma_map.mlp.2.bias",
                       "backbone.sigma_map.mlp.2.weight", "backbone.vocab_embed.embedding")


def test_written_checkpoint_has_the_released_layout(tiny_mdlm):
    from safetensors import safe_open

    config = json.loads((tiny_mdlm / "config.json").read_text())
    assert config["model_type"] == "mdlm" and config["architectures"] == ["MDLM"]
    assert {"hidden_dim", "cond_dim", "n_blocks", "n_heads", "model_length", "vocab_size", "dropout",
            "time_conditioning"} <= set(config)
    assert config["time_conditioning"] is False
    with safe_open(str(tiny_mdlm / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    expected = {f"backbone.blocks.{i}.{k}" for i in range(config["n_blocks"]) for k in RELEASED_BLOCK_KEYS}
    assert keys == expected | set(RELEASED_OTHER_KEYS)


def test_logits_equal_the_released_forward(tiny_mdlm):
    model, tokenizer, info = load_model(str(tiny_mdlm), dtype="float32", device="cpu")
    released = load_released(tiny_mdlm)  # strict: the written keys load into the released tree
    assert info.family == "mdlm" and info.mask_id == model.config.vocab_size - 1 == tokenizer.mask_token_id
    assert info.eos_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ids = torch.randint(0, model.config.vocab_size, (3, 37), generator=torch.Generator().manual_seed(0))
    ids[:, ::3] = info.mask_id
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        ref = released(ids)
    assert ours.shape == (3, 37, model.config.vocab_size)
    assert ours.std() > 0.1  # random tiny weights: the logits are not constant
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    # the same through inputs_embeds (the samplers' path)
    with torch.no_grad():
        via_embeds = model(inputs_embeds=model.get_input_embeddings()(ids)).logits
    torch.testing.assert_close(via_embeds, ref, rtol=1e-5, atol=1e-5)


def test_padding_is_hidden_from_attention(tiny_mdlm):
    model, _, info = load_model(str(tiny_mdlm), dtype="float32", device="cpu")
    ids = torch.randint(0, info.mask_id, (1, 12), generator=torch.Generator().manual_seed(1))
    padded = torch.cat([torch.full((1, 4), info.pad_id), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 12, dtype=torch.long)], dim=1)
    with torch.no_grad():
        alone = model(input_ids=ids).logits
        with_pads = model(input_ids=padded, attention_mask=mask).logits[:, 4:]
    # positions move by the pad count (rotary is relative: q.k depends on the offset only)
    torch.testing.assert_close(with_pads, alone, rtol=1e-4, atol=1e-4)


def test_make_tiny_is_byte_identical_for_a_seed(tiny_mdlm, tmp_path):
    from dslbench.models.tiny import make_tiny

    again = make_tiny(tmp_path / "again", seed=0, family="mdlm")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (again / name).read_bytes() == (tiny_mdlm / name).read_bytes(), name


@pytest.mark.parametrize("change, message", [
    ({"time_conditioning": True}, "time_conditioning=true is not supported"),
    ({"hidden_dim": None}, "missing required field(s) hidden_dim"),
    ({"n_heads": 5}, "divisible by n_heads=5"),
])
def test_bad_config_is_refused_by_name(tiny_mdlm, tmp_path, change, message):
    import shutil

    folder = tmp_path / "bad"
    shutil.copytree(tiny_mdlm, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(change)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointFormatError, match="config.json.*" if "missing" in message else None) as err:
        load_model(str(folder), dtype="float32", device="cpu")
    assert message in str(err.value)


def test_preflight_reads_mdlm_checkpoints(tiny_mdlm, tmp_path):
    import shutil

    from dslbench.models.preflight import checkpoint_problems

    assert checkpoint_problems(tiny_mdlm, "mdm_llada") == []
    folder = tmp_path / "bad"
    shutil.copytree(tiny_mdlm, folder)
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] += 1  # the tokenizer's mask is then not vocab_size - 1
    (folder / "config.json").write_text(json.dumps(config))
    problems = checkpoint_problems(folder, "mdm_llada")
    assert problems and "mask" in " ".join(problems)


def test_a_checkpoint_without_inv_freq_loads(tiny_mdlm, tmp_path):
    """The rotary buffer is a function of the head size: recomputed when a checkpoint omits it."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "no-inv-freq"
    shutil.copytree(tiny_mdlm, folder)
    state = load_file(str(folder / "model.safetensors"))
    del state["backbone.rotary_emb.inv_freq"]
    save_file(state, str(folder / "model.safetensors"))
    full, _, _ = load_model(str(tiny_mdlm), dtype="float32", device="cpu")
    part, _, _ = load_model(str(folder), dtype="float32", device="cpu")
    ids = torch.arange(20)[None] % 100
    with torch.no_grad():
        assert torch.equal(full(input_ids=ids).logits, part(input_ids=ids).logits)
