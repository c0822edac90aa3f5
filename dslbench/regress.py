"""``dslbench regress``: a pinned, seeded subset of the demo compared with committed expectations.

It rebuilds (or reuses) the ``regress`` preset's tiny models, re-evaluates every cell, and
compares each metric of every (model, task) with ``baselines/regression/expected.json``, each
within its tolerance. A diff table (metric, expected, measured, tolerance, verdict) is printed;
any regression or missing value makes the command exit non-zero. ``--update`` rewrites the
expectations after an intended change (review the diff of the JSON file before committing).

Tolerances absorb floating-point differences between machines; on one machine the same seed
gives identical numbers, so any change of a sampler, objective or metric shows up.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

EXPECTED = Path(__file__).resolve().parent.parent / "baselines" / "regression" / "expected.json"

# Absolute tolerance per metric (units as reported: ROUGE and repair rates in points).
TOLERANCES = {
    "rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0,
    "words": 1.0, "words_nonempty": 1.0, "ref_words": 0.0, "length_ratio": 0.05, "short_output": 0.05,
    "empty": 0.05, "n_empty": 0.0, "truncated_rate": 0.0,
    "seq_rep_1": 0.02, "seq_rep_2": 0.02, "seq_rep_3": 0.02, "seq_rep_4": 0.02, "adjacent_rep": 0.02,
    "adjacent_rep_pooled": 0.02,
    "distinct_2": 0.02, "distinct_3": 0.02, "degenerate": 0.05,
    "coverage": 0.03, "density": 0.2, "compression": 0.5,
    "fix_rate": 2.0, "preserve_rate": 2.0, "word_fix_rate": 2.0, "word_preserve_rate": 2.0,
    "fix_rate_pooled": 2.0, "preserve_rate_pooled": 2.0,
    "nfe": 0.0, "gen_tokens": 1.0, "tokens_per_forward": 0.1,
    # open-ended generation (GenPPL under the tiny evaluator; MAUVE's clustering is seeded)
    "genppl": 0.5, "d2": 0.02, "d3": 0.02, "rep": 0.02, "n_valid": 0.0, "mauve": 0.05,
}


def measured_values(cells: pd.DataFrame) -> dict[str, float]:
    """``{"model | task | metric": value}`` for every tolerated metric present in the cells."""
    out = {}
    for _, row in cells.iterrows():
        for metric in TOLERANCES:
            if metric in row and row[metric] is not None and not pd.isna(row[metric]):
                out[f"{row['model']} | {row['task']} | {metric}"] = float(row[metric])
    return dict(sorted(out.items()))


def compare(expected: dict[str, float], measured: dict[str, float]) -> pd.DataFrame:
    rows = []
    for key in sorted(set(expected) | set(measured)):
        metric = key.rsplit(" | ", 1)[-1]
        tol = TOLERANCES.get(metric, 0.0)
        exp, got = expected.get(key), measured.get(key)
        if exp is None:
            verdict = "new (not in expectations)"
        elif got is None:
            verdict = "MISSING"
        elif math.isclose(got, exp, rel_tol=0.0, abs_tol=tol + 1e-9):
            verdict = "ok"
        else:
            verdict = "REGRESSION" if _worse(metric, exp, got) else "CHANGED"
        rows.append({"metric": key, "expected": exp, "measured": got, "tolerance": tol, "verdict": verdict})
    return pd.DataFrame(rows, columns=["metric", "expected", "measured", "tolerance", "verdict"])


def _worse(metric: str, expected: float, measured: float) -> bool:
    from dslbench.metrics.summary import HIGHER_IS_BETTER
    from dslbench.report.load import REPAIR_METRICS

    higher = HIGHER_IS_BETTER.get(metric, metric in REPAIR_METRICS)
    return measured < expected if higher else measured > expected


def failed(table: pd.DataFrame) -> bool:
    # Any change beyond tolerance fails, better or worse: expectations are updated on purpose.
    return bool((~table["verdict"].isin(["ok", "new (not in expectations)"])).any())


def run_regress(out: str = "results/regress", expected: str | Path = EXPECTED, update: bool = False,
                preset: str = "regress", log=print, **overrides) -> int:
    from dslbench.demo import run_demo
    from dslbench.report.io import write_text_atomic

    result = run_demo(out, preset=preset, force=True, log=log, **overrides)
    measured = measured_values(result.report.loaded.cells)
    expected = Path(expected)
    if update:
        write_text_atomic(json.dumps(measured, indent=1, sort_keys=True) + "\n", expected)
        log(f"wrote {len(measured)} expectations to {expected}")
        return 0
    if not expected.is_file():
        log(f"no expectations at {expected}: run `dslbench regress --update` once and commit the file")
        return 2
    table = compare(json.loads(expected.read_text()), measured)
    bad = failed(table)
    shown = table if bad else table.head(0)
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 80):
        if bad:
            log(shown[shown["verdict"] != "ok"].to_string(index=False))
    n_ok = int((table["verdict"] == "ok").sum())
    log(f"regress: {n_ok}/{len(table)} metrics within tolerance" + (" -- FAILED" if bad else " -- passed"))
    write_text_atomic(table.to_csv(index=False), Path(out) / "regress_diff.csv")
    return 1 if bad else 0
