"""``dslbench leaderboard --executor ray``: the same cells, files and resume as the local executor,
on a local Ray cluster on CPU (one cluster shared by the module). Faults are injected with the
test-only ``DSLBENCH_FAULT_CELLS`` hook (a worker that dies, a cell that hangs until its driver
is killed). Also the executor-independent parts: --dry-run, a missing Ray refused, the
no-overwrite install."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dslbench.harness.run import DONE
from dslbench.cli import run_leaderboard
from dslbench.runs.config import MatrixConfigError, parse_config
from dslbench.runs.executors import FAULT_ENV, install_cell, parse_faults
from tests.test_report import summ_samples, write_fake_run

pytestmark = pytest.mark.usefixtures("stub_checkpoints")  # the stub evaluator's /ckpt/... paths

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "name": "ray",
    "limit": 2,
    "seed": 0,
    "budgets": [4],
    "tasks": ["dsl_summ_synth_{nfe}step", "dsl_repair_synth_random_10"],
    "models": [
        {"name": "LLaDA", "backend": "mdm_llada", "model_args": {"pretrained": "/ckpt/base"}},
        {"name": "LLaDA+EOS+Block", "backend": "mdm_llada",
         "model_args": {"pretrained": "/ckpt/base", "logits_eos_inf": True, "block_length": 32}},
    ],
}
QUIET = {"log": lambda s: None, "n_boot": 20}


def det_evaluate(model, model_args, tasks, out_dir, limit=None, seed=0, batch_size=1, force=False):
    """A stand-in for ``evaluate_cell`` whose numbers depend only on the cell (not on which
    process runs it or in what order): lm-eval-shaped files and ``done.json``."""
    per_task = {}
    for t in tasks:
        score = (len(t) + len(json.dumps(model_args, sort_keys=True))) % 17 / 17
        if t.startswith("dsl_summ"):
            per_task[t] = summ_samples([score, score / 2])
        else:
            per_task[t] = [{"fix_rate": [1, 4], "preserve_rate": [30, 36], "nfe": 1.0, "_key": f"p{i}"} for i in range(2)]
    write_fake_run(out_dir, model, model_args, per_task)
    (Path(out_dir) / DONE).write_text(json.dumps({"config": {"model": model}}))
    return {}


def _config(out: Path, **over):
    return parse_config({**CONFIG, **over}, out=out)


def _leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if ".partial" in p.name or ".old" in p.name]


# ----------------------------------------------------------------------------- no Ray needed
def test_dry_run_lists_pending_cells_and_their_cost(tmp_path):
    lines = []
    res = run_leaderboard(_config(tmp_path / "o", budgets=[4, 16], limit=3), evaluate=det_evaluate, dry_run=True,
                     log=lines.append)
    text = "\n".join(lines)
    assert res.ran == [] and not (tmp_path / "o" / "runs").exists()
    assert "6 pending cell(s)" in text
    assert "LLaDA @ NFE 16: dsl_summ_synth_16step | documents 3 | NFE 16 | forward passes 48" in text
    assert "LLaDA @ fixed budget: dsl_repair_synth_random_10 | documents 3 | task's own budget" in text
    assert "total: 18 documents, 120 budgeted forward passes (+ the fixed-budget tasks)" in text
    # finished cells are not listed
    run_leaderboard(_config(tmp_path / "o", budgets=[4, 16], limit=3), evaluate=det_evaluate, report=False, **QUIET)
    lines.clear()
    run_leaderboard(_config(tmp_path / "o", budgets=[4, 16], limit=3), evaluate=det_evaluate, dry_run=True, log=lines.append)
    assert lines[-1] == "dry run: nothing to do, every cell is finished" and len(lines) == 7  # + 6 "skipped"
    # the ray executor's dry run also shows what each cell asks the cluster for
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'dslbench[ray]')")
    models = [{**CONFIG["models"][0], "resources": {"num_gpus": 2}}, CONFIG["models"][1]]
    lines.clear()
    run_leaderboard(_config(tmp_path / "r", models=models), evaluate=det_evaluate, executor="ray", dry_run=True, log=lines.append)
    assert "  LLaDA @ NFE 4: dsl_summ_synth_4step | documents 2 | NFE 4 | forward passes 8 | resources {'num_gpus': 2}" in lines
    assert any(line.startswith("  LLaDA+EOS+Block @ NFE 4") and "resources default (1 GPU" in line for line in lines)


def test_ray_missing_is_refused_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MatrixConfigError, match=r"pip install 'dslbench\[ray\]'"):
        run_leaderboard(_config(tmp_path / "o"), evaluate=det_evaluate, executor="ray", **QUIET)
    assert not (tmp_path / "o").exists()


def test_resources_entry_validated(tmp_path):
    models = [{**CONFIG["models"][0], "resources": {"num_gpus": 1, "memory": 2e9}}]
    assert _config(tmp_path, models=models).models[0].resources == {"num_gpus": 1, "memory": 2e9}
    for bad, match in (({"gpus": 1}, "unknown key 'gpus'"), ({"num_gpus": -1}, "num_gpus=-1"), ([1], "mapping")):
        with pytest.raises(MatrixConfigError, match=match):
            _config(tmp_path, models=[{**CONFIG["models"][0], "resources": bad}])
    with pytest.raises(MatrixConfigError, match="processes must be an integer >= 1, got 0"):
        _config(tmp_path, models=[{**CONFIG["models"][0], "processes": 0}])
    with pytest.raises(ValueError, match="MODEL/CELL=exit"):
        parse_faults("LLaDA/nfe4=explode")
    assert parse_faults("A/nfe4=exit:1, B/fixed=hang") == {"A/nfe4": ("exit", 1), "B/fixed": ("hang", None)}


def test_install_never_overwrites_a_finished_cell(tmp_path):
    dest = tmp_path / "nfe4"
    first, second = tmp_path / ".nfe4.partial-1", tmp_path / ".nfe4.partial-2"
    for p, text in ((first, "first"), (second, "second")):
        p.mkdir()
        (p / DONE).write_text(text)
    assert install_cell(first, dest) is True
    assert install_cell(second, dest) is False  # a racing attempt finishing later is discarded
    assert (dest / DONE).read_text() == "first" and not second.exists()
    # an outdated cell (named by inode) is replaced, but only that one
    outdated = dest.stat().st_ino
    for text in ("third", "fourth"):
        p = tmp_path / f".nfe4.partial-{text}"
        p.mkdir()
        (p / DONE).write_text(text)
    assert install_cell(tmp_path / ".nfe4.partial-third", dest, replace_ino=outdated) is True
    assert install_cell(tmp_path / ".nfe4.partial-fourth", dest, replace_ino=outdated) is False
    assert (dest / DONE).read_text() == "third" and _leftovers(tmp_path) == []


def test_cli_dry_run_and_exit_status(tmp_path, capsys, monkeypatch):
    from dslbench.cli import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    argv = ["leaderboard", "--config", str(cfg), "--out", str(tmp_path / "o"), "--dry-run"]
    assert main(argv) == 0
    assert "4 pending cell(s)" in capsys.readouterr().err and not (tmp_path / "o").exists()
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main([*argv, "--executor", "ray"]) == 2
    assert "pip install 'dslbench[ray]'" in capsys.readouterr().err


@pytest.mark.slow
def test_data_parallel_inside_a_cell(tiny_ckpt, tmp_path):
    """``processes: 2``: the cell is evaluated by two torchrun ranks (gloo on CPU), rank 0 writes
    the files, the cell's bookkeeping stays in the caller; same leaderboard as one process."""
    raw = yaml.safe_load((ROOT / "baselines" / "tiny.yaml").read_text())
    raw.update(budgets=[4], limit=2, tasks=["dsl_summ_synth_{nfe}step"])
    raw["models"] = [m for m in raw["models"] if m["name"] == "LLaDA"]
    csv = {}
    for n in (1, 2):
        raw["models"][0]["processes"] = n
        out = tmp_path / f"p{n}"
        shutil.copytree(tiny_ckpt, out / "models" / "tiny-base-seed0")
        res = run_leaderboard(parse_config(raw, out=out), log=lambda s: None, n_boot=20)
        assert len(res.ran) == 1 and not list(out.rglob(".launch.json")) and _leftovers(out) == []
        csv[n] = (out / "leaderboard.csv").read_bytes()
    assert csv[2] == csv[1]


# ----------------------------------------------------------------------------- on a local Ray cluster
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'dslbench[ray]'; the dev extra has it)")
    # workers are started by the cluster with this environment: they must import tests/ and this tree
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), saved]))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False)
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


@pytest.mark.slow
def test_ray_and_local_write_the_same_leaderboard(ray_cluster, tiny_ckpt, tmp_path):
    """Real tiny models through lm-eval: two models evaluated concurrently by Ray give the
    byte-identical leaderboard.csv of the local executor; a rerun skips everything."""
    raw = yaml.safe_load((ROOT / "baselines" / "tiny.yaml").read_text())
    raw.update(budgets=[4], limit=2, tasks=["dsl_summ_synth_{nfe}step"])
    raw["models"] = [m for m in raw["models"] if m["name"] in ("LLaDA", "LLaDA+EOS+Block")]
    outs = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        shutil.copytree(tiny_ckpt, out / "models" / "tiny-base-seed0")
        lines = []
        res = run_leaderboard(parse_config(raw, out=out), executor=executor, log=lines.append, n_boot=50)
        assert len(res.ran) == 2 and res.failed == []
        assert sum("[done " in line for line in lines) == 2 and "[done 2/2 | running 0 | failed 0 | left 0" in lines[-2]
        outs[executor] = out
    assert (outs["ray"] / "leaderboard.csv").read_bytes() == (outs["local"] / "leaderboard.csv").read_bytes()
    assert (outs["ray"] / "logs" / "LLaDA" / "nfe4.log").read_text().startswith(">>> attempt 1 of LLaDA @ NFE 4")
    assert _leftovers(outs["ray"]) == []
    res = run_leaderboard(parse_config(raw, out=outs["ray"]), executor="ray", log=lambda s: None, n_boot=50)
    assert res.ran == [] and len(res.skipped) == 2


def test_killed_worker_is_retried(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "LLaDA/nfe4=exit:1")  # the first attempt's worker dies
    out = tmp_path / "o"
    res = run_leaderboard(_config(out), evaluate=det_evaluate, executor="ray", max_retries=1, **QUIET)
    assert res.failed == [] and len(res.ran) == 4
    log = (out / "logs" / "LLaDA" / "nfe4.log").read_text()
    assert log.count(">>> attempt ") == 2 and "<<< attempt 2: installed" in log
    assert _leftovers(out) == []
    ref = tmp_path / "local"
    run_leaderboard(_config(ref), evaluate=det_evaluate, **QUIET)
    assert (out / "leaderboard.csv").read_bytes() == (ref / "leaderboard.csv").read_bytes()
    # --force on Ray replaces every finished cell once (the outdated folder, named by inode)
    res = run_leaderboard(_config(out), evaluate=det_evaluate, executor="ray", force=True, **QUIET)
    assert len(res.ran) == 4 and res.skipped == [] and _leftovers(out) == []
    assert len(list((out / "runs" / "LLaDA" / "nfe4").rglob("results_*.json"))) == 1
    assert (out / "leaderboard.csv").read_bytes() == (ref / "leaderboard.csv").read_bytes()


def test_failing_cell_reported_others_finish_rerun_completes(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "LLaDA_EOS_Block/nfe4=exit")  # every attempt dies
    out, lines = tmp_path / "o", []
    res = run_leaderboard(_config(out), evaluate=det_evaluate, executor="ray", max_retries=1, log=lines.append, n_boot=20)
    assert [f.cell.label for f in res.failed] == ["LLaDA+EOS+Block @ NFE 4"] and len(res.ran) == 3
    failure = res.failed[0]
    assert failure.attempts == 2 and failure.log == out / "logs" / "LLaDA_EOS_Block" / "nfe4.log"
    assert "os._exit(1)" in failure.log.read_text()
    assert any("FAILED after 2 attempt(s)" in line and str(failure.log) in line for line in lines)
    assert not (out / "runs" / "LLaDA_EOS_Block" / "nfe4").exists() and not (out / "leaderboard.csv").exists()
    assert _leftovers(out) == []
    monkeypatch.delenv(FAULT_ENV)
    res = run_leaderboard(_config(out), evaluate=det_evaluate, executor="ray", **QUIET)
    assert [c.label for c in res.ran] == ["LLaDA+EOS+Block @ NFE 4"] and len(res.skipped) == 3
    assert (out / "leaderboard.csv").is_file()


_DRIVER = """
import sys
from tests.test_leaderboard_executors import _config, det_evaluate
from dslbench.cli import run_leaderboard
run_leaderboard(_config(__import__('pathlib').Path(sys.argv[1])), evaluate=det_evaluate, executor="ray",
           address=sys.argv[2], log=lambda s: print(s, flush=True), n_boot=20)
"""


def test_resume_after_the_driver_is_killed(ray_cluster, tmp_path):
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           FAULT_ENV: "LLaDA/fixed=hang"}
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER, str(out), ray_cluster], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hung = out / "logs" / "LLaDA" / "fixed.log"
    others = [out / "runs" / m / c for m, c in (("LLaDA", "nfe4"), ("LLaDA_EOS_Block", "nfe4"), ("LLaDA_EOS_Block", "fixed"))]
    deadline = time.monotonic() + 120
    while not (all((d / DONE).is_file() for d in others) and hung.is_file() and "hanging" in hung.read_text()):
        assert driver.poll() is None and time.monotonic() < deadline, "the driver did not get the cells going"
        time.sleep(0.5)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert not (out / "runs" / "LLaDA" / "fixed").exists() and not (out / "leaderboard.csv").exists()
    res = run_leaderboard(_config(out), evaluate=det_evaluate, executor="ray", **QUIET)
    assert [c.label for c in res.ran] == ["LLaDA @ fixed budget"] and len(res.skipped) == 3
    assert _leftovers(out) == []
    ref = tmp_path / "local"
    run_leaderboard(_config(ref), evaluate=det_evaluate, **QUIET)
    assert (out / "leaderboard.csv").read_bytes() == (ref / "leaderboard.csv").read_bytes()
