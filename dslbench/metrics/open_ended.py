"""The released open-ended generation metrics (DSL-LLaDA @33f29254,
``dsl_llada/eval/eval_sde_gen_formal.py::compute_metrics``) as per-sample items + lm-eval
aggregations. All are over *valid* outputs (``text.strip() != ""``); words = ``text.split()``.

Metric names and the per-sample item each aggregation receives (:func:`metric_items`):

- ``genppl``: the text's mean token NLL from :meth:`Evaluator.score`, or None (not scored: empty,
  or < 2 tokens); its token count travels in the sample's record. exp(mean of the NLLs); NaN
  when nothing is scored (the figure does not exist; the released script gave None).
- ``d2`` / ``d3``: the text's word n-grams, each a space-joined string (lossless: words have no
  whitespace), or None (empty). Distinct pooled: ``len(set) / len(all)``; 0.0 when there are none.
- ``rep``: ``(repeats, pairs)`` (adjacent equal words, adjacent pairs) or None. Pooled
  ``sum repeats / sum pairs``; 0.0 when no pairs.
- ``words``: word count or None (empty). Mean over valid texts; 0.0 when none (as released).
- ``n_valid``: 1 / 0; counted. ``empty``: 0 / 1, averaged (share of empty outputs).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence



def ngrams(words: Sequence[str], n: int) -> list[str]:
    return [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]


def per_sample(text: str) -> dict:
    """What one output contributes (JSON-serialisable): ``valid`` (1/0), ``words``, ``pairs``,
    ``repeats``, ``ngrams2`` / ``ngrams3`` (None when the output is empty)."""
    words = text.split()
    if not text.strip():
        return {"valid": 0, "words": 0, "pairs": 0, "repeats": 0, "ngrams2": None, "ngrams3": None}
    repeats = sum(1 for a, b in zip(words, words[1:]) if a == b)
    return {"valid": 1, "words": len(words), "pairs": max(len(words) - 1, 0), "repeats": repeats,
            "ngrams2": ngrams(words, 2), "ngrams3": ngrams(words, 3)}


def metric_items(sample: dict, score=None) -> dict:
    """The per-metric items of one output (what a task's ``process_results`` returns), from its
    :func:`per_sample` record and its :meth:`Evaluator.score` entry."""
    valid = bool(sample["valid"])
    return {
        "genppl": float(score[0]) if valid and score is not None else None,
        "d2": sample["ngrams2"] if valid else None,
        "d3": sample["ngrams3"] if valid else None,
        "rep": (sample["repeats"], sample["pairs"]) if valid else None,
        "words": sample["words"] if valid else None,
        "n_valid": int(valid),
        "empty": int(not valid),
    }


def genppl(items: Iterable[float | None]) -> float:
    nlls = [float(item) for item in items if item is not None]
    return math.exp(sum(nlls) / len(nlls)) if nlls else math.nan


def distinct(items: Iterable[list[str] | None]) -> float:
    grams = [g for item in items if item is not None for g in item]
    return len(set(grams)) / len(grams) if grams else 0.0


def rep(items: Iterable) -> float:
    pairs = [item for item in items if item is not None]
    total = sum(int(p) for _, p in pairs)
    return sum(int(r) for r, _ in pairs) / total if total else 0.0


def words_valid(items: Iterable[int | None]) -> float:
    counts = [int(w) for w in items if w is not None]
    return sum(counts) / len(counts) if counts else 0.0


def n_valid(items: Iterable[int]) -> int:
    return int(sum(1 for v in items if v))


def empty_share(items: Iterable[int]) -> float:
    flags = list(items)
    return sum(1 for v in flags if v) / len(flags) if flags else math.nan


AGGREGATIONS: dict[str, Callable] = {
    "genppl": genppl, "d2": distinct, "d3": distinct, "rep": rep,
    "words": words_valid, "n_valid": n_valid, "empty": empty_share,
}


def released_metrics(texts: Sequence[str], nll_fn: Callable[[list[str]], list]) -> dict:
    """The whole set from a list of outputs, the released way; ``nll_fn`` scores a list of texts as
    :meth:`Evaluator.score` does (it is only given the valid ones). Equal by construction to
    aggregating the per-sample items, which is the point: it documents how they combine."""
    samples = [per_sample(t) for t in texts]
    valid = [t for t, s in zip(texts, samples) if s["valid"]]
    scores = iter(nll_fn(valid) if valid else [])
    rows = [metric_items(s, next(scores) if s["valid"] else None) for s in samples]
    return {name: agg([r[name] for r in rows]) for name, agg in AGGREGATIONS.items()}
