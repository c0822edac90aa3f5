"""``dslbench report``: loading lm-eval outputs, stable CSVs, best marks, paired statistics,
bad inputs, plots and the self-contained HTML report."""

from __future__ import annotations

import json
import math
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dslbench.metrics.summary import SUMMARY_METRICS
from dslbench.report import stats, tables
from dslbench.report.build import build_report
from dslbench.report.load import ID_COLUMNS, ReportInputError, ReportWarning, load_runs, parse_task
from dslbench.report.render import html_table, markdown_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REAL_TASKS = ["dsl_summ_synth_4step", "dsl_summ_synth_16step", "dsl_repair_synth_random_10"]


# ----------------------------------------------------------------------------- fake lm-eval outputs
def write_fake_run(out_dir, backend: str, model_args, per_task: dict[str, list[dict]], date: str = "2026-01-01T00-00-00.000001",
                   timestamp: float = 1.0, model_dir: str = "model") -> Path:
    """Files laid out and shaped like lm-eval's ``--output_path --log_samples`` output.

    ``per_task``: task -> one dict of metric values per sample (pairs as [hits, total]); a
    ``_key`` entry sets the document id, a ``_resp`` entry the logged response.
    """
    d = Path(out_dir) / model_dir
    d.mkdir(parents=True, exist_ok=True)
    results, n_samples = {}, {}
    for task, samples in per_task.items():
        names = [k for k in samples[0] if not k.startswith("_")]
        agg = {"alias": task}
        for k in names:
            vals = [s[k] for s in samples]
            if isinstance(vals[0], list):
                agg[f"{k},none"] = 100.0 * sum(v[0] for v in vals) / sum(v[1] for v in vals)
            else:
                agg[f"{k},none"] = float(np.mean(vals))
            agg[f"{k}_stderr,none"] = 0.0
        results[task] = agg
        n_samples[task] = {"original": 100, "effective": len(samples)}
        with open(d / f"samples_{task}_{date}.jsonl", "w", encoding="utf-8") as f:
            for i, s in enumerate(samples):
                resp = s.get("_resp", "out")
                rec = {"doc_id": i, "doc": {"id": s.get("_key", f"doc-{i}")}, "target": "t", "arguments": {},
                       "resps": [[resp]], "filtered_resps": [resp], "filter": "none", "metrics": names,
                       "doc_hash": f"h{i}", **{k: s[k] for k in names}}
                f.write(json.dumps(rec) + "\n")
    data = {"results": results, "group_subtasks": {}, "configs": {t: {} for t in per_task}, "n-samples": n_samples,
            "config": {"model": backend, "model_args": model_args, "limit": None}, "date": timestamp}
    (d / f"results_{date}.json").write_text(json.dumps(data))
    return d / f"results_{date}.json"


def summ_samples(rouge1: list[float], words: list[float] | None = None) -> list[dict]:
    out = []
    for i, r in enumerate(rouge1):
        s = {m: 0.0 for m in SUMMARY_METRICS}
        s.update(rouge1=r, rouge2=r / 2, rougeL=r, words=(words or [10.0] * len(rouge1))[i], ref_words=20.0, nfe=16.0,
                 gen_tokens=32.0, seconds_per_sample=0.1, tokens_per_forward=[32.0, 16.0], _key=f"doc-{i}")
        s["length_ratio"] = s["words"] / 20.0
        out.append(s)
    return out


@pytest.fixture()
def two_fake_runs(tmp_path):
    a = tmp_path / "runA"
    b = tmp_path / "runB"
    write_fake_run(a, "dsl_llada", {"pretrained": "/ckpt/dsl"}, {"dsl_summ_xsum_16step": summ_samples([3, 5, 2, 8, 6])})
    write_fake_run(b, "mdm_llada", "pretrained=/ckpt/base,logits_eos_inf=True,block_length=32",
                   {"dsl_summ_xsum_16step": summ_samples([1, 5, 4, 4, 3])})
    return a, b


# ----------------------------------------------------------------------------- real tiny lm-eval outputs
@pytest.fixture(scope="module")
def real_runs(tiny_ckpt, tmp_path_factory):
    """Two mdm_llada variants (standing in for two backends) through lm-eval, 3 documents."""
    from dslbench.harness.run import evaluate_cell

    root = tmp_path_factory.mktemp("runs")
    evaluate_cell("mdm_llada", {"pretrained": str(tiny_ckpt)}, REAL_TASKS, root / "llada", limit=3)
    evaluate_cell("mdm_llada", {"pretrained": str(tiny_ckpt), "logits_eos_inf": True, "block_length": 32},
                  REAL_TASKS, root / "eos_block", limit=3)
    return root / "llada", root / "eos_block"


def test_task_names_parse():
    assert parse_task("dsl_summ_xsum_16step") == {"family": "summarization", "dataset": "xsum", "nfe_budget": 16,
                                                  "corruption": "", "corruption_rate": None}
    assert parse_task("dsl_repair_semantic_30")["dataset"] == "wikitext"
    r = parse_task("dsl_repair_synth_random_10")
    assert (r["family"], r["dataset"], r["corruption"], r["corruption_rate"]) == ("repair", "synth", "random", 10)
    assert parse_task("gsm8k")["family"] == "other"


def test_load_real_lm_eval_outputs(real_runs):
    loaded = load_runs(real_runs)
    cells, samples = loaded.cells, loaded.samples
    assert loaded.warnings == []
    assert list(cells.columns[: len(ID_COLUMNS) + 1]) == ID_COLUMNS + ["n_samples"]
    assert len(cells) == 2 * len(REAL_TASKS)
    assert set(cells["model"]) == {"mdm_llada", "mdm_llada(block_length=32,logits_eos_inf=true)"}
    assert set(cells["checkpoint"]) == {"tiny"}
    summ = cells[cells["family"] == "summarization"]
    for m in SUMMARY_METRICS + ("nfe", "gen_tokens", "tokens_per_forward", "seconds_per_sample"):
        assert summ[m].notna().all(), m
    assert sorted(summ["nfe_budget"].unique()) == [4, 16]
    assert (summ["nfe"] <= summ["nfe_budget"]).all()
    rep = cells[cells["family"] == "repair"]
    assert rep[["fix_rate", "preserve_rate"]].notna().all().all()
    # per-sample rows: 3 documents per cell, their means give lm-eval's aggregates back
    assert len(samples) == 3 * len(cells)
    for _, cell in cells.iterrows():
        s = samples[(samples["model"] == cell["model"]) & (samples["task"] == cell["task"])]
        assert len(s) == 3
        if cell["family"] == "summarization":
            assert s["rouge1"].mean() == pytest.approx(cell["rouge1"])
            assert s["words"].mean() == pytest.approx(cell["words"])
            assert s["tokens_per_forward_num"].sum() / s["tokens_per_forward_den"].sum() == pytest.approx(cell["tokens_per_forward"])
            # pooled as published, and the Newsroom means over the non-empty outputs only
            pooled = s["adjacent_rep_pooled_num"].sum() / s["adjacent_rep_pooled_den"].sum()
            assert pooled == pytest.approx(cell["adjacent_rep_pooled"])
            assert s["compression"].dropna().mean() == pytest.approx(cell["compression"])
            assert not s["response"].str.contains("dslbench-stats").any()
        else:  # per-passage means (as published), pooled beside them
            assert s["fix_rate"].mean() == pytest.approx(cell["fix_rate"])
            assert 100 * s["fix_rate_pooled_num"].sum() / s["fix_rate_pooled_den"].sum() == pytest.approx(cell["fix_rate_pooled"])
            assert cell["repair_protocol"] == "published" and (s["repair_protocol"] == "published").all()


def test_report_from_real_runs(real_runs, tmp_path):
    out = tmp_path / "report"
    rep = build_report(real_runs, out, n_boot=200)
    for name in ("leaderboard.csv", "samples.parquet", "paired.csv", "pareto.csv", "report.md", "report.html"):
        assert (out / name).is_file(), name
    pngs = sorted((out / "plots").glob("*.png"))
    assert {p.name for p in pngs} == {"tradeoff.png", "rouge1_vs_words.png", "pareto.png", "repair.png"}
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC and b"IEND" in data[-12:]
    assert pd.read_parquet(out / "samples.parquet").shape[0] == 18
    md = (out / "report.md").read_text()
    assert "Headline: summarization at NFE 16" in md
    assert "published, not reproduced" in md
    assert "Paired comparisons" in md and "mdm_llada(block_length=32,logits_eos_inf=true)" in md
    for p in pngs:
        assert f"(plots/{p.name})" in md
    html = (out / "report.html").read_text()
    _assert_self_contained(html, n_images=len(pngs))
    assert not list(out.rglob("*.tmp*")), "atomic writes leave no temporary files"
    assert rep.warnings == []


def _assert_self_contained(html: str, n_images: int) -> None:
    srcs = re.findall(r'src="([^"]*)"', html)
    assert len(srcs) == n_images
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in html and "url(" not in html and "@import" not in html
    # one inline script (sorting / filtering), nothing loaded: no src, links only to the page's own sections
    assert "<script src" not in html and html.count("<script>") <= 1
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', html))
    import base64

    for s in srcs:
        assert base64.b64decode(s.split(",", 1)[1])[:8] == PNG_MAGIC
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")


def test_regeneration_is_byte_identical(real_runs, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_report(real_runs, a, n_boot=100)
    build_report(list(reversed(real_runs)), b, n_boot=100)  # input order does not matter for the tables
    for name in ("leaderboard.csv", "paired.csv", "pareto.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    c = tmp_path / "c"
    build_report(real_runs, c, n_boot=100)
    for name in ("report.md", "report.html", "plots/tradeoff.png", "plots/pareto.png"):
        assert (a / name).read_bytes() == (c / name).read_bytes(), name


def test_paired_outputs_carry_holm_columns(two_fake_runs, tmp_path):
    build_report(two_fake_runs, tmp_path / "r", n_boot=50)
    header = (tmp_path / "r" / "paired.csv").read_text().split("\n")[0].split(",")
    assert header[-3:] == ["sign_p_holm", "wilcoxon_p_holm", "verdict"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| sign p | Wilcoxon p | sign p (Holm) | Wilcoxon p (Holm) | verdict |" in md


def test_leaderboard_csv_format(two_fake_runs, tmp_path):
    build_report(two_fake_runs, tmp_path / "r", n_boot=50)
    text = (tmp_path / "r" / "leaderboard.csv").read_text()
    lines = text.split("\n")
    assert "\r" not in text and text.endswith("\n")
    header = lines[0].split(",")
    assert header[: len(ID_COLUMNS) + 4] == ID_COLUMNS + ["n_samples", "rouge1", "rouge2", "rougeL"]
    # sorted by model within a task; floats with 4 decimals; empty cells for missing values
    assert lines[1].startswith("summarization,xsum,,,16,dsl_llada,dsl_llada,,dsl,dsl_summ_xsum_16step,5,4.8000,2.4000,")
    assert lines[2].startswith("summarization,xsum,,,16,\"mdm_llada(block_length=32,logits_eos_inf=true)\",mdm_llada,"
                               "\"block_length=32,logits_eos_inf=true\",base,dsl_summ_xsum_16step,5,3.4000,")


# ----------------------------------------------------------------------------- best values
def test_best_values_marked():
    cells = pd.DataFrame({
        "family": "summarization", "dataset": ["xsum"] * 3 + ["cnndm"] * 2, "nfe_budget": 16,
        "model": ["A", "B", "C", "A", "B"], "checkpoint": "",
        "rouge1": [10.0, 12.0, 12.0, 5.0, 4.0], "rouge2": [1.0, 1.0, 1.0, 2.0, 1.0], "rougeL": [1.0, 2.0, 3.0, 1.0, 1.0],
        "words": [10.0, 20.0, 30.0, 5.0, 6.0], "length_ratio": [0.5, 1.2, 1.5, 0.9, 1.05],
        "adjacent_rep": [0.1, 0.05, 0.2, 0.3, 0.3], "seq_rep_4": 0.0, "degenerate": [0.0, 0.1, 0.0, 0.0, 0.2],
        "short_output": [0.2, 0.0, 0.0, 0.0, 0.0], "nfe": 16.0,
    })
    values, best, budget = tables.headline_table(cells, 16)
    assert budget == 16
    assert list(values["model"]) == ["A", "B", "A", "B", "C"]  # cnndm first, then xsum
    flags = {(r.dataset, r.model): best.iloc[i] for i, r in enumerate(values.itertuples())}
    assert flags[("xsum", "B")]["ROUGE-1"] and flags[("xsum", "C")]["ROUGE-1"] and not flags[("xsum", "A")]["ROUGE-1"]
    assert flags[("cnndm", "A")]["ROUGE-1"] and not flags[("cnndm", "B")]["ROUGE-1"]
    assert not any(flags[k]["ROUGE-2"] for k in flags if k[0] == "xsum")  # all equal: nothing to mark
    assert flags[("xsum", "B")]["adjacent rep"] and not flags[("xsum", "A")]["adjacent rep"]
    assert flags[("xsum", "B")]["length ratio"]  # |1.2 - 1| < |0.5 - 1|
    assert flags[("cnndm", "B")]["length ratio"]  # 1.05 closer to 1 than 0.9
    assert not best["words"].any() and not best["measured NFE"].any()
    assert flags[("xsum", "A")]["degenerate"] and flags[("xsum", "C")]["degenerate"]
    md = markdown_table(values, best)
    assert "| xsum | B | **12.00** |" in md and "| xsum | A | 10.00 |" in md
    html = html_table(values, best)
    assert '<td class="best"><b>12.00</b></td>' in html
    # budget fallback: the closest one run
    assert tables.pick_budget(cells.assign(nfe_budget=32), 16) == 32


def test_pareto_front():
    pts = pd.DataFrame({"nfe": [4.0, 8.0, 16.0, 16.0, 32.0], "rouge1": [1.0, 3.0, 2.0, 4.0, 4.0]})
    assert list(tables.pareto_front(pts)) == [True, True, False, True, False]


# ----------------------------------------------------------------------------- paired statistics
A = [3.0, 5.0, 2.0, 8.0, 6.0]
B = [1.0, 5.0, 4.0, 4.0, 3.0]  # differences 2, 0, -2, 4, 3


def test_sign_test_by_hand():
    assert stats.sign_test(A, B) == (3, 1, pytest.approx(2 * (1 + 4) / 16))  # 0.625; the tie is dropped
    assert stats.sign_test([1, 2, 3, 4, 5], [0, 0, 0, 0, 0])[2] == pytest.approx(2 / 32)
    assert stats.sign_test([1, 1], [1, 1]) == (0, 0, 1.0)


def test_wilcoxon_by_hand():
    # |d| = 2, 2, 4, 3 -> ranks 1.5, 1.5, 4, 3; W+ = 1.5 + 4 + 3 = 8.5; n = 4
    w, p = stats.wilcoxon_signed_rank(A, B)
    assert w == 8.5
    var = 4 * 5 * 9 / 24 - (2**3 - 2) / 48
    z = (abs(8.5 - 5.0) - 0.5) / math.sqrt(var)
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert stats.wilcoxon_signed_rank([1, 1], [1, 1]) == (0.0, 1.0)
    # the hand-written formula (zeros dropped, average ranks, tie + continuity correction) as the
    # oracle of the scipy call, on data with ties and zeros
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 6, size=40).astype(float), rng.integers(0, 6, size=40) + 0.5 * rng.integers(0, 2, size=40)
    d = x - y
    d = d[d != 0]
    n = d.size
    _, counts = np.unique(np.abs(d), return_counts=True)
    from scipy.stats import rankdata

    w_plus = rankdata(np.abs(d))[d > 0].sum()
    var = n * (n + 1) * (2 * n + 1) / 24 - (counts**3 - counts).sum() / 48
    z = max(0.0, (abs(w_plus - n * (n + 1) / 4) - 0.5) / math.sqrt(var))
    assert stats.wilcoxon_signed_rank(x, y) == (w_plus, pytest.approx(math.erfc(z / math.sqrt(2))))


def test_sign_test_matches_binomial_sum():
    # oracle: min(1, 2 * P[Bin(n, 1/2) <= min(n+, n-)]) summed by hand
    for pos, neg in ((0, 7), (2, 9), (5, 5), (6, 5), (13, 1)):
        n, k = pos + neg, min(pos, neg)
        want = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
        assert stats.sign_test([1] * pos + [0] * neg, [0] * pos + [1] * neg) == (pos, neg, pytest.approx(want))


def test_bootstrap_ci_by_hand():
    mean, lo, hi = stats.paired_bootstrap_ci(A, B, n_boot=4, seed=7)
    assert mean == pytest.approx(1.4)
    d = np.array(A) - np.array(B)
    idx = np.random.default_rng(7).integers(0, 5, size=(4, 5))
    means = d[idx].mean(axis=1)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert stats.paired_bootstrap_ci(A, B, n_boot=500, seed=1) == stats.paired_bootstrap_ci(A, B, n_boot=500, seed=1)
    assert stats.paired_bootstrap_ci(A, B, n_boot=500, seed=1) != stats.paired_bootstrap_ci(A, B, n_boot=500, seed=2)
    assert stats.paired_bootstrap_ci([2, 3, 4], [1, 2, 3]) == (1.0, 1.0, 1.0)
    assert stats.paired_bootstrap_ci([2.5], [1]) == (1.5, 1.5, 1.5)
    assert all(math.isnan(v) for v in stats.paired_bootstrap_ci([], []))
    # the hand-written resampling as the oracle, at the report's default size
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=30), rng.normal(size=30)
    means = (x - y)[np.random.default_rng(0).integers(0, 30, size=(2000, 30))].mean(axis=1)
    assert stats.paired_bootstrap_ci(x, y)[1:] == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), abs=1e-12)
    with pytest.raises(ValueError):
        stats.paired_bootstrap_ci([1, 2], [1])


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.04, 0.5 -> x4, x3, x2, x1 = 0.04, 0.06, 0.08, 0.5; monotone; order kept
    assert list(stats.holm([0.04, 0.5, 0.01, 0.02])) == pytest.approx([0.08, 0.5, 0.04, 0.06])
    # step-down keeps the adjusted values non-decreasing: 0.04 x 1 = 0.04 is raised to 0.03 x 2 = 0.06
    assert list(stats.holm([0.04, 0.03, 0.01])) == pytest.approx([0.06, 0.06, 0.03])
    assert list(stats.holm([0.6, 0.9])) == [1.0, 1.0]
    out = stats.holm([0.01, math.nan, 0.02])  # NaN stays NaN and is not counted in m
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert stats.holm([]).size == 0


def test_paired_comparisons_match_documents(two_fake_runs, tmp_path):
    loaded = load_runs(two_fake_runs)
    cmp = stats.paired_comparisons(loaded.samples, ["rouge1"], n_boot=300, seed=0)
    assert len(cmp) == 1
    row = cmp.iloc[0]
    assert (row["model_a"], row["model_b"], row["n"]) == ("dsl_llada", "mdm_llada(block_length=32,logits_eos_inf=true)", 5)
    assert row["mean_diff"] == pytest.approx(1.4)
    assert row["sign_p"] == pytest.approx(0.625) and (row["wins_a"], row["wins_b"]) == (3, 1)
    # one comparison: Holm leaves it as it is
    assert (row["sign_p_holm"], row["wilcoxon_p_holm"]) == (row["sign_p"], row["wilcoxon_p"])
    assert row["verdict"] in ("no clear difference", "A higher")
    # documents are matched by id, not by position; unmatched documents are left out
    c = tmp_path / "runC"
    s = summ_samples([1, 5, 4, 4, 3])[::-1]
    s.append({**s[0], "_key": "only-here", "rouge1": 99.0})
    write_fake_run(c, "softmask_llada", {"pretrained": "/ckpt/base"}, {"dsl_summ_xsum_16step": s})
    loaded = load_runs([two_fake_runs[0], c])
    row = stats.paired_comparisons(loaded.samples, ["rouge1"], n_boot=50).iloc[0]
    assert row["n"] == 5 and row["mean_diff"] == pytest.approx(1.4)


# ----------------------------------------------------------------------------- bad and partial inputs
def test_not_an_lm_eval_dir(tmp_path):
    d = tmp_path / "not_lm_eval"
    d.mkdir()
    (d / "notes.txt").write_text("hello")
    with pytest.raises(ReportInputError, match=re.escape(str(d)) + ".*not an lm-eval output"):
        load_runs([d])
    bad = tmp_path / "bad" / "m"
    bad.mkdir(parents=True)
    (bad / "results_x.json").write_text('{"something": 1}')
    with pytest.raises(ReportInputError, match=re.escape(str(bad / "results_x.json"))):
        load_runs([tmp_path / "bad"])
    (bad / "results_x.json").write_text("{not json")
    with pytest.raises(ReportInputError, match="results_x.json"):
        load_runs([tmp_path / "bad"])


def test_missing_samples(two_fake_runs, tmp_path):
    a, b = two_fake_runs
    victim = next((b / "model").glob("samples_*.jsonl"))
    victim.unlink()
    with pytest.raises(ReportInputError, match=re.escape(victim.name) + ".*samples file missing"):
        load_runs([a, b], strict=True)
    with pytest.warns(ReportWarning, match=re.escape(victim.name)):
        rep = build_report([a, b], tmp_path / "out", n_boot=50)
    lb = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    assert len(lb) == 2  # the cell's aggregate is kept
    assert len(rep.loaded.samples) == 5  # samples only from the complete run
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Warning: partial input" in md and victim.name in md


def test_mixed_metric_sets(two_fake_runs, tmp_path):
    a, _ = two_fake_runs
    c = tmp_path / "runC"
    s = [{k: v for k, v in x.items() if k != "degenerate"} for x in summ_samples([1, 2, 3, 4, 5])]
    rc = write_fake_run(c, "softmask_llada", {"pretrained": "/ckpt/base"}, {"dsl_summ_xsum_16step": s})
    with pytest.raises(ReportInputError, match="mixed metric sets for task dsl_summ_xsum_16step") as err:
        load_runs([a, c])
    assert str(rc) in str(err.value) and "degenerate" in str(err.value)


def test_partial_inputs_still_report(two_fake_runs, tmp_path):
    empty = tmp_path / "interrupted"
    empty.mkdir()
    with pytest.warns(ReportWarning, match="interrupted.*not an lm-eval output"):
        rep = build_report([two_fake_runs[0], empty], tmp_path / "out", n_boot=50)
    assert (tmp_path / "out" / "report.html").is_file()
    assert len(rep.warnings) == 1
    with pytest.raises(ReportInputError):
        build_report([two_fake_runs[0], empty], tmp_path / "out2", strict=True)


def test_duplicate_runs_newest_wins(two_fake_runs, tmp_path):
    a, _ = two_fake_runs
    write_fake_run(a, "dsl_llada", {"pretrained": "/ckpt/dsl"}, {"dsl_summ_xsum_16step": summ_samples([9, 9, 9, 9, 9])},
                   date="2026-02-01T00-00-00.000001", timestamp=2.0)
    with pytest.warns(ReportWarning, match="appears twice"):
        loaded = load_runs([a])
    assert loaded.cells["rouge1"].tolist() == [9.0]


def test_cli_report(two_fake_runs, tmp_path, capsys):
    from dslbench.cli import main

    assert main(["report", *map(str, two_fake_runs), "--out", str(tmp_path / "o"), "--samples-format", "csv", "--n-boot", "50"]) == 0
    assert (tmp_path / "o" / "samples.csv").is_file()
    d = tmp_path / "nothing"
    d.mkdir()
    assert main(["report", str(d), "--out", str(tmp_path / "o2")]) == 2
    assert "not an lm-eval output" in capsys.readouterr().err


# ----------------------------------------------------------------------------- published baselines
def test_published_baselines_have_sources_and_are_marked(two_fake_runs, tmp_path):
    from dslbench.paths import baselines_dir

    published = tables.load_published(baselines_dir())
    assert {"published_repair", "published_open_ended_generation", "published_summarization_headline"} <= set(published)
    for name, df in published.items():
        assert df["source"].notna().all() and (df["source"].str.strip() != "").all(), name
    build_report(two_fake_runs, tmp_path / "r", n_boot=50)
    md = (tmp_path / "r" / "report.md").read_text()
    section = md.split("## Published figures (published, not reproduced)")[1]
    assert "| published, not reproduced | LLaDA-8B-Instruct (original) | 10 | 13.1 | 31.9 | 90.9 |" in section
    assert "fengsxy/DSL-LLaDA@33f29254" in section


def test_a_repair_variant_is_labelled_beside_the_published_figures(tmp_path):
    from dslbench.metrics.sample_stats import attach_stats

    def repair_samples(protocol, fixed):
        return [{"fix_rate": [f, 4], "preserve_rate": [30, 36], "_key": f"p{i}",
                 "_resp": attach_stats("text", {"repair_protocol": protocol})} for i, f in enumerate(fixed)]

    write_fake_run(tmp_path / "pub", "dsl_llada", {"pretrained": "/ckpt/dsl"},
                   {"dsl_repair_random_10": repair_samples("published", [1, 2])})
    write_fake_run(tmp_path / "conv", "dsl_llada", {"pretrained": "/ckpt/dsl", "repair_path": "converter"},
                   {"dsl_repair_random_10": repair_samples("converter", [3, 4])})
    cells = load_runs([tmp_path / "pub", tmp_path / "conv"]).cells
    assert sorted(cells["repair_protocol"]) == ["converter", "published"]
    build_report([tmp_path / "pub", tmp_path / "conv"], tmp_path / "r", n_boot=20)
    md = (tmp_path / "r" / "report.md").read_text()
    repair, published = md.split("## Selective-corruption repair")[1].split("## Published figures")
    assert "| dsl_llada | published (one forward, argmax) |" in repair
    assert "| dsl_llada(repair_path=converter) | variant converter (not the published protocol) |" in repair
    rows = [line for line in published.split("\n") if "dsl_llada" in line]
    assert len(rows) == 2
    assert any(r.startswith("| measured here | dsl_llada |") for r in rows)
    assert any(r.startswith("| measured here, variant converter (not the published protocol) | dsl_llada(repair_path=converter) |")
               for r in rows)


# ----------------------------------------------------------------------------- I/O failures
def test_a_failed_report_leaves_the_previous_one_whole(two_fake_runs, tmp_path, monkeypatch, capsys):
    """A full disk while writing the last page: exit 2 with the path and the cause in one line,
    and the previous report untouched (no new CSV beside an old report.html, no staging left)."""
    from dslbench.cli import main

    out = tmp_path / "o"
    args = ["report", *map(str, two_fake_runs), "--out", str(out), "--n-boot", "20"]
    assert main(args) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert Path("plots") in {p.parent for p in before}
    write_fake_run(two_fake_runs[0], "dsl_llada", {"pretrained": "/ckpt/dsl"},
                   {"dsl_summ_xsum_16step": summ_samples([9, 9, 9, 9, 9])}, date="2026-02-01T00-00-00.000001", timestamp=2.0)
    real = Path.write_bytes

    def disk_full_on_html(self, data):
        if "report.html" in self.name:
            with open("/dev/full", "wb") as f:  # a real ENOSPC from the kernel (no file name in it)
                f.write(data)
                f.flush()
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", disk_full_on_html)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    (line,) = [e for e in err if ": error: " in e]  # warnings about the inputs may come first
    assert line == f"dslbench report: error: {out / 'report.html'}: no space left on device"
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and not list(out.glob(".*"))
    monkeypatch.undo()
    assert main(args) == 0
    assert (out / "leaderboard.csv").read_bytes() != before[Path("leaderboard.csv")]


def test_a_write_failure_names_the_file(tmp_path, monkeypatch):
    import errno

    from dslbench.report import io

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")  # what a failed write() raises: no file name

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError) as err:
        io.write_text_atomic("x", tmp_path / "a.csv")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "a.csv")
    assert not list(tmp_path.iterdir())


def test_report_into_an_unwritable_place_is_one_line(two_fake_runs, tmp_path, capsys):
    from dslbench.cli import main

    (tmp_path / "afile").write_text("not a folder")
    assert main(["report", *map(str, two_fake_runs), "--out", str(tmp_path / "afile" / "o")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("dslbench report: error: " + str(tmp_path / "afile"))


def test_a_killed_reports_staging_folder_is_removed(two_fake_runs, tmp_path):
    from dslbench.report.build import STAGE_PREFIX

    out = tmp_path / "o"
    (out / f"{STAGE_PREFIX}999999999-abc").mkdir(parents=True)  # no such process
    build_report(two_fake_runs, out, n_boot=20)
    assert not list(out.glob(f"{STAGE_PREFIX}*")) and (out / "report.html").is_file()


# ----------------------------------------------------------------------------- all-empty cells (#15)
def test_all_empty_cell_is_named_in_a_warning_and_the_headline_shows_empty_pct(tmp_path, capsys):
    from dslbench.cli import main

    empty = summ_samples([0, 0, 0, 0])
    for s in empty:
        s.update(words=0.0, length_ratio=0.0, empty=1.0, n_empty=1.0, short_output=1.0)
    write_fake_run(tmp_path / "runE", "mdm_llada", {"pretrained": "/ckpt/eos"}, {"dsl_summ_xsum_16step": empty})
    write_fake_run(tmp_path / "runA", "dsl_llada", {"pretrained": "/ckpt/dsl"}, {"dsl_summ_xsum_16step": summ_samples([3, 5, 2, 8])})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReportWarning)
        rep = build_report([tmp_path / "runE", tmp_path / "runA"], tmp_path / "out", n_boot=50)
    assert len(rep.empty_cells) == 1 and "mdm_llada on dsl_summ_xsum_16step: 100% of the outputs are empty (4 of 4)" in rep.empty_cells[0]
    assert [str(w.message) for w in caught if "outputs are empty" in str(w.message)] == rep.empty_cells
    values, _, _ = tables.headline_table(rep.loaded.cells)
    assert dict(zip(values["model"], values["empty %"])) == {"dsl_llada": 0.0, "mdm_llada": 100.0}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "mostly empty outputs" in md and "| empty % |" in md
    # the command line prints it
    assert main(["report", str(tmp_path / "runE"), str(tmp_path / "runA"), "--out", str(tmp_path / "cli"), "--n-boot", "20"]) == 0
    assert "dslbench report: warning: mdm_llada on dsl_summ_xsum_16step: 100% of the outputs are empty" in capsys.readouterr().err


def test_truncated_cells_are_named_in_a_warning_and_the_headline_shows_truncated_pct(tmp_path):
    cut = summ_samples([3, 5, 2, 8, 6, 4, 1, 2, 7, 5])
    for i, s in enumerate(cut):
        s["truncated_rate"] = 1.0 if i < 7 else 0.0  # 7 of 10 prompts cut
    whole = summ_samples([1, 5, 4, 4, 3, 2, 2, 6, 1, 3])
    for s in whole:
        s["truncated_rate"] = 0.0
    write_fake_run(tmp_path / "runT", "mdm_llada", {"pretrained": "/ckpt/base"}, {"dsl_summ_xsum_16step": cut})
    write_fake_run(tmp_path / "runA", "dsl_llada", {"pretrained": "/ckpt/dsl"}, {"dsl_summ_xsum_16step": whole})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReportWarning)
        rep = build_report([tmp_path / "runT", tmp_path / "runA"], tmp_path / "out", n_boot=50)
    assert rep.truncated_cells == [
        "mdm_llada on dsl_summ_xsum_16step (NFE 16): 70% of the prompts were cut to fit max_length (7 of 10); "
        "the model read those sources with a middle stretch missing"
    ]
    assert [str(w.message) for w in caught if "prompts were cut" in str(w.message)] == rep.truncated_cells
    values, _, _ = tables.headline_table(rep.loaded.cells)
    assert dict(zip(values["model"], values["truncated %"])) == {"dsl_llada": 0.0, "mdm_llada": 70.0}
    md = (tmp_path / "out" / "report.md").read_text()
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Warning: truncated prompts" in md and "| truncated % |" in md and "70% of the prompts were cut" in md
    assert "truncated %" in html and "70% of the prompts were cut" in html
