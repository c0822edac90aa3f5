"""Report tables: the headline table (best values marked), repair, Pareto front, published rows,
paired rows as shown (open-ended generation: :mod:`dslbench.report.open_ended`)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from dslbench.metrics.summary import DIRECTIONLESS, HIGHER_IS_BETTER

HEADLINE_NFE = 16
# (column, heading, how "best" is decided): "max" / "min" / "one" (closest to 1) / None (no best)
HEADLINE_METRICS: list[tuple[str, str, str | None]] = [
    ("rouge1", "ROUGE-1", "max"),
    ("rouge2", "ROUGE-2", "max"),
    ("rougeL", "ROUGE-L", "max"),
    ("words", "words", None),
    ("length_ratio", "length ratio", "one"),
    ("adjacent_rep", "adjacent rep", "min"),
    ("seq_rep_4", "seq-rep-4", "min"),
    ("degenerate", "degenerate", "min"),
    ("short_output", "short-output rate", "min"),
    ("empty_pct", "empty %", "min"),
    ("truncated_pct", "truncated %", None),  # prompts cut to fit max_length: a fact of the run, no best
    ("nfe", "measured NFE", None),
]
# A cell with more than this share of empty outputs is named in a warning: its quality metrics
# describe empty outputs (ROUGE 0, no repetition), not a model that is merely bad.
EMPTY_WARN_SHARE = 0.5
# A cell with more than this share of its prompts cut (the task's truncated_rate) is named in a
# warning: its model read a source with a middle stretch missing.
TRUNCATED_WARN_SHARE = 0.0
REPAIR_METRICS: list[tuple[str, str, str | None]] = [
    ("fix_rate", "fix %", "max"),
    ("preserve_rate", "preserve %", "max"),
    ("word_fix_rate", "word fix %", "max"),
    ("word_preserve_rate", "word preserve %", "max"),
    ("fix_rate_pooled", "fix % (pooled)", "max"),
    ("preserve_rate_pooled", "preserve % (pooled)", "max"),
    ("nfe", "measured NFE", None),
]
PUBLISHED = "published, not reproduced"
MEASURED = "measured here"


def repair_protocol_label(protocol: str) -> str:
    """How a repair row's protocol is shown: the published one by name, anything else as a
    dslbench variant, so that it never stands beside a published figure unlabelled."""
    if protocol == "published":
        return "published (one forward, argmax)"
    if not protocol or protocol == "unrecorded":
        return "unrecorded (not known to be the published protocol)"
    return f"variant {protocol} (not the published protocol)"


def _protocols(rep: pd.DataFrame) -> pd.Series:
    return rep["repair_protocol"] if "repair_protocol" in rep.columns else pd.Series("", index=rep.index)


def metric_direction(metric: str) -> str | None:
    """``max`` / ``min`` / ``None`` for a metric (summary metrics: ``HIGHER_IS_BETTER`` minus the
    directionless ones; efficiency and repair by their meaning)."""
    for name, _, how in HEADLINE_METRICS + REPAIR_METRICS:
        if name == metric:
            return how if how in ("max", "min") else None
    if metric in ("seconds_per_sample",):
        return "min"
    if metric in ("tokens_per_forward",):
        return "max"
    if metric in HIGHER_IS_BETTER and metric not in DIRECTIONLESS:
        return "max" if HIGHER_IS_BETTER[metric] else "min"
    return None


def best_mask(values: pd.Series, how: str | None, tol: float = 1e-9) -> pd.Series:
    """True where a value is best (ties for best all marked); NaN is never best; nothing is marked
    under ``how=None`` or when all values are equal (a single row included)."""
    v = pd.to_numeric(values, errors="coerce").astype(float)
    if how is None or v.notna().sum() == 0 or (v.max() - v.min()) <= tol:
        return pd.Series(False, index=values.index)  # nothing to choose between
    if how == "max":
        target = v.max()
        return (v - target).abs() <= tol
    if how == "min":
        target = v.min()
        return (v - target).abs() <= tol
    if how == "one":
        dist = (v - 1.0).abs()
        return (dist - dist.min()).abs() <= tol
    raise ValueError(f"unknown best rule {how!r}")


def pick_budget(cells: pd.DataFrame, wanted: int = HEADLINE_NFE) -> int | None:
    """The headline NFE budget: ``wanted`` when present, else the closest one run (ties: lower)."""
    budgets = sorted(int(b) for b in cells.loc[cells["family"] == "summarization", "nfe_budget"].dropna().unique())
    if not budgets:
        return None
    if wanted in budgets:
        return wanted
    return min(budgets, key=lambda b: (abs(b - wanted), b))


def _marked_table(df: pd.DataFrame, group: list[str], spec: list[tuple[str, str, str | None]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values, best flags) with the heading names; best is decided within each group."""
    cols = [c for c, _, _ in spec if c in df.columns]
    values = df[group + ["model"] + cols].reset_index(drop=True)
    best = pd.DataFrame(False, index=values.index, columns=cols)
    for _, sub in values.groupby(group, sort=False, dropna=False):
        idx = sub.index
        for col, _, how in spec:
            if col in cols:
                best.loc[idx, col] = best_mask(values.loc[idx, col], how).to_numpy()
    heading = {c: h for c, h, _ in spec}
    return values.rename(columns=heading), best.rename(columns=heading)


def headline_table(cells: pd.DataFrame, nfe: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, int | None]:
    """Per dataset and model at the headline budget: (values, best flags, budget used)."""
    budget = pick_budget(cells, HEADLINE_NFE if nfe is None else nfe)
    summ = cells[(cells["family"] == "summarization") & (cells["nfe_budget"] == budget)] if budget is not None else cells.iloc[0:0]
    summ = summ.sort_values(["dataset", "model", "checkpoint"], kind="mergesort")
    if "empty" in summ.columns:
        summ = summ.assign(empty_pct=100.0 * pd.to_numeric(summ["empty"], errors="coerce"))
    if "truncated_rate" in summ.columns:
        summ = summ.assign(truncated_pct=100.0 * pd.to_numeric(summ["truncated_rate"], errors="coerce"))
    values, best = _marked_table(summ, ["dataset"], HEADLINE_METRICS)
    return values, best, budget


def empty_cell_warnings(cells: pd.DataFrame, share: float = EMPTY_WARN_SHARE) -> list[str]:
    """One message per summarization cell with more than ``share`` of its outputs empty."""
    if "empty" not in cells.columns:
        return []
    out = []
    summ = cells[(cells["family"] == "summarization") & (pd.to_numeric(cells["empty"], errors="coerce") > share)]
    for _, r in summ.iterrows():
        n = r.get("n_samples")
        count = f" ({round(r['empty'] * n)} of {n})" if n is not None and pd.notna(n) else ""
        out.append(f"{r['model']} on {r['task']}: {100 * r['empty']:.0f}% of the outputs are empty{count}; "
                   "its quality figures describe empty outputs (ROUGE 0, no repetition), not summaries")
    return out


def truncated_cell_warnings(cells: pd.DataFrame, share: float = TRUNCATED_WARN_SHARE) -> list[str]:
    """One message per summarization cell with more than ``share`` of its prompts cut."""
    if "truncated_rate" not in cells.columns:
        return []
    rate = pd.to_numeric(cells["truncated_rate"], errors="coerce")
    out = []
    for _, r in cells[(cells["family"] == "summarization") & (rate > share)].iterrows():
        n = r.get("n_samples")
        count = f" ({round(r['truncated_rate'] * n)} of {n})" if n is not None and pd.notna(n) else ""
        out.append(f"{r['model']} on {r['task']} (NFE {r['nfe_budget']}): {100 * r['truncated_rate']:.0f}% of the "
                   f"prompts were cut to fit max_length{count}; the model read those sources with a middle "
                   "stretch missing")
    return out


def repair_table(cells: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per corruption kind and rate and model: the rates with the repair protocol beside the model."""
    rep = cells[cells["family"] == "repair"].sort_values(["dataset", "corruption", "corruption_rate", "model"], kind="mergesort")
    values, best = _marked_table(rep, ["dataset", "corruption", "corruption_rate"], REPAIR_METRICS)
    values.insert(values.columns.get_loc("model") + 1, "repair protocol", [repair_protocol_label(p) for p in _protocols(rep)])
    return values, best


def pareto_front(points: pd.DataFrame, cost: str = "nfe", quality: str = "rouge1") -> pd.Series:
    """True for points no other point beats (cost <=, quality >=, one strictly)."""
    c = points[cost].to_numpy(dtype=float)
    q = points[quality].to_numpy(dtype=float)
    front = []
    for i in range(len(points)):
        if math.isnan(c[i]) or math.isnan(q[i]):
            front.append(False)
            continue
        dominated = any(
            (c[j] <= c[i] and q[j] >= q[i] and (c[j] < c[i] or q[j] > q[i]))
            for j in range(len(points)) if j != i and not (math.isnan(c[j]) or math.isnan(q[j]))
        )
        front.append(not dominated)
    return pd.Series(front, index=points.index)


def pareto_table(cells: pd.DataFrame) -> pd.DataFrame:
    """The quality / compute Pareto front per dataset (ROUGE-1 against measured NFE per sample)."""
    summ = cells[cells["family"] == "summarization"]
    rows = []
    for dataset, grp in summ.groupby("dataset", sort=True):
        on = grp[pareto_front(grp)].sort_values(["nfe", "rouge1"], kind="mergesort")
        rows.append(on[["dataset", "model", "nfe_budget", "nfe", "rouge1", "words"]])
    if not rows:
        return pd.DataFrame(columns=["dataset", "model", "nfe_budget", "nfe", "rouge1", "words"])
    return pd.concat(rows, ignore_index=True)


# ----------------------------------------------------------------------------- published rows
def load_published(baselines: str | Path) -> dict[str, pd.DataFrame]:
    """Every ``published_*.csv`` in ``baselines`` (each row with its ``source``), by file stem."""
    out = {}
    base = Path(baselines)
    if not base.is_dir():
        return out
    for f in sorted(base.glob("published_*.csv")):
        df = pd.read_csv(f, keep_default_na=False, na_values=[""], dtype=str)
        if "source" not in df.columns:
            raise ValueError(f"{f}: a published table must have a 'source' column")
        out[f.stem] = df
    return out


def repair_beside_published(cells: pd.DataFrame, published: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Our repair rates (random / semantic fix, preserve, per model and rate) beside the published
    ones, with a ``provenance`` column."""
    cols = ["provenance", "model", "corruption_rate", "random_fix_pct", "semantic_fix_pct", "preserve_pct", "source"]
    rows = []
    pub = published.get("published_repair")
    if pub is not None:
        for _, r in pub.iterrows():
            rows.append({"provenance": PUBLISHED, "model": r["model"],
                         "corruption_rate": int(round(float(r["corruption_rate"]) * 100)),
                         "random_fix_pct": r.get("random_fix_pct"), "semantic_fix_pct": r.get("semantic_fix_pct"),
                         "preserve_pct": r.get("preserve_pct"), "source": r["source"]})
    rep = cells[cells["family"] == "repair"].assign(repair_protocol=lambda d: _protocols(d))
    for (model, protocol, dataset, rate), grp in rep.groupby(["model", "repair_protocol", "dataset", "corruption_rate"], sort=True):
        by = {m: g for m, g in grp.groupby("corruption")}
        pres = grp["preserve_rate"].mean() if "preserve_rate" in grp else math.nan
        provenance = MEASURED if protocol == "published" else f"{MEASURED}, {repair_protocol_label(protocol)}"
        rows.append({"provenance": provenance, "model": model, "corruption_rate": int(rate),
                     "random_fix_pct": by["random"]["fix_rate"].mean() if "random" in by else math.nan,
                     "semantic_fix_pct": by["semantic"]["fix_rate"].mean() if "semantic" in by else math.nan,
                     "preserve_pct": pres, "source": f"this report ({dataset} passages; per-passage means; "
                                                     "preserve = mean over corruption kinds)"})
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------- paired tables
PAIRED_SHOWN = ["task", "metric", "model_a", "model_b", "n", "mean_a", "mean_b", "mean_diff", "95% CI",
                "wins_a", "wins_b", "sign_p", "wilcoxon_p", "sign_p_holm", "wilcoxon_p_holm", "verdict"]
PAIRED_HEADINGS = {"model_a": "A", "model_b": "B", "mean_diff": "A - B", "sign_p": "sign p", "wilcoxon_p": "Wilcoxon p",
                   "sign_p_holm": "sign p (Holm)", "wilcoxon_p_holm": "Wilcoxon p (Holm)"}


def paired_view(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``paired.csv`` as the report shows them (the interval as text, short headings)."""
    shown = rows.copy()
    shown["95% CI"] = [f"[{lo:.2f}, {hi:.2f}]" for lo, hi in zip(shown["ci_low"], shown["ci_high"])]
    return shown[PAIRED_SHOWN].rename(columns=PAIRED_HEADINGS).reset_index(drop=True)
