"""A user's mistake or a full disk ends in one line naming the culprit, exit 2, no traceback:
broken local checkpoints of a leaderboard found before its first cell (all of them at once),
tokenizers without the mask token, non-finite or out-of-bounds model args, non-UTF-8 configs and
data files, and a disk that fills while ``dslbench adapt`` saves."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dslbench.runs.config import MatrixConfigError

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dslbench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _one_line(res: subprocess.CompletedProcess, command: str) -> str:
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.strip().splitlines() if line.startswith(f"dslbench {command}: error: ")]
    assert len(lines) == 1, res.stderr
    return lines[0]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _shard(ckpt: Path) -> Path:
    return sorted(ckpt.glob("*.safetensors"))[0]


def _truncate(file: Path, keep: int | None = None) -> None:
    size = file.stat().st_size
    with open(file, "r+b") as f:
        f.truncate(size - 100 if keep is None else keep)


def strip_mask_token(ckpt: Path, token: str = "<|mdm_mask|>") -> None:
    """The tokenizer files without the mask token (tokenizer.json's added token and vocabulary
    entry, tokenizer_config.json's mask_token); config.json still names its id."""
    path = ckpt / "tokenizer.json"
    tok = json.loads(path.read_text())
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["content"] != token]
    tok["model"]["vocab"].pop(token, None)
    path.write_text(json.dumps(tok))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (ckpt / name).is_file():
            cfg = json.loads((ckpt / name).read_text())
            cfg.pop("mask_token", None)
            (ckpt / name).write_text(json.dumps(cfg))


@pytest.fixture(scope="module")
def broken(tiny_ckpt, tmp_path_factory) -> dict[str, Path]:
    """A good copy of the tiny checkpoint and one copy per kind of damage."""
    root = tmp_path_factory.mktemp("broken")
    out = {"good": _copy(tiny_ckpt, root / "good")}
    _truncate(_shard(_copy(tiny_ckpt, root / "truncated")))
    _truncate(_shard(_copy(tiny_ckpt, root / "header")), keep=20)
    (_copy(tiny_ckpt, root / "noconfig") / "config.json").unlink()
    strip_mask_token(_copy(tiny_ckpt, root / "nomask"))
    shards = _copy(tiny_ckpt, root / "shard")
    index = json.loads((shards / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "model-00002-of-00002.safetensors"
    (shards / "model.safetensors.index.json").write_text(json.dumps(index))
    out.update({k: root / k for k in ("truncated", "header", "noconfig", "nomask", "shard")})
    out["missing"] = root / "never-written"
    return out


# ------------------------------------------------------------------------------------------------
# checkpoints, without loading them


def test_checkpoint_problems_find_each_damage(broken):
    from dslbench.models.preflight import checkpoint_problems

    assert checkpoint_problems(broken["good"], "mdm_llada") == []
    assert checkpoint_problems(broken["good"], "softmask_llada") == []

    def only(name: str, backend: str = "mdm_llada") -> str:
        problems = checkpoint_problems(broken[name], backend)
        assert len(problems) == 1, problems
        return problems[0]

    assert "truncated safetensors file" in only("truncated") and str(_shard(broken["truncated"])) in only("truncated")
    assert "its header alone needs" in only("header")
    assert only("noconfig") == f"{broken['noconfig']} has no config.json; it is not a checkpoint directory"
    assert "lists shard(s) that are missing" in only("shard") and "model-00002-of-00002" in only("shard")
    assert "the tokenizer has no mask token" in only("nomask") and str(broken["nomask"]) in only("nomask")
    assert only("missing") == f"checkpoint folder {broken['missing']} does not exist"
    assert "holds no DSL modules" in only("good", "dsl_llada")


def test_untrained_dsl_checkpoint_passes_and_its_stripped_copy_does_not(untrained_dsl_ckpt, tmp_path):
    from dslbench.models.preflight import checkpoint_problems

    assert checkpoint_problems(untrained_dsl_ckpt, "dsl_llada") == []
    strip_mask_token(_copy(untrained_dsl_ckpt, tmp_path / "dsl"))
    (problem,) = checkpoint_problems(tmp_path / "dsl", "dsl_llada")
    assert "the tokenizer has no mask token" in problem


def _config(tmp_path: Path, models: list[dict]) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"name": "edge", "limit": 2, "seed": 0, "budgets": [4],
                                    "tasks": ["dsl_summ_synth_{nfe}step"], "models": models}))
    return path


def test_leaderboard_reports_every_broken_checkpoint_before_the_first_cell(broken, tmp_path):
    """Six models, five of them broken (the good one first): one line names all five, no cell ran;
    a hub id is not checked (offline), and the good checkpoint is not reported."""
    names = ["good", "truncated", "noconfig", "missing", "nomask", "shard"]
    models = [{"name": n.title(), "backend": "mdm_llada", "model_args": {"pretrained": str(broken[n])}} for n in names]
    models.append({"name": "Hub", "backend": "mdm_llada", "model_args": {"pretrained": "someone/some-model"}})
    line = _one_line(_cli("leaderboard", "--config", str(_config(tmp_path, models)), "--out", str(tmp_path / "o"),
                          cwd=tmp_path), "leaderboard")
    for name in names[1:]:
        assert f"model {name.title()!r}: " in line, line
        assert str(broken[name]) in line
    assert "'Good'" not in line and "'Hub'" not in line
    assert not (tmp_path / "o" / "runs").exists()


def test_a_checkpoint_error_inside_a_cell_is_one_line(tmp_path, monkeypatch, capsys):
    """Whatever the pre-run check cannot see (a hub download, a file damaged while running) and
    the loader refuses ends as one line and exit 2, not a traceback and exit 1."""
    import dslbench.harness.run as run_mod
    from dslbench.cli import main
    from dslbench.models.loading import CheckpointFormatError

    def refuse(*args, **kwargs):
        raise CheckpointFormatError("/hub/cache/x/model-00001-of-00001.safetensors: not a readable safetensors file")

    monkeypatch.setattr(run_mod, "evaluate_cell", refuse)
    models = [{"name": "Hub", "backend": "mdm_llada", "model_args": {"pretrained": "someone/some-model"}}]
    assert main(["leaderboard", "--config", str(_config(tmp_path, models)), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("dslbench leaderboard: error: /hub/cache/x/model-00001-of-00001.safetensors: "
                       "not a readable safetensors file")


def test_model_args_beyond_the_checkpoints_context_are_refused_before_the_first_cell(broken, tmp_path):
    from dslbench.runs.config import load_config, plan
    from dslbench.runs.model_args import check_config

    good = str(broken["good"])
    models = [{"name": "Long", "backend": "mdm_llada", "model_args": {"pretrained": good, "gen_length": 1024}},
              {"name": "Wide", "backend": "mdm_llada", "model_args": {"pretrained": good, "max_length": 4096}},
              {"name": "Hot", "backend": "mdm_llada", "model_args": {"pretrained": good, "temperature": float("inf")}},
              {"name": "Many", "backend": "mdm_llada", "model_args": {"pretrained": good, "nfe": 10**9}}]
    config = load_config(_config(tmp_path, models), tmp_path / "o")
    with pytest.raises(MatrixConfigError) as err:
        check_config(config, plan(config))
    text = str(err.value)
    assert (f"model 'Long': mdm_llada: model arg gen_length=1024 leaves no room for a prompt within the model's "
            f"context (max_sequence_length=1024 in {good}/config.json)") in text
    assert (f"model 'Wide': mdm_llada: model arg max_length=4096 exceeds the model's context "
            f"(max_sequence_length=1024 in {good}/config.json)") in text
    assert "model 'Hot': model arg temperature=inf is not finite" in text
    assert "model 'Many': model arg nfe=1000000000 is too large; allowed: at most 1048576" in text


# ------------------------------------------------------------------------------------------------
# model args


@pytest.mark.parametrize("given, match", [
    ("temperature=inf", r"model arg temperature=inf is not finite; allowed: a finite number >= 0"),
    ("cfg=-inf", r"model arg cfg=-inf is not finite"),
    ("remdm_eta=Infinity", r"model arg remdm_eta=inf is not finite"),
    ("gen_length=2000000", r"model arg gen_length=2000000 is too large; allowed: at most 1048576"),
    ("batch_size=100000000", r"model arg batch_size=100000000 is too large"),
    ("nfe=99999999999", r"model arg nfe=99999999999 is too large"),
])
def test_non_finite_floats_and_huge_counts_are_refused(given, match):
    from dslbench.harness.args import parse_args
    from dslbench.harness.base import COMMON_ARGS
    from dslbench.harness.mdm_backend import MDMLLaDA

    name, _, value = given.partition("=")
    with pytest.raises(ValueError, match=match):
        parse_args("mdm_llada", {**COMMON_ARGS, **MDMLLaDA.SAMPLER_ARGS}, {name: value})


def test_every_float_arg_refuses_inf_and_seeds_stay_unbounded():
    from dslbench.harness.args import convert
    from dslbench.harness.base import COMMON_ARGS
    from dslbench.harness.diffusiongemma_backend import DIFFUSIONGEMMA_ARGS
    from dslbench.harness.dsl_backend import DSLLLaDA
    from dslbench.harness.mdm_backend import MDMLLaDA
    from dslbench.harness.softmask_backend import SoftMaskLLaDA

    specs = {**COMMON_ARGS, **MDMLLaDA.SAMPLER_ARGS, **DSLLLaDA.SAMPLER_ARGS, **SoftMaskLLaDA.SAMPLER_ARGS,
             **DIFFUSIONGEMMA_ARGS}
    floats = [n for n, s in specs.items() if s.kind is float]
    assert {"temperature", "cfg", "beta", "noise_scale", "scale"} <= set(floats)
    for name in floats:
        assert not specs[name].allow_inf
        for value in ("inf", "-inf", float("inf")):
            with pytest.raises(ValueError, match=f"model arg {name}=-?inf is not finite"):
                convert(name, specs[name], value)
    assert convert("seed", COMMON_ARGS["seed"], 2**40) == 2**40


def test_backend_refuses_counts_beyond_its_context(tiny_ckpt):
    from dslbench.harness.mdm_backend import MDMLLaDA

    where = f"max_sequence_length=1024 in {tiny_ckpt}/config.json"
    with pytest.raises(ValueError, match=r"gen_length=1024 leaves no room for a prompt within the model's context "
                                         r"\(" + where.replace(".", r"\.") + r"\)"):
        MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},gen_length=1024", {"device": "cpu"})
    with pytest.raises(ValueError, match=r"max_length=2048 exceeds the model's context"):
        MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},max_length=2048", {"device": "cpu"})
    with pytest.raises(ValueError, match=r"block_length=64 leaves no room for a prompt within max_length=64"):
        MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},max_length=64,block_length=64,gen_length=32",
                                        {"device": "cpu"})
    ok = MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},max_length=64,gen_length=32", {"device": "cpu"})
    assert ok.max_length == 64


def test_backends_refuse_a_tokenizer_without_the_mask_token(broken):
    from dslbench.harness.mdm_backend import MDMLLaDA
    from dslbench.models.loading import CheckpointFormatError

    with pytest.raises(CheckpointFormatError, match=f"{broken['nomask']}: the tokenizer has no mask token: "
                                                    "mask_token_id=5 of config.json is not a token"):
        MDMLLaDA.create_from_arg_string(f"pretrained={broken['nomask']}", {"device": "cpu"})


def test_dream_tokenizer_without_the_mask_token_is_refused(tmp_path):
    from dslbench.models.loading import CheckpointFormatError, load_model
    from dslbench.models.tiny import make_tiny

    ckpt = make_tiny(tmp_path / "dream", seed=0, family="dream")
    strip_mask_token(ckpt)
    with pytest.raises(CheckpointFormatError, match="the tokenizer has no mask token"):
        load_model(ckpt, device="cpu")


# ------------------------------------------------------------------------------------------------
# files that are not UTF-8


def test_non_utf8_leaderboard_config_names_file_line_and_byte(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_bytes(b"name: edge\nlimit: 2\n# caf\xe9 models\nbudgets: [4]\n")
    line = _one_line(_cli("leaderboard", "--config", str(cfg), cwd=tmp_path), "leaderboard")
    assert line == (f"dslbench leaderboard: error: {cfg}, line 3, byte 25 of the file: not UTF-8 (byte 0xe9: "
                    "invalid continuation byte); a leaderboard config must be UTF-8: re-save it, e.g. "
                    "iconv -f LATIN1 -t UTF-8")


def _adapt_args(base, out, data) -> list[str]:
    return ["adapt", "--base", str(base), "--out", str(out), "--data", str(data), "--objective", "mdm",
            "--max-steps", "2", "--batch-size", "2", "--seq-len", "48", "--response-len", "8", "--save-every", "1",
            "--warmup-steps", "0", "--no-progress", "--device", "cpu"]


@pytest.mark.parametrize("name, content, bad, line", [
    ("pairs.jsonl", b'{"prompt": "a", "response": "b"}\n{"prompt": "\xff", "response": "c"}\n', b"\xff", 2),
    ("notes.txt", b"first paragraph\n\nsecond \xc3(\n", b"\xc3", 3),
])
def test_non_utf8_adapt_data_names_file_line_and_byte(tiny_ckpt, tmp_path, name, content, bad, line):
    byte = content.index(bad)
    data = tmp_path / name
    data.write_bytes(content)
    err = _one_line(_cli(*_adapt_args(tiny_ckpt, tmp_path / "out", data), cwd=tmp_path), "adapt")
    assert err.startswith(f"dslbench adapt: error: {data}, line {line}, byte {byte} of the file: not UTF-8"), err
    assert "an --data file must be UTF-8" in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------
# adapt: a tokenizer without the mask token, a full disk


def test_adapt_refuses_a_base_without_the_mask_token(broken, tmp_path):
    err = _one_line(_cli(*_adapt_args(broken["nomask"], tmp_path / "out", "synth:8"), cwd=tmp_path), "adapt")
    assert err.startswith(f"dslbench adapt: error: {broken['nomask']}: the tokenizer has no mask token"), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 1152 vs 1040"),
    OSError(errno.ENOSPC, "No space left on device"),
], ids=["torch-unexpected-pos", "oserror-enospc"])
def test_adapt_on_a_full_disk_names_the_path(tiny_ckpt, tmp_path, monkeypatch, capsys, failure):
    """What torch raises when the disk fills mid-save (no disk-usage probe faked: a short write
    is a full disk), and a bare ENOSPC that names no file: one line with the resume state's path."""
    from accelerate import Accelerator

    from dslbench.cli import main

    def full(self, output_dir=None, **kw):
        raise failure

    monkeypatch.setattr(Accelerator, "save_state", full)
    assert main(_adapt_args(tiny_ckpt, tmp_path / "run", "synth:8")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dslbench adapt: error: {tmp_path / 'run' / 'checkpoints' / '.tmp-step-00000001'}: "
                   "no space left on device"], err


def test_adapt_final_checkpoint_on_a_full_disk_names_the_path(tiny_ckpt, tmp_path, monkeypatch, capsys):
    import safetensors.torch

    from dslbench.cli import main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    args = _adapt_args(tiny_ckpt, tmp_path / "run", "synth:8")
    args[args.index("--save-every") + 1] = "0"
    args[args.index("--max-steps") + 1] = "1"
    assert main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("dslbench adapt: error: ") and line.endswith(": no space left on device"), line
    assert str(tmp_path / "run") in line


def test_diffusiongemma_needs_no_mask_token(tmp_path):
    """Uniform-state noise: a DiffusionGemma checkpoint's tokenizer is checked to load, never for a
    mask token; a LLaDA checkpoint named with the diffusiongemma backend is refused."""
    pytest.importorskip("transformers", minversion="5.24")
    from dslbench.models.preflight import checkpoint_problems
    from dslbench.models.tiny import make_tiny

    ckpt = make_tiny(tmp_path / "dg", seed=0, family="diffusiongemma")
    strip_mask_token(ckpt)
    assert checkpoint_problems(ckpt, "diffusiongemma") == []
    _truncate(_shard(ckpt))
    (problem,) = checkpoint_problems(ckpt, "diffusiongemma")
    assert "truncated safetensors file" in problem
    llada = make_tiny(tmp_path / "llada", seed=0)
    (problem,) = checkpoint_problems(llada, "diffusiongemma")
    assert "this backend loads only DiffusionGemma checkpoints" in problem
