"""Paired statistics between two backends scored on the same documents, on ``scipy.stats``.

* ``paired_bootstrap_ci``: mean of ``a - b`` with a percentile bootstrap interval
  (``scipy.stats.bootstrap`` over the per-document differences, so the same documents are drawn
  for both systems; seeded through numpy's ``Generator``, so deterministic).
* ``sign_test``: exact two-sided binomial sign test on the non-zero differences
  (``scipy.stats.binomtest``; at p = 1/2 this is ``min(1, 2 * P[Bin(n, 1/2) <= min(n+, n-)])``).
* ``wilcoxon_signed_rank``: Wilcoxon signed-rank test (``scipy.stats.wilcoxon``): zero differences
  dropped (``zero_method="wilcox"``), average ranks for ties, normal approximation
  (``method="approx"``) with tie correction and continuity correction (two-sided).
* ``holm``: Holm's step-down adjustment of a family of p-values (the report runs many pairwise
  tests at once; scipy has Benjamini-Hochberg, not Holm).

The tests keep the hand-computed cases as oracles for each of them.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps


def _pair(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples need two 1-D arrays of equal length, got {a.shape} and {b.shape}")
    return a - b


def paired_bootstrap_ci(
    a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """``(mean difference, low, high)`` of ``mean(a - b)``; percentile interval at ``level``."""
    d = _pair(a, b)
    if d.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(d.mean())
    if d.size == 1:  # every resample is the one document (scipy asks for two)
        return mean, mean, mean
    res = sps.bootstrap((d,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile",
                        rng=np.random.default_rng(seed), vectorized=True)
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def sign_test(a: Sequence[float], b: Sequence[float]) -> tuple[int, int, float]:
    """``(wins of a, wins of b, two-sided exact p)``; ties are dropped; no pairs left gives p = 1."""
    d = _pair(a, b)
    pos, neg = int((d > 0).sum()), int((d < 0).sum())
    if pos + neg == 0:
        return pos, neg, 1.0
    return pos, neg, float(sps.binomtest(pos, pos + neg, 0.5).pvalue)


def wilcoxon_signed_rank(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """``(W+, two-sided p)`` by the normal approximation (zeros dropped, tie + continuity corrected).

    ``W+`` is the sum of the ranks of |d| over positive differences (scipy reports min(W+, W-)
    for a two-sided test, so it is summed here). With no non-zero difference ``p = 1``.
    """
    d = _pair(a, b)
    d = d[d != 0]
    if d.size == 0:
        return 0.0, 1.0
    w_plus = float(sps.rankdata(np.abs(d))[d > 0].sum())
    p = sps.wilcoxon(d, zero_method="wilcox", correction=True, method="approx").pvalue
    return w_plus, min(1.0, float(p))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control under any dependence).

    The i-th smallest of the m p-values is multiplied by ``m - i + 1`` (i from 1), the products
    are made non-decreasing in that order and capped at 1. NaN p-values stay NaN and do not count
    in ``m``.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="mergesort")]
    m = order.size
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


COMPARISON_COLUMNS = [
    "family", "dataset", "corruption", "corruption_rate", "nfe_budget", "task", "metric",
    "model_a", "model_b", "n", "mean_a", "mean_b", "mean_diff", "ci_low", "ci_high",
    "wins_a", "wins_b", "sign_p", "wilcoxon_p", "sign_p_holm", "wilcoxon_p_holm", "verdict",
]


def compare(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict:
    mean_diff, lo, hi = paired_bootstrap_ci(a, b, n_boot=n_boot, seed=seed)
    wins_a, wins_b, sign_p = sign_test(a, b)
    _, wil_p = wilcoxon_signed_rank(a, b)
    if math.isnan(lo) or (lo <= 0.0 <= hi):
        verdict = "no clear difference"
    else:
        verdict = "A higher" if lo > 0 else "B higher"
    return {
        "n": int(len(a)), "mean_a": float(np.mean(a)) if len(a) else math.nan,
        "mean_b": float(np.mean(b)) if len(b) else math.nan, "mean_diff": mean_diff,
        "ci_low": lo, "ci_high": hi, "wins_a": wins_a, "wins_b": wins_b,
        "sign_p": sign_p, "wilcoxon_p": wil_p, "verdict": verdict,
    }


def paired_comparisons(
    samples: pd.DataFrame, metrics: Sequence[str], n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """Every pair of models (sorted by name) on every task they share, matched by document.

    Only documents both models were scored on enter (``n``); a metric missing for a task is
    skipped. The verdict reads the bootstrap interval: ``A higher`` / ``B higher`` when it
    excludes 0. ``sign_p_holm`` / ``wilcoxon_p_holm`` are the p-values Holm-adjusted over every
    comparison of the returned table (one family per test).
    """
    rows = []
    if samples.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    keys = ["family", "dataset", "corruption", "corruption_rate", "nfe_budget", "task"]
    for key, group in samples.groupby(keys, dropna=False, sort=True):
        models = sorted(group["model"].unique())
        for metric in metrics:
            if metric not in group.columns or group[metric].isna().all():
                continue
            table = group.pivot_table(index="doc_key", columns="model", values=metric, aggfunc="mean")
            for ma, mb in combinations(models, 2):
                if ma not in table.columns or mb not in table.columns:
                    continue
                both = table[[ma, mb]].dropna()
                if both.empty:
                    continue
                res = compare(both[ma].to_numpy(), both[mb].to_numpy(), n_boot=n_boot, seed=seed)
                rows.append({**dict(zip(keys, key)), "metric": metric, "model_a": ma, "model_b": mb, **res})
    df = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    df["sign_p_holm"] = holm(df["sign_p"].to_numpy(dtype=float))
    df["wilcoxon_p_holm"] = holm(df["wilcoxon_p"].to_numpy(dtype=float))
    return df
