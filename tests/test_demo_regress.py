"""The embedded default end to end (smoke-sized) and the regression check built on it."""

from __future__ import annotations

import json

import pytest

from dslbench.demo import run_demo
from dslbench.regress import compare, failed, run_regress


@pytest.fixture(scope="module")
def smoke_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    logs: list[str] = []
    result = run_demo(str(out), preset="smoke", log=logs.append)
    return out, result, logs


def test_demo_writes_leaderboard_plots_and_report(smoke_demo):
    out, result, _ = smoke_demo
    cells = result.report.loaded.cells
    assert {"LLaDA (base)", "MDM-CPT (control)", "DSL-LLaDA-SDE", "Soft-mask",
            "DiffusionGemma (uniform, from scratch)"} <= set(cells["model"])
    assert {"summarization", "repair"} <= set(cells["family"])
    for name in ("leaderboard.csv", "report.md", "report.html", "timings.csv"):
        assert (out / name).is_file()
    from tests.test_report_layout import assert_report_layout

    assert_report_layout((out / "report.html").read_text())  # the page `dslbench report` writes
    pngs = list((out / "plots").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    summ = cells[cells["family"] == "summarization"]
    assert (summ["nfe"] <= summ["nfe_budget"]).all()  # measured, within the budget


def test_second_run_reuses_models_and_cells(smoke_demo):
    out, _, _ = smoke_demo
    before = {p.name: p.stat().st_mtime_ns for p in (out / "models").iterdir()}
    logs: list[str] = []
    run_demo(str(out), preset="smoke", log=logs.append)
    assert not any("pre-training" in line or "adapting" in line for line in logs)
    assert all("finished, skipped" in line for line in logs if line.startswith("["))
    assert {p.name: p.stat().st_mtime_ns for p in (out / "models").iterdir()} == before


def test_same_seed_same_csv_bytes(smoke_demo, tmp_path):
    out, _, _ = smoke_demo
    # Re-evaluate every cell from the cached models: identical tokens, metrics and CSV bytes.
    first = (out / "leaderboard.csv").read_bytes()
    run_demo(str(out), preset="smoke", log=lambda s: None, force=True)
    assert (out / "leaderboard.csv").read_bytes() == first


def test_regress_passes_then_fails_on_a_patched_sampler(smoke_demo, tmp_path, monkeypatch, capsys):
    out, _, _ = smoke_demo
    expected = tmp_path / "expected.json"
    assert run_regress(str(out), expected=expected, update=True, preset="smoke") == 0
    assert json.loads(expected.read_text())
    assert run_regress(str(out), expected=expected, preset="smoke") == 0

    import dslbench.harness.mdm_backend as mdm_backend

    real = mdm_backend.mdm_generate

    def patched(*args, **kwargs):  # a deliberately changed sampler: hot sampling, random commit order
        kwargs.update(remasking="random", temperature=5.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(mdm_backend, "mdm_generate", patched)
    lines: list[str] = []
    assert run_regress(str(out), expected=expected, preset="smoke", log=lines.append) == 1
    text = "\n".join(lines)
    assert "FAILED" in text and "expected" in text and "measured" in text and "tolerance" in text


def test_compare_verdicts():
    table = compare({"m | t | rouge1": 40.0, "m | t | nfe": 16.0, "m | t | words": 10.0},
                    {"m | t | rouge1": 35.0, "m | t | nfe": 16.0, "m | t | seq_rep_2": 0.1})
    verdict = dict(zip(table["metric"], table["verdict"]))
    assert verdict == {"m | t | nfe": "ok", "m | t | rouge1": "REGRESSION", "m | t | seq_rep_2": "new (not in expectations)",
                       "m | t | words": "MISSING"}
    assert failed(table)
    assert not failed(compare({"m | t | rouge1": 40.0}, {"m | t | rouge1": 40.5}))  # within 1.0


def test_demo_control_rows_run_on_the_control_checkpoint(tmp_path):
    from dataclasses import replace

    from dslbench.demo import CONTROLS, DEMO_CONTROL, PRESETS, matrix_config

    paths = {"init": tmp_path / "init", "base": tmp_path / "base", "mdm": tmp_path / "mdm"}
    assert PRESETS["demo"].controls == (DEMO_CONTROL,) and DEMO_CONTROL in CONTROLS
    assert set(PRESETS["regress"].controls) == set(CONTROLS)  # regress covers every new path
    cfg = matrix_config(PRESETS["regress"], paths, tmp_path / "out")
    rows = {m.name: m for m in cfg.models if m.name in CONTROLS}
    assert set(rows) == set(CONTROLS)
    assert all(m.backend == "mdm_llada" and m.model_args["pretrained"] == str(paths["mdm"]) for m in rows.values())
    assert {m.model_args.get("parallel", "fixed") for m in rows.values()} == {"fixed", "threshold", "eb"}
    with pytest.raises(ValueError, match="demo control 'nope'"):
        matrix_config(replace(PRESETS["demo"], controls=("nope",)), paths, tmp_path / "out")


def test_diffusiongemma_row_is_trained_with_the_rows_compute(smoke_demo):
    """On in every preset; the row's checkpoint has the LLaDA rows' width and depth and was trained
    on the same data and batch for the steps of base + one adaptation (its adaptation record)."""
    from dslbench.demo import PRESETS

    assert all(cfg.diffusiongemma for cfg in PRESETS.values())
    out, _, _ = smoke_demo
    cfg = PRESETS["smoke"]
    (dg,) = (out / "models").glob("uniform-*")
    (base,) = (out / "models").glob("base-*")
    model = json.loads((dg / "config.json").read_text())
    assert model["model_type"] == "diffusion_gemma" and model["canvas_length"] == cfg.response_len
    assert (model["text_config"]["hidden_size"], model["text_config"]["num_hidden_layers"]) == (cfg.d_model, cfg.n_layers)
    trained, pretrained = (json.loads((p / "adapt_config.json").read_text()) for p in (dg, base))
    assert trained["objective"] == "uniform" and trained["steps"] == cfg.pretrain_steps + cfg.adapt_steps
    assert trained["data"] == pretrained["data"] and trained["recipe"] == pretrained["recipe"]  # same batch, lr, lengths


def test_cli_demo_leaves_the_diffusiongemma_row_out_on_request(monkeypatch, tmp_path):
    import dslbench.demo as demo
    from dslbench.cli import main

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda out, preset, **over: calls.append((preset, over)))
    assert main(["demo", "--out", str(tmp_path), "--no-diffusiongemma"]) == 0
    assert main(["demo", "--out", str(tmp_path), "--preset", "smoke"]) == 0
    assert calls == [("demo", {"seed": 0, "diffusiongemma": False}), ("smoke", {"seed": 0})]


def test_outcome_line_never_names_the_untrained_reference_row():
    import pandas as pd

    from dslbench.demo import winners

    rows = [
        {"model": "Untrained (random init)", "family": "summarization", "nfe_budget": 8, "rouge1": 2.0, "seq_rep_2": 0.01},
        {"model": "DSL-LLaDA-SDE", "family": "summarization", "nfe_budget": 8, "rouge1": 30.0, "seq_rep_2": 0.2},
        {"model": "Soft-mask", "family": "summarization", "nfe_budget": 8, "rouge1": 31.0, "seq_rep_2": 0.3},
    ]
    rows += [{"model": m, "family": "repair", "corruption": "random", "corruption_rate": 0.1, "fix_rate": f, "preserve_rate": k}
             for m, f, k in (("Untrained (random init)", 90.0, 99.0), ("DSL-LLaDA-SDE", 30.0, 50.0))]
    line = winners(pd.DataFrame(rows))
    assert "Untrained" not in line
    assert "best ROUGE-1 Soft-mask (31.0)" in line and "least 2-gram repetition DSL-LLaDA-SDE (0.20)" in line
    assert "best fix DSL-LLaDA-SDE (30.0%)" in line
