"""Checkpoints others can read (#14.5) and loading errors that name the file (#21.6).

The round trip is checked with a loader written here from the released layout (HF Trainer
shards: ``model.safetensors.index.json`` -> ``model-*.safetensors``; the released DSL-LLaDA
evaluation finds the converter by globbing ``model-*.safetensors``), not with dslbench's own.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from dslbench.models.dsl_checkpoint import DSL_KEYS, load_dsl_checkpoint, save_dsl_checkpoint
from dslbench.models.loading import CheckpointFormatError, load_llada, load_model
from dslbench.models.saving import LLADA_AUTO_MAP, write_weights
from dslbench.models.tiny import make_tiny

ROOT = Path(__file__).resolve().parents[1]


def released_layout_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor named by the index, read from the shard the index names (and only there)."""
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    assert set(index) >= {"metadata", "weight_map"} and index["metadata"]["total_size"] > 0
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        assert shard.startswith("model-") and shard.endswith(".safetensors"), shard
        with safe_open(str(directory / shard), framework="pt") as f:
            for key in f.keys():
                assert index["weight_map"][key] == shard, key
                tensors[key] = f.get_tensor(key)
    assert set(tensors) == set(index["weight_map"])
    return tensors


def released_converter_glob(directory: Path) -> dict[str, torch.Tensor]:
    """What the released evaluation attaches: DSL keys found in the ``model-*.safetensors`` glob."""
    found = {}
    for shard in sorted(directory.glob("model-*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            found.update({k: f.get_tensor(k) for k in f.keys() if k.startswith(("converter.", "noise_embed."))})
    return found


@pytest.fixture(scope="module")
def dsl_saved(tiny_ckpt, tmp_path_factory):
    from dslbench.diffusion.dsl import DSLModules

    model, tokenizer, info = load_llada(tiny_ckpt, device="cpu")
    dsl = DSLModules(info.vocab_size, 8, model.config.d_model, noise_seed=3)
    dsl.init_from_backbone(model.get_input_embeddings().weight, info.mask_id)
    out = save_dsl_checkpoint(model, dsl, tokenizer, tmp_path_factory.mktemp("dslio") / "dsl", {"beta_train": 2.0})
    return out, model, dsl


def test_dsl_checkpoint_reads_back_through_the_released_layout(dsl_saved):
    out, model, dsl = dsl_saved
    assert not (out / "model.safetensors").exists()  # a lone file is what the released glob misses
    tensors = released_layout_tensors(out)
    expected = {**model.state_dict(), **dsl.state_dict()}
    assert set(tensors) == set(expected) and set(DSL_KEYS) <= set(tensors)
    for key, value in expected.items():  # the released key names, shapes and values
        assert tensors[key].shape == value.shape and torch.equal(tensors[key], value.float() if key in DSL_KEYS else value), key
    assert sorted(released_converter_glob(out)) == sorted(DSL_KEYS)
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"] == LLADA_AUTO_MAP
    assert config["auto_map"]["AutoModel"] == "GSAI-ML/LLaDA-8B-Instruct--modeling_llada.LLaDAModelLM"


def test_many_shards_round_trip(dsl_saved, tmp_path):
    out, model, dsl = dsl_saved
    copy = tmp_path / "sharded"
    shutil.copytree(out, copy)
    for f in copy.glob("model*.safetensors*"):
        f.unlink()
    state = released_layout_tensors(out)
    write_weights(state, copy, max_shard_size=200_000)
    shards = sorted(p.name for p in copy.glob("model-*.safetensors"))
    assert len(shards) > 2 and shards[0].endswith(f"-of-{len(shards):05d}.safetensors")
    again = released_layout_tensors(copy)
    assert all(torch.equal(again[k], state[k]) for k in state)
    m2, dsl2, _, _, _ = load_dsl_checkpoint(copy, device="cpu")  # and dslbench's loader reads it too
    assert all(torch.equal(m2.state_dict()[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(dsl2.state_dict()[k], v) for k, v in dsl.state_dict().items())


def test_adapt_output_is_in_the_released_layout(tiny_ckpt, tmp_path):
    from dslbench.training.loop import AdaptConfig, run_adapt

    out = tmp_path / "adapted"
    run_adapt(AdaptConfig(base=str(tiny_ckpt), out=str(out), objective="dsl", data="synth:8", max_steps=1, batch_size=2,
                          seq_len=48, response_len=8, warmup_steps=0, save_every=0, progress=False,
                          objective_options={"noise_dim": 8}))
    tensors = released_layout_tensors(out)
    assert set(DSL_KEYS) <= set(tensors) and "model.transformer.wte.weight" in tensors
    assert sorted(released_converter_glob(out)) == sorted(DSL_KEYS)
    assert json.loads((out / "config.json").read_text())["auto_map"] == LLADA_AUTO_MAP
    _, dsl, _, _, _ = load_dsl_checkpoint(out, device="cpu")
    assert torch.equal(dsl.state_dict()["converter.logit_bias"], tensors["converter.logit_bias"])
    mode = stat.S_IMODE((out / "model-00001-of-00001.safetensors").stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not safetensors' 0600: other users can read it


def test_auto_map_resolves_to_the_published_code_repository(tiny_ckpt, tmp_path):
    """transformers follows our auto_map to GSAI-ML/LLaDA-8B-Instruct (here a fake local hub cache
    holding a stand-in configuration_llada.py written for this test): the released scripts'
    ``AutoModel.from_pretrained(DIR, trust_remote_code=True)`` looks for the code there."""
    cache = tmp_path / "hub"
    snap = cache / "models--GSAI-ML--LLaDA-8B-Instruct" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (cache / "models--GSAI-ML--LLaDA-8B-Instruct" / "refs").mkdir()
    (cache / "models--GSAI-ML--LLaDA-8B-Instruct" / "refs" / "main").write_text("0" * 40)
    (snap / "configuration_llada.py").write_text(textwrap.dedent('''
        from transformers import PretrainedConfig

        class LLaDAConfig(PretrainedConfig):
            model_type = "llada"
            stand_in = True
    '''))
    code = textwrap.dedent(f'''
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained({str(tiny_ckpt)!r}, trust_remote_code=True)
        print(type(config).__name__, getattr(config, "stand_in", False), config.d_model, config.mask_token_id)
    ''')
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    config = json.loads((tiny_ckpt / "config.json").read_text())
    assert res.stdout.split() == ["LLaDAConfig", "True", str(config["d_model"]), str(config["mask_token_id"])]


def test_make_tiny_and_dream_write_the_same_layout(tmp_path):
    dream = make_tiny(tmp_path / "dream", family="dream")
    assert released_layout_tensors(dream)
    assert all("--" in v for v in json.loads((dream / "config.json").read_text())["auto_map"].values())
    model, _, _ = load_model(dream, device="cpu")
    assert model is not None


# ------------------------------------------------------------------------------------------------
# loading errors name the file (#21.6)


def _copy(tiny_ckpt, tmp_path, name="bad") -> Path:
    dst = tmp_path / name
    shutil.copytree(tiny_ckpt, dst)
    return dst


def _edit_config(ckpt: Path, **changes) -> None:
    raw = json.loads((ckpt / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            raw.pop(k, None)
        else:
            raw[k] = v
    (ckpt / "config.json").write_text(json.dumps(raw))


def test_truncated_shard_names_the_file(tiny_ckpt, tmp_path):
    ckpt = _copy(tiny_ckpt, tmp_path)
    shard = ckpt / "model-00001-of-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CheckpointFormatError, match=f"{shard}: not a readable safetensors file .*truncated"):
        load_model(ckpt, device="cpu")


def test_invalid_config_json_names_file_and_line(tiny_ckpt, tmp_path):
    ckpt = _copy(tiny_ckpt, tmp_path)
    (ckpt / "config.json").write_text('{\n  "d_model": 64,\n  oops\n}')
    with pytest.raises(CheckpointFormatError, match=rf"{ckpt / 'config.json'}: not a valid config.json .*line 3"):
        load_model(ckpt, device="cpu")
    (ckpt / "model.safetensors.index.json").write_text("[1, 2")
    _edit_config(_copy(tiny_ckpt, tmp_path, "idx"))
    (tmp_path / "idx" / "model.safetensors.index.json").write_text('{"weight_map": 3}')
    with pytest.raises(CheckpointFormatError, match="model.safetensors.index.json: no \"weight_map\""):
        load_model(tmp_path / "idx", device="cpu")


@pytest.mark.parametrize("changes, match", [
    ({"mask_token_id": None}, r"missing required field\(s\) mask_token_id \(the 8B defaults are not assumed\)"),
    ({"d_model": None, "n_layers": None}, r"missing required field\(s\) d_model, n_layers"),
    ({"mask_token_id": 126336}, r"mask_token_id=126336 is not a token id of the model: allowed 0\.\.805"),
    ({"eos_token_id": -1}, r"eos_token_id=-1 is not a token id"),
    ({"n_heads": 0}, r"n_heads=0 must be a positive integer"),
    ({"block_type": "sequential"}, r"LLaDA config: block_type='sequential' is not supported"),
])
def test_config_is_validated_before_any_weight_is_read(tiny_ckpt, tmp_path, changes, match):
    ckpt = _copy(tiny_ckpt, tmp_path)
    _edit_config(ckpt, **changes)
    with pytest.raises(CheckpointFormatError, match=rf"{ckpt / 'config.json'}: {match}"):
        load_model(ckpt, device="cpu")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="drops privileges in a forked child (POSIX only)")
def test_unreadable_checkpoint_is_permission_denied_not_missing(tiny_ckpt, tmp_path):
    """A checkpoint behind a folder the user cannot enter is reported as "permission denied",
    not as a missing directory (nor sent to the hub as an id). As root, the check runs in a child
    that has become ``nobody``, since root ignores permission bits."""
    fence = tmp_path / "fence"
    fence.mkdir()
    ckpt = _copy(tiny_ckpt, fence)
    fence.chmod(0o700 if os.geteuid() == 0 else 0o000)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 3
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            load_model(ckpt, device="cpu")
        except PermissionError as err:
            code = 0 if "permission denied" in str(err).lower() and str(ckpt) in str(err) else 4
        except BaseException:  # noqa: BLE001
            code = 5
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    fence.chmod(0o755)
    assert os.waitstatus_to_exitcode(status) == 0


def test_adapt_cli_on_a_broken_base_exits_2_with_the_file(tiny_ckpt, tmp_path, capsys):
    from dslbench.cli import main

    ckpt = _copy(tiny_ckpt, tmp_path)
    shard = ckpt / "model-00001-of-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:1000])
    args = ["adapt", "--base", str(ckpt), "--out", str(tmp_path / "out"), "--data", "synth:4", "--max-steps", "1",
            "--seq-len", "48", "--batch-size", "2", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(shard) in err and "truncated" in err
    _edit_config(ckpt, mask_token_id=None)
    assert main(args) == 2
    assert "config.json: missing required field(s) mask_token_id" in capsys.readouterr().err
