"""``dslbench leaderboard --config``: the matrix runner (plan, resume, --force, atomic cells,
placeholders) with a stub evaluator, the shipped configs, and one real tiny run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dslbench.harness.run import DONE
from dslbench.paths import baselines_dir
from dslbench.cli import run_leaderboard
from dslbench.runs.config import MatrixConfigError, load_config, parse_config, plan
from dslbench.runs.model_args import check_config
from tests.test_report import summ_samples, write_fake_run

pytestmark = pytest.mark.usefixtures("stub_checkpoints")  # the stub evaluator's /ckpt/... paths

CONFIG = {
    "name": "stub",
    "limit": 3,
    "seed": 0,
    "budgets": [4, 16],
    "tasks": ["dsl_summ_synth_{nfe}step", "dsl_repair_synth_random_10"],
    "models": [
        {"name": "LLaDA", "backend": "mdm_llada", "model_args": {"pretrained": "/ckpt/base"}},
        {"name": "LLaDA+EOS+Block", "backend": "mdm_llada",
         "model_args": {"pretrained": "/ckpt/base", "logits_eos_inf": True, "block_length": 32}},
    ],
}


class StubEvaluate:
    """Stands in for ``evaluate_cell``: writes lm-eval-shaped outputs and ``done.json``; can fail
    on a given call to simulate an interruption."""

    def __init__(self, fail_on: int | None = None):
        self.calls: list[tuple[str, dict, list[str], Path]] = []
        self.fail_on = fail_on

    def __call__(self, model, model_args, tasks, out_dir, limit=None, seed=0, batch_size=1, force=False, metadata=None):
        self.calls.append((model, model_args, tasks, Path(out_dir)))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            (Path(out_dir) / "model").mkdir(parents=True, exist_ok=True)
            raise KeyboardInterrupt("killed half-way")
        per_task = {}
        for t in tasks:
            if t.startswith("dsl_summ"):
                per_task[t] = summ_samples([float(len(self.calls))] * 3)
            else:
                per_task[t] = [{"fix_rate": [1, 4], "preserve_rate": [30, 36], "nfe": 1.0, "_key": f"p{i}"} for i in range(3)]
        write_fake_run(out_dir, model, model_args, per_task)
        (Path(out_dir) / DONE).write_text(json.dumps({"config": {"model": model}}))
        return {}


def _cfg(tmp_path, **over):
    raw = {**CONFIG, **over}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_plan_cells(tmp_path):
    cfg = load_config(_cfg(tmp_path), out=tmp_path / "out")
    cells = plan(cfg)
    assert [(c.model.name, c.budget, c.tasks) for c in cells] == [
        ("LLaDA", 4, ["dsl_summ_synth_4step"]), ("LLaDA", 16, ["dsl_summ_synth_16step"]),
        ("LLaDA", None, ["dsl_repair_synth_random_10"]),
        ("LLaDA+EOS+Block", 4, ["dsl_summ_synth_4step"]), ("LLaDA+EOS+Block", 16, ["dsl_summ_synth_16step"]),
        ("LLaDA+EOS+Block", None, ["dsl_repair_synth_random_10"]),
    ]
    assert cells[0].dir == tmp_path / "out" / "runs" / "LLaDA" / "nfe4"
    assert cells[3].dir.parent.name == "LLaDA_EOS_Block"
    check_config(cfg, cells)


@pytest.mark.parametrize("bad, match", [
    ({"models": []}, "models"),
    ({"tasks": []}, "tasks"),
    ({"budgets": []}, "no budgets"),
    ({"budgets": [0]}, "positive"),
    ({"colour": "red"}, "unknown key"),
    ({"models": [{"name": "A", "backend": "mdm_llada"}, {"name": "A", "backend": "dsl_llada"}]}, "used twice"),
])
def test_bad_configs(tmp_path, bad, match):
    path = _cfg(tmp_path, **bad)
    with pytest.raises(MatrixConfigError, match=match) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_unknown_task_and_placeholders_refused_before_running(tmp_path, monkeypatch):
    stub = StubEvaluate()
    with pytest.raises(MatrixConfigError, match="unknown dslbench task.*dsl_summ_nosuch_4step"):
        run_leaderboard(_cfg(tmp_path, tasks=["dsl_summ_nosuch_{nfe}step"]), out=tmp_path / "o", evaluate=stub)
    monkeypatch.delenv("DSLBENCH_TEST_CKPT", raising=False)
    models = [{"name": "X", "backend": "dsl_llada", "model_args": {"pretrained": "${DSLBENCH_TEST_CKPT}"}}]
    with pytest.raises(MatrixConfigError, match="'X'.*DSLBENCH_TEST_CKPT"):
        run_leaderboard(_cfg(tmp_path, models=models), out=tmp_path / "o", evaluate=stub)
    models[0]["model_args"]["pretrained"] = "<path to the DSL checkpoint>"
    with pytest.raises(MatrixConfigError, match="placeholder"):
        run_leaderboard(_cfg(tmp_path, models=models), out=tmp_path / "o", evaluate=stub)
    assert stub.calls == []
    monkeypatch.setenv("DSLBENCH_TEST_CKPT", "/ckpt/dsl")
    models[0]["model_args"]["pretrained"] = "${DSLBENCH_TEST_CKPT}"
    run_leaderboard(_cfg(tmp_path, models=models), out=tmp_path / "o", evaluate=stub, log=lambda s: None, n_boot=20)
    assert {c[1]["pretrained"] for c in stub.calls} == {"/ckpt/dsl"}


def test_tasks_with_their_own_limit_form_cells_of_their_own(tmp_path):
    tasks = ["dsl_summ_synth_{nfe}step", {"task": "dsl_gen_synth_{nfe}step", "limit": None},
             {"task": "dsl_repair_synth_random_10", "limit": 2}, {"task": "dsl_gen_prefix_{nfe}step", "limit": 3}]
    cfg = load_config(_cfg(tmp_path, tasks=tasks, budgets=[8], models=CONFIG["models"][:1],
                           metadata={"ppl_model": "tiny-gpt2:seed=0"}), out=tmp_path / "out")
    cells = plan(cfg)
    assert [(c.dir.name, c.limit, c.tasks) for c in cells] == [
        ("nfe8", 3, ["dsl_summ_synth_8step", "dsl_gen_prefix_8step"]),  # the config's own limit (3)
        ("nfe8-limitall", None, ["dsl_gen_synth_8step"]),
        ("fixed-limit2", 2, ["dsl_repair_synth_random_10"]),
    ]
    assert [c.label for c in cells] == ["LLaDA @ NFE 8", "LLaDA @ NFE 8 (all documents)", "LLaDA @ fixed budget (limit 2)"]
    check_config(cfg, cells)
    from dslbench.runs.matrix import cell_description
    from dslbench.runs.model_args import resolve_metadata

    desc = cell_description(cells[1], cfg)
    assert desc["limit"] is None and desc["metadata"] == {"ppl_model": "tiny-gpt2:seed=0"}  # as written
    resolved = resolve_metadata(cfg.metadata, cfg.output / "models", build=False)
    assert resolved["ppl_model"] == str(cfg.output / "models" / "tiny-gpt2-seed0")


@pytest.mark.parametrize("bad, match", [
    ({"tasks": [{"task": "dsl_gen_synth_{nfe}step"}]}, r"tasks\[0\]: expected \{task: NAME, limit: L\}"),
    ({"tasks": [{"task": "dsl_gen_synth_{nfe}step", "limit": -1}]}, "limit must be a positive number or null"),
    ({"metadata": ["ppl_model"]}, "'metadata' must be a mapping"),
])
def test_bad_task_limits_and_metadata(tmp_path, bad, match):
    with pytest.raises(MatrixConfigError, match=match):
        load_config(_cfg(tmp_path, **bad))


def test_resume_skip_force_and_atomic_cells(tmp_path):
    cfg, out = _cfg(tmp_path), tmp_path / "out"
    quiet = {"log": lambda s: None, "n_boot": 20}
    # killed half-way: the third cell dies; nothing of it is left as a finished cell
    stub = StubEvaluate(fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        run_leaderboard(cfg, out=out, evaluate=stub, **quiet)
    assert not (out / "runs" / "LLaDA" / "fixed").exists()
    assert not (out / "leaderboard.csv").exists()
    # run again: only the missing cells are evaluated
    stub = StubEvaluate()
    res = run_leaderboard(cfg, out=out, evaluate=stub, **quiet)
    assert [c.label for c in res.skipped] == ["LLaDA @ NFE 4", "LLaDA @ NFE 16"]
    assert len(res.ran) == 4 and len(stub.calls) == 4
    assert not list(out.rglob(".*.partial")) and not list(out.rglob(".*.old")) and not list(out.rglob("*.tmp*"))
    lb = pd.read_csv(out / "leaderboard.csv")
    assert len(lb) == 6 and set(lb["model"]) == {"LLaDA", "LLaDA+EOS+Block"}  # names from the config
    assert (out / "report.html").is_file() and (out / "plots" / "tradeoff.png").is_file()
    first = (out / "leaderboard.csv").read_bytes()
    # everything finished: nothing runs, the outputs are regenerated byte for byte
    stub = StubEvaluate()
    res = run_leaderboard(cfg, out=out, evaluate=stub, **quiet)
    assert stub.calls == [] and len(res.skipped) == 6
    assert (out / "leaderboard.csv").read_bytes() == first
    # a removed cell is redone alone
    shutil.rmtree(out / "runs" / "LLaDA_EOS_Block" / "nfe16")
    stub = StubEvaluate()
    run_leaderboard(cfg, out=out, evaluate=stub, **quiet)
    assert [c[2] for c in stub.calls] == [["dsl_summ_synth_16step"]]
    # a changed config (limit) makes its cells unfinished
    stub = StubEvaluate()
    run_leaderboard(_cfg(tmp_path, limit=5), out=out, evaluate=stub, **quiet)
    assert len(stub.calls) == 6
    # --force redoes every cell, replacing the old outputs (no duplicate results files)
    stub = StubEvaluate()
    res = run_leaderboard(_cfg(tmp_path, limit=5), out=out, evaluate=stub, force=True, **quiet)
    assert len(stub.calls) == 6 and res.skipped == []
    assert len(list((out / "runs" / "LLaDA" / "nfe4").rglob("results_*.json"))) == 1


def test_model_filter(tmp_path):
    stub = StubEvaluate()
    run_leaderboard(_cfg(tmp_path), out=tmp_path / "o", evaluate=stub, models=["LLaDA+EOS+Block"], log=lambda s: None, n_boot=20)
    assert len(stub.calls) == 3 and all(c[1].get("block_length") == 32 for c in stub.calls)
    with pytest.raises(MatrixConfigError, match="no model named Nope"):
        run_leaderboard(_cfg(tmp_path), out=tmp_path / "o", evaluate=stub, models=["Nope"])


def test_cli_leaderboard(tmp_path, monkeypatch, capsys):
    import dslbench.harness.run as run_mod
    from dslbench.cli import main

    stub = StubEvaluate()
    monkeypatch.setattr(run_mod, "evaluate_cell", stub)
    assert main(["leaderboard", "--config", str(_cfg(tmp_path)), "--out", str(tmp_path / "o")]) == 0
    assert len(stub.calls) == 6 and (tmp_path / "o" / "leaderboard.csv").is_file()
    assert "6 cell(s) evaluated, 0 already finished" in capsys.readouterr().out
    assert main(["leaderboard", "--config", str(_cfg(tmp_path)), "--out", str(tmp_path / "o")]) == 0
    assert "0 cell(s) evaluated, 6 already finished" in capsys.readouterr().out
    assert main(["leaderboard", "--config", str(_cfg(tmp_path, models=[])), "--out", str(tmp_path / "o")]) == 2
    assert "models" in capsys.readouterr().err


def test_shipped_configs():
    pub = load_config(baselines_dir() / "leaderboard.yaml")
    assert pub.budgets == [8, 16, 32, 64, 128]
    names = [m.name for m in pub.models]
    assert names[:6] == ["LLaDA", "LLaDA+EOS+Block", "MDM control (MDM-CPT)", "DSL-LLaDA-SDE",
                         "DSL-LLaDA-SDE (published accounting)", "Soft-mask"]
    by_name = {m.name: m.model_args for m in pub.models}
    # the paper's runs (published accounting) beside the strict default, same checkpoint
    assert by_name["DSL-LLaDA-SDE (published accounting)"]["accounting"] == "published"
    assert "accounting" not in by_name["DSL-LLaDA-SDE"]
    assert by_name["DSL-LLaDA-SDE (published accounting)"]["pretrained"] == by_name["DSL-LLaDA-SDE"]["pretrained"]
    # the few-step unmasking controls of issue #17 run on the control checkpoint
    controls = [m for m in pub.models if m.name.startswith("MDM control +")]
    assert {m.model_args.get("parallel", "fixed") for m in controls} == {"fixed", "threshold", "eb"}
    assert {m.model_args.get("remasking") for m in controls} >= {"entropy", "margin"}
    assert all(m.model_args["pretrained"] == "${DSLBENCH_MDM_CPT_CKPT}" for m in controls)
    assert names[-1] == "DiffusionGemma-26B-A4B-it"
    eos = pub.models[1].model_args
    assert eos["logits_eos_inf"] is True and eos["block_length"] == 32
    assert {m.backend for m in pub.models} == {"mdm_llada", "dsl_llada", "softmask_llada", "diffusiongemma"}
    cells = plan(pub)
    summ = {t for c in cells for t in c.tasks if t.startswith("dsl_summ")}
    assert summ == {f"dsl_summ_{d}_{n}step" for d in ("xsum", "cnndm", "pubmed", "arxiv") for n in pub.budgets}
    # the open-ended experiment as published: all 200 prompts / prefixes (their own limit), GPT-2-large,
    # the released DSL loop beside the LLaDA and LLaDA+EOS+Block rows
    gen = [c for c in cells if any(t.startswith("dsl_gen") for t in c.tasks)]
    assert {c.limit for c in gen} == {None} and {c.limit for c in cells if c not in gen} == {100}
    assert {t for c in gen for t in c.tasks} == {f"dsl_gen{p}_{n}step" for p in ("", "_prefix") for n in pub.budgets}
    assert pub.metadata == {"ppl_model": "gpt2-large"}
    released = by_name["DSL-SDE (released open-ended loop)"]
    assert (released["accounting"], released["numerics"], released["snr_schedule"]) == ("published", "released", "sensitive")
    # the adapted checkpoints are placeholders: refused, by name, until set
    with pytest.raises(MatrixConfigError, match="DSLBENCH_DSL_CKPT"):
        check_config(pub, cells)
    tiny = load_config(baselines_dir() / "tiny.yaml")
    assert str(tiny.output) == "results"
    assert tiny.metadata == {"ppl_model": "tiny-gpt2:seed=0"} and "dsl_gen_synth_{nfe}step" in tiny.tasks
    assert len({m.backend for m in tiny.models}) >= 2
    check_config(tiny, plan(tiny))  # every task exists, nothing to fill in


def test_real_tiny_matrix(tiny_ckpt, tmp_path):
    """Two backends (mdm_llada, dsl_llada) on the tiny model through lm-eval; then a resume."""
    raw = yaml.safe_load((baselines_dir() / "tiny.yaml").read_text())
    raw.update(budgets=[4], limit=2, tasks=["dsl_summ_synth_{nfe}step"])
    raw["models"] = [m for m in raw["models"] if m["name"] in ("LLaDA", "DSL-LLaDA-SDE")]
    out = tmp_path / "out"
    shutil.copytree(tiny_ckpt, out / "models" / "tiny-base-seed0")  # the cached tiny base (same seed)
    cfg = parse_config(raw, out=out)
    res = run_leaderboard(cfg, log=lambda s: None, n_boot=50)
    assert len(res.ran) == 2
    lb = pd.read_csv(out / "leaderboard.csv")
    assert list(lb["model"]) == ["DSL-LLaDA-SDE", "LLaDA"]
    assert list(lb["backend"]) == ["dsl_llada", "mdm_llada"]
    assert (lb["nfe"] <= 4).all() and (lb["n_samples"] == 2).all()
    res = run_leaderboard(parse_config(raw, out=out), log=lambda s: None, n_boot=50)
    assert res.ran == [] and len(res.skipped) == 2


def test_tiny_dg_spec_builds_a_tiny_diffusiongemma(tmp_path):
    """``tiny-dg:seed=N`` (baselines/tiny.yaml's DiffusionGemma row): checked without building,
    built on first use as a DiffusionGemma checkpoint with the tiny base's tokenizer, reused after."""
    from dslbench.runs.config import ModelSpec
    from dslbench.runs.model_args import resolve_model_args

    tiny = load_config(baselines_dir() / "tiny.yaml")
    row = next(m for m in tiny.models if m.backend == "diffusiongemma")
    assert row.model_args == {"pretrained": "tiny-dg:seed=0"}
    spec = ModelSpec("DG", "diffusiongemma", {"pretrained": "tiny-dg:seed=3"})
    where = tmp_path / "tiny-dg-seed3"
    assert resolve_model_args(spec, tmp_path, build=False) == {"pretrained": str(where)} and not where.exists()
    assert resolve_model_args(spec, tmp_path)["pretrained"] == str(where)
    assert json.loads((where / "config.json").read_text())["model_type"] == "diffusion_gemma"
    base = resolve_model_args(ModelSpec("B", "mdm_llada", {"pretrained": "tiny:seed=3"}), tmp_path)["pretrained"]
    from transformers import PreTrainedTokenizerFast

    vocab = [PreTrainedTokenizerFast.from_pretrained(str(p)).get_vocab() for p in (where, base)]
    assert vocab[0] == vocab[1]
    stamp = (where / "config.json").stat().st_mtime_ns
    resolve_model_args(spec, tmp_path)
    assert (where / "config.json").stat().st_mtime_ns == stamp  # built once


# ----------------------------------------------------------------------------- identity, validation, saving
def test_cell_identity_ignores_where_the_output_lives(tmp_path, monkeypatch):
    """Relative vs absolute --out, and a moved folder, redo nothing: ``tiny:seed=N`` is recorded
    as written, a checkpoint inside the output folder (as the demo has) relative to it."""
    monkeypatch.chdir(tmp_path)
    out = Path("rel") / "out"
    models = [{"name": "T", "backend": "mdm_llada", "model_args": {"pretrained": "tiny:seed=0"}},
              {"name": "Own", "backend": "mdm_llada", "model_args": {"pretrained": str(out / "models" / "own")}}]
    cfg = _cfg(tmp_path, models=models, tasks=["dsl_summ_synth_{nfe}step"])
    (out / "models" / "tiny-base-seed0").mkdir(parents=True)  # a cached tiny base: nothing is built
    (out / "models" / "tiny-base-seed0" / "config.json").write_text("{}")
    (out / "models" / "own").mkdir()
    quiet = {"log": lambda s: None, "report": False}
    stub = StubEvaluate()
    run_leaderboard(cfg, out=out, evaluate=stub, **quiet)
    assert len(stub.calls) == 4
    info = json.loads((out / "runs" / "T" / "nfe4" / "cell.json").read_text())
    assert info["model_args"] == {"pretrained": "tiny:seed=0"}
    assert set(info["versions"]) == {"dslbench", "lm_eval", "torch"} and "unknown" not in info["versions"].values()
    own = json.loads((out / "runs" / "Own" / "nfe4" / "cell.json").read_text())
    assert own["model_args"] == {"pretrained": "<output>/models/own"}
    stub = StubEvaluate()
    res = run_leaderboard(_cfg(tmp_path, models=[models[0], {**models[1], "model_args": {"pretrained": str(tmp_path / out / "models" / "own")}}],
                          tasks=["dsl_summ_synth_{nfe}step"]), out=tmp_path / "rel" / "out", evaluate=stub, **quiet)
    assert stub.calls == [] and len(res.skipped) == 4
    shutil.move(tmp_path / "rel" / "out", tmp_path / "moved")
    moved = [models[0], {**models[1], "model_args": {"pretrained": "moved/models/own"}}]
    stub = StubEvaluate()
    res = run_leaderboard(_cfg(tmp_path, models=moved, tasks=["dsl_summ_synth_{nfe}step"]), out=tmp_path / "moved", evaluate=stub, **quiet)
    assert stub.calls == [] and len(res.skipped) == 4
    # what does determine the numbers still does
    stub = StubEvaluate()
    run_leaderboard(_cfg(tmp_path, models=moved, tasks=["dsl_summ_synth_{nfe}step"], batch_size=4), out="moved", evaluate=stub, **quiet)
    assert len(stub.calls) == 4


@pytest.mark.parametrize("model, match", [
    ({"backend": "mdm_lladaa", "model_args": {"pretrained": "/ckpt/x"}},
     r"'Third': unknown backend 'mdm_lladaa'; choose one of: diffusiongemma, dsl_llada, mdm_llada, softmask_llada"),
    ({"backend": "mdm_llada", "model_args": {"pretrained": "/ckpt/x", "block_lenght": 32}},
     r"'Third': mdm_llada: unknown model arg\(s\) block_lenght\. Valid model args: .*block_length"),
    ({"backend": "dsl_llada", "model_args": {"pretrained": "/ckpt/x", "beta": 0}},
     r"'Third': model arg beta=0.0 is out of range; allowed: > 0"),
    ({"backend": "mdm_llada", "model_args": {"pretrained": "/ckpt/x", "remasking": "best"}},
     r"'Third': model arg remasking='best' is not allowed; choose one of: low_confidence, random"),
    ({"backend": "mdm_llada", "model_args": {"steps": 8}}, r"'Third': model_args needs pretrained"),
])
def test_every_model_is_validated_before_the_first_cell(tmp_path, model, match, capsys):
    from dslbench.cli import main

    cfg = _cfg(tmp_path, models=[*CONFIG["models"], {"name": "Third", **model}])
    stub = StubEvaluate()
    with pytest.raises(MatrixConfigError, match=match) as err:
        run_leaderboard(cfg, out=tmp_path / "o", evaluate=stub)
    assert str(cfg) in str(err.value) and stub.calls == []
    assert not list((tmp_path).rglob("*.partial"))
    assert main(["leaderboard", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Third" in lines[0] and "Traceback" not in lines[0]


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"seed": "x"}, {"limit": True}])
def test_bad_run_settings_are_refused(tmp_path, bad):
    with pytest.raises(MatrixConfigError, match=list(bad)[0]):
        load_config(_cfg(tmp_path, **bad))


def test_a_failed_cell_is_left_pending_with_one_line(tmp_path, monkeypatch, capsys):
    """A cell whose evaluation fails (here: its outputs did not save) is not finished: no
    .partial, no cell folder, exit 2 with one line; the next run evaluates it again."""
    import dslbench.harness.run as run_mod
    from dslbench.cli import main

    class SaveFails(StubEvaluate):
        def __call__(self, *args, **kwargs):
            super().__call__(*args, **kwargs)
            if len(self.calls) == 2:
                raise run_mod.CellSaveError("samples_x.jsonl: 1 sample record(s) for x, expected 3")

    stub = SaveFails()
    monkeypatch.setattr(run_mod, "evaluate_cell", stub)
    assert main(["leaderboard", "--config", str(_cfg(tmp_path)), "--out", str(tmp_path / "o"), "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "dslbench leaderboard: error: samples_x.jsonl: 1 sample record(s) for x, expected 3"
    assert (tmp_path / "o" / "runs" / "LLaDA" / "nfe4" / DONE).is_file()
    assert not (tmp_path / "o" / "runs" / "LLaDA" / "nfe16").exists()
    assert not list((tmp_path / "o").rglob("*.partial"))
    stub = StubEvaluate()
    monkeypatch.setattr(run_mod, "evaluate_cell", stub)
    assert main(["leaderboard", "--config", str(_cfg(tmp_path)), "--out", str(tmp_path / "o"), "--no-report"]) == 0
    assert [c[2] for c in stub.calls][0] == ["dsl_summ_synth_16step"] and len(stub.calls) == 5


def test_leaderboard_output_it_cannot_write_is_one_line(tmp_path, monkeypatch, capsys):
    import dslbench.harness.run as run_mod
    from dslbench.cli import main

    monkeypatch.setattr(run_mod, "evaluate_cell", StubEvaluate())
    (tmp_path / "afile").write_text("not a folder")
    assert main(["leaderboard", "--config", str(_cfg(tmp_path)), "--out", str(tmp_path / "afile" / "o")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("dslbench leaderboard: error: ") and str(tmp_path / "afile") in line


def _write_jsonl(path: Path, n: int) -> None:
    path.write_text("".join(json.dumps({"doc_id": i}) + "\n" for i in range(n)))


def test_check_saved_reads_the_files_back(tmp_path):
    from dslbench.harness.run import CellSaveError, check_saved

    res, samp = tmp_path / "results_d.json", tmp_path / "samples_t_d.jsonl"
    with pytest.raises(CellSaveError, match="did not write its results file"):
        check_saved(res, {"t": samp}, {"t": 3})
    res.write_text('{"results": {"t": {}}')  # cut short
    with pytest.raises(CellSaveError, match="unreadable results file"):
        check_saved(res, {"t": samp}, {"t": 3})
    res.write_text(json.dumps({"results": {"u": {}}}))
    with pytest.raises(CellSaveError, match="no results for task.* t"):
        check_saved(res, {"t": samp}, {"t": 3})
    res.write_text(json.dumps({"results": {"t": {}}}))
    with pytest.raises(CellSaveError, match="did not write the samples of t"):
        check_saved(res, {"t": samp}, {"t": 3})
    _write_jsonl(samp, 2)
    with pytest.raises(CellSaveError, match="2 sample record.* expected 3"):
        check_saved(res, {"t": samp}, {"t": 3})
    samp.write_text(samp.read_text() + '{"doc_id": 2')
    with pytest.raises(CellSaveError, match="unreadable samples file"):
        check_saved(res, {"t": samp}, {"t": 3})
    _write_jsonl(samp, 3)
    check_saved(res, {"t": samp}, {"t": 3})


def test_real_cell_whose_samples_did_not_save_is_not_done(tiny_ckpt, tmp_path, monkeypatch):
    """lm-eval catches the error writing a samples file and only logs it; the cell must not
    be marked done."""
    import errno

    import lm_eval.loggers.evaluation_tracker as tracker_mod

    from dslbench.harness.run import CellSaveError, evaluate_cell

    real_open = open

    def full_disk_open(file, mode="r", *args, **kwargs):
        if "samples_" in str(file) and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(tracker_mod, "open", full_disk_open, raising=False)
    out = tmp_path / "cell"
    with pytest.raises(CellSaveError, match=r"samples_dsl_summ_synth_4step_.*did not write the samples"):
        evaluate_cell("mdm_llada", {"pretrained": str(tiny_ckpt), "gen_length": 8}, ["dsl_summ_synth_4step"], out, limit=2)
    assert not (out / DONE).exists()
    monkeypatch.undo()
    evaluate_cell("mdm_llada", {"pretrained": str(tiny_ckpt), "gen_length": 8}, ["dsl_summ_synth_4step"], out, limit=2)
    assert (out / DONE).is_file()


def test_a_full_disk_while_writing_a_cell_names_the_file(tmp_path, monkeypatch, capsys):
    import dslbench.harness.run as run_mod
    from dslbench.cli import main

    real = Path.write_bytes  # what dslbench.fsio's atomic writers call

    def disk_full_on_cell_json(self, data):
        if self.name.startswith(".cell.json"):
            with open("/dev/full", "wb") as f:  # a real ENOSPC from the kernel (no file name in it)
                f.write(data)
                f.flush()
        return real(self, data)

    monkeypatch.setattr(run_mod, "evaluate_cell", StubEvaluate())
    monkeypatch.setattr(Path, "write_bytes", disk_full_on_cell_json)
    out = tmp_path / "o"
    assert main(["leaderboard", "--config", str(_cfg(tmp_path)), "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line == f"dslbench leaderboard: error: {out / 'runs' / 'LLaDA' / '.nfe4.partial' / 'cell.json'}: no space left on device"
    assert not list(out.rglob("*.partial")) and not list(out.rglob(".*.tmp"))
