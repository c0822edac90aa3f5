"""A cell records what actually ran (issue #26, point 4): a task's generation kwargs over the
model args (``cell.json``'s ``effective`` block, the report's labels), lm-eval's ``--gen_kwargs``
and ``--limit`` as cells of their own, and a ``leaderboard.csv`` that does not depend on where
the output folder is or which folder the report is written from."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dslbench.cli import run_leaderboard
from dslbench.harness.run import DONE
from dslbench.metrics.sample_stats import attach_stats
from dslbench.report.build import build_report
from dslbench.report.load import load_runs
from dslbench.runs.effective import effective
from tests.test_leaderboard_runner import CONFIG, StubEvaluate, _cfg
from tests.test_report import summ_samples, write_fake_run


def _with_kwargs(results: Path, gen_kwargs: dict | None = None, limit=None, task_nfe: dict | None = None) -> Path:
    """lm-eval's records of what ran, as a real results file has them: each task's generation
    kwargs (``--gen_kwargs`` merged in), ``config.gen_kwargs`` and ``config.limit``."""
    data = json.loads(results.read_text())
    for task in data["results"]:
        nfe = int(re.search(r"_(\d+)step$", task).group(1)) if re.search(r"_(\d+)step$", task) else None
        kw = {"until": [], "gen_length": 64, "return_stats": True, **({"nfe": nfe} if nfe else {})}
        data["configs"][task] = {"generation_kwargs": {**kw, **(task_nfe or {}), **(gen_kwargs or {})}}
    data["config"]["gen_kwargs"] = gen_kwargs
    data["config"]["limit"] = limit
    results.write_text(json.dumps(data))
    return results


def _records(n: int, **stats) -> list[dict]:
    samples = summ_samples([1.0] * n)
    for s in samples:
        s["_resp"] = attach_stats("out", {"backend": "mdm_llada", "nfe": 8, "gen_tokens": 64, **stats})
    return samples


# ----------------------------------------------------------------------------- the effective block
def test_effective_block_names_the_overridden_model_arg(tmp_path):
    res = write_fake_run(tmp_path / "r", "mdm_llada", {"pretrained": "/ckpt/a", "nfe": 32, "cfg": 0},
                         {"dsl_summ_synth_4step": _records(3, gen_length=64, steps=4, block_length=64)})
    _with_kwargs(res, limit=3)
    eff = effective(res, {"pretrained": "/ckpt/a", "nfe": 32, "cfg": 0})
    task = eff["tasks"]["dsl_summ_synth_4step"]
    assert task["overridden"] == {"nfe": {"model_arg": 32, "used": 4}}  # cfg: no task sets it
    assert task["nfe_budget"] == 4 and task["gen_length"] == 64 and task["steps"] == 4
    assert task["n_samples"] == 3 and eff["limit"] == 3 and eff["gen_kwargs"] == {}


def test_effective_block_reads_the_recorded_length(tmp_path):
    """The samples' records win over what the task asked (max_gen_toks is the length unless
    gen_length is given); a model arg equal to the task's value is no override."""
    res = write_fake_run(tmp_path / "r", "mdm_llada", {"pretrained": "/ckpt/a", "gen_length": 48},
                         {"dsl_summ_synth_4step": _records(2, gen_length=48)})
    data = json.loads(res.read_text())
    data["configs"]["dsl_summ_synth_4step"] = {"generation_kwargs": {"nfe": 4, "max_gen_toks": 48}}
    res.write_text(json.dumps(data))
    task = effective(res, {"pretrained": "/ckpt/a", "gen_length": 48})["tasks"]["dsl_summ_synth_4step"]
    assert task["gen_length"] == 48 and "overridden" not in task


class KwargsStub(StubEvaluate):
    """The stub evaluator, with the task's generation kwargs and the samples' records that
    lm-eval and the backend write."""

    def __call__(self, model, model_args, tasks, out_dir, limit=None, seed=0, batch_size=1, force=False, metadata=None):
        super().__call__(model, model_args, tasks, out_dir, limit=limit, seed=seed, batch_size=batch_size, force=force)
        for res in Path(out_dir).rglob("results_*.json"):
            _with_kwargs(res, limit=limit)
        return {}


def test_runner_cell_json_carries_the_effective_values_and_still_resumes(tmp_path):
    models = [{"name": "LLaDA", "backend": "mdm_llada", "model_args": {"pretrained": "/ckpt/base", "nfe": 32}}]
    cfg = _cfg(tmp_path, models=models, tasks=["dsl_summ_synth_{nfe}step"])
    stub = KwargsStub()
    res = run_leaderboard(cfg, out=tmp_path / "out", evaluate=stub, log=lambda s: None, n_boot=20)
    info = json.loads((tmp_path / "out/runs/LLaDA/nfe4/cell.json").read_text())
    assert info["model_args"] == {"pretrained": "/ckpt/base", "nfe": 32}  # the identity as configured
    task = info["effective"]["tasks"]["dsl_summ_synth_4step"]
    assert task["overridden"] == {"nfe": {"model_arg": 32, "used": 4}} and task["nfe_budget"] == 4
    assert info["effective"]["limit"] == CONFIG["limit"]
    # the report never shows the ignored value as if it ran
    cells = pd.read_csv(tmp_path / "out" / "leaderboard.csv", keep_default_na=False)
    assert set(cells["model_args"]) == {"nfe=4 (task overrides model arg 32)", "nfe=16 (task overrides model arg 32)"}
    # resume: the effective block is no part of the identity
    n = len(stub.calls)
    again = run_leaderboard(cfg, out=tmp_path / "out", evaluate=stub, log=lambda s: None, n_boot=20)
    assert len(stub.calls) == n and len(again.skipped) == 2


def test_derived_display_name_leaves_out_an_overridden_arg(tmp_path):
    res = write_fake_run(tmp_path / "r", "mdm_llada", {"pretrained": "/ckpt/a", "nfe": 32, "cfg": 1},
                         {"dsl_summ_synth_4step": _records(2, gen_length=64)})
    _with_kwargs(res)
    row = load_runs([tmp_path / "r"]).cells.iloc[0]
    assert row["model"] == "mdm_llada(cfg=1)"  # not nfe=32: it never ran
    assert row["model_args"] == "cfg=1,nfe=4 (task overrides model arg 32)"
    assert row["nfe_budget"] == 4


# ----------------------------------------------------------------------------- --gen_kwargs, --limit
def test_gen_kwargs_override_is_a_cell_of_its_own(tmp_path):
    args = {"pretrained": "/ckpt/a"}
    plain = write_fake_run(tmp_path / "a", "mdm_llada", args, {"dsl_summ_synth_4step": _records(2, gen_length=64)},
                           timestamp=1.0)
    _with_kwargs(plain, limit=2)
    forced = write_fake_run(tmp_path / "b", "mdm_llada", args, {"dsl_summ_synth_4step": _records(2, gen_length=64)},
                            timestamp=2.0)
    _with_kwargs(forced, gen_kwargs={"nfe": 8}, limit=2)
    loaded = load_runs([tmp_path / "a", tmp_path / "b"])
    assert not loaded.warnings  # nothing merged away
    rows = loaded.cells.set_index("model_args")
    assert sorted(rows.index) == ["", "--gen_kwargs nfe=8"]
    assert rows.loc["--gen_kwargs nfe=8", "nfe_budget"] == 8  # what ran, not the task name's 4
    assert rows.loc["", "nfe_budget"] == 4


def test_limit_splits_cells_and_is_named_only_then(tmp_path):
    args = {"pretrained": "/ckpt/a"}
    for name, limit, n, ts in (("a", 2, 2, 1.0), ("b", 3, 3, 2.0)):
        res = write_fake_run(tmp_path / name, "mdm_llada", args, {"dsl_summ_synth_4step": _records(n, gen_length=64)},
                             timestamp=ts)
        _with_kwargs(res, limit=limit)
    one = load_runs([tmp_path / "a"]).cells
    assert list(one["model_args"]) == [""]  # a single --limit: no label (a leaderboard's usual case)
    both = load_runs([tmp_path / "a", tmp_path / "b"])
    assert not both.warnings
    assert sorted(zip(both.cells["model_args"], both.cells["n_samples"])) == [("--limit 2", 2), ("--limit 3", 3)]


# ----------------------------------------------------------------------------- cwd-free leaderboard.csv
def test_leaderboard_csv_does_not_depend_on_the_folder(tmp_path, monkeypatch):
    """A relative output folder with a checkpoint inside it: lm-eval records the checkpoint
    relative to where the runner ran; the CSV regenerated from a copy elsewhere is the same."""
    work = tmp_path / "work"
    (work / "REF" / "models" / "ck").mkdir(parents=True)
    monkeypatch.chdir(work)
    models = [{"name": "LLaDA", "backend": "mdm_llada", "model_args": {"pretrained": "REF/models/ck"}}]
    run_leaderboard(_cfg(tmp_path, models=models), out="REF", evaluate=KwargsStub(), log=lambda s: None, n_boot=20)
    info = json.loads((work / "REF/runs/LLaDA/nfe4/cell.json").read_text())
    assert info["model_args"]["pretrained"] == "<output>/models/ck"
    original = (work / "REF" / "leaderboard.csv").read_bytes()
    assert b"REF/models" not in original and b",ck," in original

    shutil.copytree(work / "REF", tmp_path / "elsewhere" / "COPY")
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    copy = tmp_path / "elsewhere" / "COPY"
    build_report(sorted(p.parent for p in (copy / "runs").rglob("cell.json")), copy, n_boot=20)
    assert (copy / "leaderboard.csv").read_bytes() == original


def test_runner_still_writes_done_before_install(tmp_path):
    """The effective block is written into the partial folder, never into a cell without done.json."""
    stub = KwargsStub(fail_on=1)
    with pytest.raises(KeyboardInterrupt):
        run_leaderboard(_cfg(tmp_path), out=tmp_path / "out", evaluate=stub, log=lambda s: None, n_boot=20)
    assert not any((tmp_path / "out" / "runs").rglob("cell.json"))
    assert not any((tmp_path / "out" / "runs").rglob(DONE))
