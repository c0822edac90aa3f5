"""How per-sample values become a task's figure (lm-eval ``aggregation`` functions).

- ``mean``: lm-eval's own, for values every sample has.
- :func:`mean_defined`: the mean over the samples where the value exists; a sample without one
  (``None``, e.g. the Newsroom statistics of an empty output) is left out, never filled in. No
  sample with a value: NaN (the figure does not exist), which the report shows as empty.
- :func:`pooled_ratio`: ``sum(numerators) / sum(denominators)`` over ``(num, den)`` pairs, the
  published way of pooling a rate over outputs (NaN when every denominator is 0).
- :func:`count`: the number of samples flagged 1 (e.g. ``n_empty``), beside a figure that
  leaves those samples out.
"""

from __future__ import annotations

import math
from typing import Iterable


def mean_defined(values: Iterable[float | None]) -> float:
    kept = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(kept) / len(kept) if kept else math.nan


def pooled_ratio(pairs: Iterable[tuple[float, float]]) -> float:
    pairs = list(pairs)
    num = sum(float(n) for n, _ in pairs)
    den = sum(float(d) for _, d in pairs)
    return num / den if den else math.nan


def count(values: Iterable[float]) -> int:
    return int(sum(1 for v in values if v))
