"""The adaptation loop on a tiny CPU model: learning, frozen parameters, exact resume, atomic
checkpoints, output-directory rules, non-finite losses, and the CLI through lm_eval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dslbench.models.saving import read_weights
from dslbench.training.loop import (
    AdaptConfig,
    NonFiniteLossError,
    OutDirError,
    latest_checkpoint,
    run_adapt,
)

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    from dslbench.data.synth import make_summarization_examples

    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    rows = make_summarization_examples(8, seed=1, split="train")
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps({"prompt": r["document"][:120], "response": r["summary"][:60]}) + "\n")
    return path


def _cfg(base, out, objective="mdm", data=None, **kw) -> AdaptConfig:
    options = {"noise_dim": 16} if objective == "dsl" else {}
    options.update(kw.pop("objective_options", {}))
    defaults = dict(max_steps=10, batch_size=4, seq_len=96, response_len=16, warmup_steps=0, lr=3e-3,
                    save_every=5, progress=False, seed=0)
    defaults.update(kw)
    return AdaptConfig(base=str(base), out=str(out), objective=objective, data=str(data), objective_options=options,
                       **defaults)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_weights(path)


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------------------------
# learning and what is trained


@pytest.mark.parametrize("objective", ["mdm", "dsl"])
def test_twenty_steps_lower_the_loss_on_a_repeated_batch(objective, tiny_ckpt, pairs_file, tmp_path):
    out = tmp_path / objective
    # batch 8 = the whole 8-row file: every step sees the same rows.
    res = run_adapt(_cfg(tiny_ckpt, out, objective, pairs_file, max_steps=20, batch_size=8, save_every=0))
    first, last = sum(res.losses[:3]) / 3, sum(res.losses[-3:]) / 3
    assert last < 0.8 * first, res.losses
    assert res.tokens_per_s and res.tokens_per_s > 0

    base, final = _weights(tiny_ckpt), _weights(out)
    wte = "model.transformer.wte.weight"
    head = "model.transformer.ff_out.weight"
    assert not torch.equal(base[wte], final[wte])
    assert not torch.equal(base["model.transformer.blocks.0.q_proj.weight"], final["model.transformer.blocks.0.q_proj.weight"])
    cfg = json.loads((out / "adapt_config.json").read_text())
    assert cfg["steps"] == 20 and cfg["objective"] == objective
    log = [json.loads(line) for line in (out / "adapt_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 21))
    assert all({"loss", "lr", "tokens_per_s"} <= set(r) for r in log)

    if objective == "mdm":
        from dslbench.models.loading import load_model

        model, _, info = load_model(out)
        assert info.family == "llada"
        assert not torch.equal(base[head], final[head])  # the control trains its head
        assert not (out / "dsl_config.json").exists()
    else:
        from dslbench.diffusion.dsl import make_noise_embedding
        from dslbench.models.dsl_checkpoint import load_dsl_checkpoint

        assert torch.equal(base[head], final[head])  # output head frozen
        V = final["noise_embed.weight"].shape[0]
        assert torch.equal(final["noise_embed.weight"], make_noise_embedding(V, 16, 0))  # never trained
        W0 = torch.cat([base[wte][:V].T, base[wte][5:6].T], dim=1)  # init: base embeddings + mask row
        assert not torch.equal(final["converter.backbone_embedding.weight"], W0)
        assert float(final["converter.beta"]) != 2.0
        _, dsl, _, _, dcfg = load_dsl_checkpoint(out)
        assert dcfg["noise_dim"] == 16 and dcfg["steps"] == 20 and dcfg["objective"] == "dsl"
        assert dcfg["beta_train"] == pytest.approx(float(final["converter.beta"]))
        assert dcfg["recipe"]["lr"] == 3e-3
        assert "extras.dsl.noise_embed.weight" in cfg["frozen_parameters"]


# ------------------------------------------------------------------------------------------------
# resume


class _Crash(RuntimeError):
    pass


def _crash_at(step_to_crash: int):
    def hook(step, loss):
        if step == step_to_crash:
            raise _Crash(f"simulated kill at step {step}")
    return hook


def test_killed_run_resumes_to_identical_weights(tiny_ckpt, pairs_file, tmp_path):
    ref = run_adapt(_cfg(tiny_ckpt, tmp_path / "ref", "mdm", pairs_file))
    out = tmp_path / "killed"
    with pytest.raises(_Crash):
        run_adapt(_cfg(tiny_ckpt, out, "mdm", pairs_file), on_step_end=_crash_at(7))
    assert not (out / "config.json").exists()  # no final checkpoint from a killed run
    assert latest_checkpoint(out).name == "step-00000005"
    res = run_adapt(_cfg(tiny_ckpt, out, "mdm", pairs_file, resume=True))
    assert res.resumed_from == 5
    _assert_same(_weights(ref.out), _weights(out))
    assert res.losses == ref.losses[5:]
    # A finished run resumed again is a no-op.
    again = run_adapt(_cfg(tiny_ckpt, out, "mdm", pairs_file, resume=True))
    assert again.already_done


def test_dsl_five_plus_five_equals_ten(tiny_ckpt, pairs_file, tmp_path):
    run_adapt(_cfg(tiny_ckpt, tmp_path / "ref", "dsl", pairs_file))
    out = tmp_path / "split"
    run_adapt(_cfg(tiny_ckpt, out, "dsl", pairs_file, max_steps=5))
    assert json.loads((out / "dsl_config.json").read_text())["steps"] == 5
    run_adapt(_cfg(tiny_ckpt, out, "dsl", pairs_file, max_steps=10, resume=True))
    _assert_same(_weights(tmp_path / "ref"), _weights(out))
    assert json.loads((out / "dsl_config.json").read_text())["steps"] == 10


def test_crash_mid_save_leaves_previous_checkpoint(tiny_ckpt, pairs_file, tmp_path, monkeypatch):
    from accelerate import Accelerator

    original = Accelerator.save_state

    def broken(self, output_dir=None, **kw):
        if "step-00000004" in str(output_dir):
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"half")  # a torn write
            raise _Crash("disk full")
        return original(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", broken)
    out = tmp_path / "run"
    with pytest.raises(_Crash):
        run_adapt(_cfg(tiny_ckpt, out, "mdm", pairs_file, max_steps=4, save_every=2))
    ck = latest_checkpoint(out)
    assert ck.name == "step-00000002"
    assert json.loads((ck / "trainer_state.json").read_text())["step"] == 2
    assert load_file(str(ck / "model.safetensors"))  # intact
    assert not (out / "config.json").exists()
    monkeypatch.setattr(Accelerator, "save_state", original)
    run_adapt(_cfg(tiny_ckpt, out, "mdm", pairs_file, max_steps=4, save_every=2, resume=True))
    assert not list((out / "checkpoints").glob(".tmp-*"))  # the torn state was cleaned up
    assert (out / "config.json").is_file()


# ------------------------------------------------------------------------------------------------
# output directory and failures


def test_out_dir_rules(tiny_ckpt, pairs_file, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(OutDirError, match="not empty and holds no dslbench adapt run"):
        run_adapt(_cfg(tiny_ckpt, other, "mdm", pairs_file, max_steps=1))
    assert (other / "notes.txt").read_text() == "mine" and len(list(other.iterdir())) == 1

    out = tmp_path / "run"
    run_adapt(_cfg(tiny_ckpt, out, "mdm", pairs_file, max_steps=2, save_every=0))
    with pytest.raises(OutDirError, match="pass --resume"):
        run_adapt(_cfg(tiny_ckpt, out, "mdm", pairs_file, max_steps=2))
    with pytest.raises(OutDirError, match="batch_size: run has 4, now 2"):
        run_adapt(_cfg(tiny_ckpt, out, "mdm", pairs_file, max_steps=3, batch_size=2, resume=True))


def test_data_failing_after_the_run_file_does_not_lock_the_folder(tiny_ckpt, pairs_file, tmp_path, monkeypatch):
    """#21.7: a streamed dataset fails at its first batch, after adapt_run.json is written; that
    run wrote no resume state, so a new run (or a resume with other settings) starts afresh."""
    from dslbench.training.data import DataSpecError, StreamData

    def offline(self, k, rank=0, world=1):
        raise DataSpecError("--data hf:nobody/nothing: could not stream it from the Hugging Face Hub (offline)")

    monkeypatch.setattr(StreamData, "micro_batch", offline)
    out = tmp_path / "run"
    with pytest.raises(DataSpecError):
        run_adapt(_cfg(tiny_ckpt, out, "mdm", "hf:nobody/nothing", max_steps=2))
    assert (out / "adapt_run.json").is_file() and latest_checkpoint(out) is None
    run_adapt(_cfg(tiny_ckpt, out, "mdm", pairs_file, max_steps=2, save_every=1))  # no --resume needed
    assert json.loads((out / "adapt_run.json").read_text())["data"] == str(pairs_file)
    # a run killed after its first resume state is continued, not restarted, and its log is cut
    # back to that state: each step is logged exactly once
    with (out / "adapt_log.jsonl").open("a") as f:  # as if killed in step 4, after logging step 3
        f.write('{"step": 3, "loss": 1.0}\n{"step": 4, "lo')
    run_adapt(_cfg(tiny_ckpt, out, "mdm", pairs_file, max_steps=4, save_every=1, resume=True))
    rows = [json.loads(line) for line in (out / "adapt_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "event" not in r] == [1, 2, 3, 4]
    assert [r["step"] for r in rows if r.get("event") == "resume"] == [2]


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tiny_ckpt, pairs_file, tmp_path, monkeypatch):
    from dslbench.training.objectives import MDMObjective

    original = MDMObjective.loss
    calls = {"n": 0}

    def nan_at_third(self, module, batch, generator):
        calls["n"] += 1
        out = original(self, module, batch, generator)
        if calls["n"] == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(MDMObjective, "loss", nan_at_third)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 3.*step-00000002"):
        run_adapt(_cfg(tiny_ckpt, out, "mdm", pairs_file, max_steps=5, save_every=2))
    assert latest_checkpoint(out).name == "step-00000002"
    assert not (out / "config.json").exists()


def test_cli_argument_errors(tiny_ckpt, tmp_path, capsys):
    from dslbench.cli import main

    rc = main(["adapt", "--base", str(tiny_ckpt), "--objective", "xdlm", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "--objective 'xdlm' is not valid; allowed: dsl, mdm" in capsys.readouterr().err
    rc = main(["adapt", "--base", str(tiny_ckpt), "--objective", "mdm", "--data", str(tmp_path / "nope.jsonl"),
               "--out", str(tmp_path / "o"), "--max-steps", "1"])
    assert rc == 2
    assert "nope.jsonl" in capsys.readouterr().err
    rc = main(["adapt", "--base", str(tiny_ckpt), "--out", str(tmp_path / "o"), "--prompt-format", "xml"])
    assert rc == 2
    assert "--prompt-format 'xml' is not valid; allowed: plain, chat" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_end_to_end_checkpoint_loads_in_lm_eval(tiny_ckpt, tmp_path):
    out = tmp_path / "mdm-ckpt"
    cmd = [sys.executable, "-m", "dslbench.cli", "adapt", "--base", str(tiny_ckpt), "--objective", "mdm",
           "--data", "synth", "--max-steps", "5", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "wrote mdm checkpoint" in proc.stdout
    assert json.loads((out / "adapt_config.json").read_text())["steps"] == 5

    lm = [sys.executable, "-m", "lm_eval", "--model", "mdm_llada", "--model_args", f"pretrained={out}", "--tasks",
          "dsl_summ_synth_16step", "--limit", "2", "--output_path", str(tmp_path / "eval"), "--log_samples"]
    proc = subprocess.run(lm, capture_output=True, text=True, timeout=600, env=ENV, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "rouge1" in proc.stdout
    (samples,) = (tmp_path / "eval").rglob("samples_dsl_summ_synth_16step_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(rows) == 2 and all(r["nfe"] <= 16 for r in rows)
