"""Open-ended generation (``dsl_gen_*``) in ``dslbench report``: loading, leaderboard columns, the
section with the published rows beside measured rows of the same task and NFE, the figure, paired
tests, and the old juxtaposition with summarization gone."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from dslbench.metrics.sample_stats import attach_stats
from dslbench.report import open_ended, tables
from dslbench.report.build import build_report
from dslbench.report.leaderboard import OPEN_ENDED_COLUMNS, leaderboard, rows_from_results
from dslbench.report.load import load_runs, parse_task
from dslbench.report.open_ended_plot import published_key
from tests.test_report import PNG_MAGIC, summ_samples, write_fake_run

DATE = "2026-03-01T00-00-00.000001"
MAUVE = {"LLaDA": 0.41, "DSL-LLaDA-SDE": 0.73}
TEXTS = {  # model -> NFE -> outputs of documents p0..p3 (p2 has 3 words: two bigrams, a 2-list)
    "LLaDA": {8: ["the the cat sat", "a dog ran far away", "red red red", ""],
              16: ["the cat sat down", "a dog ran far away now", "one two three", "x y"]},
    "LLaDA+EOS+Block": {8: ["", "", "", ""], 16: ["cat cat cat cat", "dog dog ran", "a b c", "go"]},
    "DSL-LLaDA-SDE": {8: ["the cat sat on mat", "dogs run fast", "blue sky here", "hi there"],
                      16: ["the cat sat on the mat", "dogs run very fast", "blue sky is here", "hello there"]},
}


def _sample(text: str, i: int, nfe: int, ppl_model: str, with_mauve: bool) -> dict:
    """A logged sample as the dsl_gen_* tasks write it (None where the output is empty)."""
    w = text.split()
    valid = bool(w)
    nll = 1.0 + 0.1 * len(w) if valid else None
    rec = {
        "genppl": nll, "d2": [" ".join(w[j:j + 2]) for j in range(len(w) - 1)] if valid else None,
        "d3": [" ".join(w[j:j + 3]) for j in range(len(w) - 2)] if valid else None,
        "rep": [sum(a == b for a, b in zip(w, w[1:])), max(len(w) - 1, 0)] if valid else None,
        "words": len(w) if valid else None, "n_valid": int(valid), "empty": float(not valid),
        "nfe": float(nfe), "gen_tokens": 32.0, "seconds_per_sample": 0.1, "tokens_per_forward": [32.0, float(nfe)],
    }
    if with_mauve:
        rec["mauve"] = {"id": f"p{i}", "text": text, "reference": "ref", "ppl_model": ppl_model}
    stats = {"nfe": nfe, "gen_tokens": 32, "ppl_model": ppl_model, "ppl_nll": nll, "ppl_tokens": len(w)}
    return {"rec": rec, "resp": attach_stats(text, stats)}


def _aggregate(recs: list[dict], mauve: float | None) -> dict:
    valid = [r for r in recs if r["n_valid"]]
    pairs = [r["rep"] for r in valid]
    grams = [g for r in valid for g in r["d2"]]
    grams3 = [g for r in valid for g in r["d3"]]
    agg = {
        "genppl": math.exp(sum(r["genppl"] for r in valid) / len(valid)) if valid else float("nan"),
        "d2": len(set(grams)) / len(grams) if grams else 0.0, "d3": len(set(grams3)) / len(grams3) if grams3 else 0.0,
        "rep": sum(p[0] for p in pairs) / sum(p[1] for p in pairs) if pairs and sum(p[1] for p in pairs) else 0.0,
        "words": sum(r["words"] for r in valid) / len(valid) if valid else 0.0, "n_valid": len(valid),
        "empty": sum(r["empty"] for r in recs) / len(recs), "nfe": recs[0]["nfe"], "gen_tokens": 32.0,
        "seconds_per_sample": 0.1, "tokens_per_forward": 32.0 / recs[0]["nfe"],
    }
    if mauve is not None:
        agg["mauve"] = mauve
    return agg


def write_oe_run(root: Path, name: str, tasks: dict[str, list[str]], ppl_model: str = "gpt2-large",
                 genppl_null: bool = False) -> Path:
    """lm-eval's ``--output_path --log_samples`` layout for one model, with the runner's cell.json."""
    d = root / re.sub(r"\W", "_", name) / "model"
    d.mkdir(parents=True, exist_ok=True)
    (d.parent / "cell.json").write_text(json.dumps({"name": name}))
    results, n_samples = {}, {}
    for task, texts in tasks.items():
        info = parse_task(task)
        with_mauve = info["dataset"] != "prompts"
        samples = [_sample(t, i, info["nfe_budget"], ppl_model, with_mauve) for i, t in enumerate(texts)]
        agg = _aggregate([s["rec"] for s in samples], MAUVE.get(name, 0.5) if with_mauve else None)
        if genppl_null and math.isnan(agg["genppl"]):
            agg["genppl"] = None
        results[task] = {"alias": task, **{f"{k},none": v for k, v in agg.items()},
                         **{f"{k}_stderr,none": "N/A" for k in agg}}
        n_samples[task] = {"original": 200, "effective": len(samples)}
        with open(d / f"samples_{task}_{DATE}.jsonl", "w", encoding="utf-8") as f:
            for i, s in enumerate(samples):
                rec = {"doc_id": i, "doc": {"id": f"p{i}", "prompt": "q"}, "target": "", "arguments": {},
                       "resps": [[s["resp"]]], "filtered_resps": [s["resp"]], "filter": "none",
                       "metrics": list(s["rec"]), "doc_hash": f"h{i}", **s["rec"]}
                f.write(json.dumps(rec) + "\n")
    data = {"results": results, "group_subtasks": {}, "configs": {t: {} for t in tasks}, "n-samples": n_samples,
            "config": {"model": "mdm_llada", "model_args": {"pretrained": f"/ckpt/{name}"}}, "date": 1.0}
    (d / f"results_{DATE}.json").write_text(json.dumps(data))  # NaN as lm-eval writes it
    return d.parent


@pytest.fixture()
def oe_runs(tmp_path):
    dirs = []
    for name, by_nfe in TEXTS.items():
        tasks = {f"dsl_gen_{n}step": texts for n, texts in by_nfe.items()}
        if name in MAUVE:
            tasks["dsl_gen_prefix_16step"] = by_nfe[16]
        dirs.append(write_oe_run(tmp_path / "runs", name, tasks))
    return dirs


def test_task_names():
    assert parse_task("dsl_gen_16step") == {"family": "open_ended", "dataset": "prompts", "nfe_budget": 16,
                                            "corruption": "", "corruption_rate": None}
    assert (parse_task("dsl_gen_prefix_128step")["dataset"], parse_task("dsl_gen_prefix_128step")["nfe_budget"]) == ("prefix", 128)
    assert (parse_task("dsl_gen_synth_4step")["dataset"], parse_task("dsl_gen_synth_4step")["nfe_budget"]) == ("synth", 4)
    assert parse_task("dsl_gen_sweep")["family"] == "other"


def test_loader_cells_and_samples(oe_runs):
    loaded = load_runs(oe_runs)
    cells, samples = loaded.cells, loaded.samples
    assert loaded.warnings == []
    assert len(cells) == 3 * 2 + 2 and set(cells["family"]) == {"open_ended"}
    assert sorted(cells["dataset"].unique()) == ["prefix", "prompts"]
    for col in ("genppl", "d2", "d3", "rep", "words", "n_valid", "empty", "mauve", "nfe", "tokens_per_forward"):
        assert col in cells.columns, col
    assert (cells["ppl_model"] == "gpt2-large").all()
    # per-sample: numbers only; the n-gram lists and MAUVE's record are whole-set metrics
    assert len(samples) == 4 * len(cells)
    assert not {"d2", "d3", "mauve", "genppl"} & set(samples.columns)
    for _, cell in cells.iterrows():
        s = samples[(samples["model"] == cell["model"]) & (samples["task"] == cell["task"])]
        assert s["n_valid"].sum() == cell["n_valid"] and s["empty"].mean() == pytest.approx(cell["empty"])
        if cell["n_valid"] == 0:
            assert math.isnan(cell["genppl"]) and s["genppl_nll"].isna().all() and s["words"].isna().all()
            continue
        assert math.exp(s["genppl_nll"].mean()) == pytest.approx(cell["genppl"])  # NaN (empty) left out
        assert s["rep_num"].sum() / s["rep_den"].sum() == pytest.approx(cell["rep"])  # pooled pair
        assert s["words"].mean() == pytest.approx(cell["words"])
    empty = cells[(cells["model"] == "LLaDA+EOS+Block") & (cells["nfe_budget"] == 8)].iloc[0]
    assert empty["n_valid"] == 0 and math.isnan(empty["genppl"])


def test_a_null_genppl_still_loads(tmp_path):
    d = write_oe_run(tmp_path, "E", {"dsl_gen_8step": ["", ""]}, genppl_null=True)
    d2 = write_oe_run(tmp_path, "F", {"dsl_gen_8step": ["a b c", "d e"]})
    cells = load_runs([d, d2]).cells  # same metric set for both: no "mixed metric sets" error
    assert math.isnan(cells.set_index("model").loc["E", "genppl"])


def test_leaderboard_csv_columns(oe_runs, tmp_path):
    build_report(oe_runs, tmp_path / "r", n_boot=50)
    lb = pd.read_csv(tmp_path / "r" / "leaderboard.csv")
    header = list(lb.columns)
    for col in ("genppl", "d2", "d3", "rep", "words", "n_valid", "empty", "mauve"):
        assert col in header, col
    assert header.index("genppl") > header.index("tokens_per_forward")  # after the existing metrics
    assert lb.loc[lb["task"] == "dsl_gen_prefix_16step", "mauve"].notna().all()
    assert lb.loc[lb["task"] == "dsl_gen_16step", "mauve"].isna().all()
    empty = lb[(lb["model"] == "LLaDA+EOS+Block") & (lb["nfe_budget"] == 8)]
    assert empty["genppl"].isna().all()  # a blank field, not a number
    # a report without open-ended cells has none of these columns
    write_fake_run(tmp_path / "s", "dsl_llada", {"pretrained": "/ckpt/dsl"}, {"dsl_summ_xsum_16step": summ_samples([1, 2])})
    build_report([tmp_path / "s"], tmp_path / "r2", n_boot=20)
    head = (tmp_path / "r2" / "leaderboard.csv").read_text().split("\n")[0].split(",")
    assert not {"genppl", "d2", "d3", "rep", "n_valid", "mauve", "ppl_model"} & set(head)


def test_in_memory_leaderboard_columns():
    res = {"results": {"dsl_gen_prefix_8step": {"genppl,none": 9.0, "mauve,none": 0.4, "rep,none": 0.1},
                       "dsl_summ_xsum_8step": {"rouge1,none": 3.0}}}
    table = leaderboard(rows_from_results(res, "b", "c"))
    assert list(table.columns[-len(OPEN_ENDED_COLUMNS):]) == OPEN_ENDED_COLUMNS
    assert table.set_index("task").loc["dsl_gen_prefix_8step", "mauve"] == 0.4
    summ_only = leaderboard(rows_from_results({"results": {"dsl_summ_xsum_8step": {"rouge1,none": 3.0}}}, "b", "c"))
    assert "mauve" not in summ_only.columns



def test_report_section(oe_runs, tmp_path):
    out = tmp_path / "r"
    build_report(oe_runs, out, n_boot=50)
    md = (out / "report.md").read_text()
    sec = md.split(f"## {open_ended.SECTION}")[1].split("\n## ")[0]
    assert "exp(mean per-text NLL) under `gpt2-large`" in sec and "pooled over adjacent word pairs" in sec
    assert "not comparable" not in sec
    rows = [line for line in sec.split("### Released prompts")[1].split("###")[0].split("\n") if line.startswith("| ")]
    body = [[c.strip() for c in r.strip("|").split("|")] for r in rows[1:]]  # after the heading row
    nfes = [r[2] for r in body]
    assert nfes == sorted(nfes, key=int)  # grouped by NFE: published and measured side by side
    at8 = [r[:4] for r in body if r[2] == "8"]
    assert ["published, not reproduced", "LLaDA", "8", "63.1"] in at8
    assert [r[0] for r in at8] == ["published, not reproduced"] * 3 + ["measured here"] * 3
    ours = {r[1]: r for r in body if r[0] == "measured here" and r[2] == "8"}
    assert ours["LLaDA+EOS+Block"][3:7] == ["missing", "", "", "0"]  # GenPPL, Rep %, words undefined; n_valid 0
    assert ours["LLaDA"][7] == "25.00"  # empty % of 4 outputs, one empty
    assert ours["LLaDA"][4] == f"{100 * 3 / 9:.2f}"  # Rep %: 1 + 0 + 2 repeats over 3 + 4 + 2 pairs, pooled
    assert "fengsxy/DSL-LLaDA@33f29254" in sec
    # MAUVE beside GenPPL on the prefix set
    mauve = sec.split("### WikiText / synthetic prefixes: MAUVE")[1]
    assert "| prefix | DSL-LLaDA-SDE | 16 | 0.730 |" in mauve and "| prefix | LLaDA | 16 | 0.410 |" in mauve
    # the figure, one per dataset present, embedded
    for ds in ("prompts", "prefix"):
        png = out / "plots" / f"open_ended_{ds}_vs_nfe.png"
        assert png.read_bytes()[:8] == PNG_MAGIC and f"(plots/{png.name})" in sec
    assert not (out / "plots" / "open_ended_synth_vs_nfe.png").exists()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(list((out / "plots").glob("*.png")))
    # paired tests on per-sample NLL / words between models on the same documents
    paired = sec.split("### Paired comparisons (open-ended, same documents)")[1]
    assert "| dsl_gen_16step | genppl_nll | DSL-LLaDA-SDE | LLaDA |" in paired
    assert "| dsl_gen_16step | words |" in paired
    csv = pd.read_csv(out / "paired.csv")
    row = csv[(csv["task"] == "dsl_gen_16step") & (csv["metric"] == "genppl_nll")
              & (csv["model_a"] == "DSL-LLaDA-SDE") & (csv["model_b"] == "LLaDA")].iloc[0]
    assert row["n"] == 4 and row["mean_diff"] == pytest.approx(0.1 * ((6 + 4 + 4 + 2) - (4 + 6 + 3 + 2)) / 4)


def test_another_evaluator_is_flagged(tmp_path):
    d = write_oe_run(tmp_path, "LLaDA", {"dsl_gen_8step": ["a b c", "d e"]}, ppl_model="gpt2")
    build_report([d], tmp_path / "r", n_boot=20)
    md = (tmp_path / "r" / "report.md").read_text()
    assert "under `gpt2`" in md and "not comparable with the published ones" in md


def test_the_summarization_juxtaposition_is_gone(tmp_path):
    write_fake_run(tmp_path / "s", "dsl_llada", {"pretrained": "/ckpt/dsl"}, {"dsl_summ_xsum_16step": summ_samples([1, 2])})
    write_oe_run(tmp_path / "o", "LLaDA", {"dsl_gen_16step": ["a b c", "d e"]})
    build_report([tmp_path / "s", tmp_path / "o"], tmp_path / "r", n_boot=20)
    md = (tmp_path / "r" / "report.md").read_text()
    assert not hasattr(tables, "open_ended_beside_measured")
    assert "summarization (xsum)" not in md and "Length and repetition by NFE" not in md
    published = md.split("## Published figures")[1]
    assert f"see *{open_ended.SECTION}*" in published and "| DSL-SDE |" not in published
    sec = md.split(f"## {open_ended.SECTION}")[1].split("\n## ")[0]
    assert "dsl_summ" not in sec and "| measured here | LLaDA | 16 |" in sec


def test_published_names_map_to_measured_rows():
    assert published_key("LLaDA") == "LLaDA"
    assert published_key("LLaDA_EOS_Block") == "LLaDA+EOS+Block"
    assert published_key("DSL-LLaDA-SDE") == "DSL-SDE"
    assert published_key("DSL-LLaDA-SDE (published accounting)") == "DSL-SDE"
    assert published_key("MDM control (MDM-CPT)") is None
