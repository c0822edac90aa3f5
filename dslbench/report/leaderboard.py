"""Leaderboard tables.

The full report path is ``dslbench.report.build.build_report`` (lm-eval output directories ->
``leaderboard.csv`` with every metric, per-sample table, plots, report). This module keeps the
small in-memory helper for aggregated results dicts (``evaluate_cell``'s return value /
``done.json``) and re-exports the atomic writers.
"""

from __future__ import annotations

import pandas as pd

from dslbench.report.io import write_csv_atomic, write_text_atomic  # noqa: F401  (re-exported)
from dslbench.report.load import KNOWN_METRICS, parse_task

ID_COLUMNS = ["backend", "checkpoint", "task", "nfe_budget"]
METRIC_COLUMNS = ["rouge1", "rouge2", "rougeL", "nfe", "gen_tokens", "tokens_per_forward", "seconds_per_sample", "n_samples"]
# appended (never interleaved) and only when an open-ended task is among the rows, so the
# default table of the other families keeps its columns
OPEN_ENDED_COLUMNS = ["genppl", "d2", "d3", "rep", "words", "n_valid", "empty", "mauve"]


def rows_from_results(results: dict, backend: str, checkpoint: str) -> list[dict]:
    """One row per task of an lm-eval ``simple_evaluate`` result (``results`` / ``n-samples`` keys),
    with every known metric (filter ``none``)."""
    rows = []
    for task, metrics in sorted(results.get("results", {}).items()):
        row = {"backend": backend, "checkpoint": checkpoint, "task": task, "nfe_budget": parse_task(task)["nfe_budget"]}
        for key, value in metrics.items():
            name, _, filt = key.partition(",")
            if filt == "none" and name in KNOWN_METRICS:
                row[name] = value
        row["n_samples"] = results.get("n-samples", {}).get(task, {}).get("effective")
        rows.append(row)
    return rows


def leaderboard(rows: list[dict], columns: list[str] | None = None) -> pd.DataFrame:
    """Rows -> a table with a fixed column order (``ID_COLUMNS`` + ``columns``), sorted. By default
    ``METRIC_COLUMNS``, plus ``OPEN_ENDED_COLUMNS`` when a row is an open-ended (``dsl_gen_*``) task."""
    if columns is None:
        open_ended = any(parse_task(str(r.get("task", "")))["family"] == "open_ended" for r in rows)
        columns = METRIC_COLUMNS + (OPEN_ENDED_COLUMNS if open_ended else [])
    df = pd.DataFrame(rows)
    for col in ID_COLUMNS + columns:
        if col not in df:
            df[col] = None
    return df[ID_COLUMNS + columns].sort_values(["backend", "checkpoint", "nfe_budget", "task"], kind="stable").reset_index(drop=True)
