"""Unconditional-generation metrics (``dsl_uncond_*`` tasks) as kuleshov-group/remdm scores its
samples (``main.py::generate_samples`` and ``diffusion.py::compute_generative_perplexity``).

Per-sample items and their lm-eval aggregations:

- ``entropy``: the sample's token entropy, the released formula: over the whole generated span of
  model token ids (special tokens included), ``sum_v -f_v log f_v`` with ``f_v`` the id's share of
  the span (natural log). Aggregation: mean over samples.
- ``genppl``: ``(summed NLL, scored tokens)`` from :meth:`Evaluator.score_chunked`; aggregation
  token-pooled, ``exp(sum NLL / sum tokens)`` (the release's torchmetrics mean weighted by its
  token mask). NaN when no token is scored.

MAUVE and the length / repetition metrics are those of :mod:`dslbench.metrics.evaluator` and
:mod:`dslbench.metrics.open_ended`: one implementation each.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Sequence


def token_entropy(ids: Sequence[int]) -> float:
    """Entropy (nats) of the empirical distribution of ``ids`` (``torch.special.entr`` summed, as released)."""
    if not ids:
        return math.nan
    n = len(ids)
    return float(-sum(c / n * math.log(c / n) for c in Counter(int(i) for i in ids).values()))


def mean_entropy(items: Iterable[float | None]) -> float:
    values = [float(v) for v in items if v is not None and not math.isnan(float(v))]
    return sum(values) / len(values) if values else math.nan


def pooled_genppl(items: Iterable) -> float:
    """exp(total NLL / total scored tokens) over ``(nll_sum, n_tokens)`` items (None skipped)."""
    pairs = [item for item in items if item is not None]
    tokens = sum(int(n) for _, n in pairs)
    return math.exp(sum(float(s) for s, _ in pairs) / tokens) if tokens else math.nan
