"""Repetition and diversity of one output, over whitespace words (``text.words``).

Per sample (values in [0, 1]):

seq-rep-n (Welleck et al., 2019)
    ``1 - |unique n-grams| / |n-grams|`` over the output's words.  An output with
    fewer than n words has no n-grams and therefore no repeated n-gram: 0.0.
adjacent repetition
    ``#{i >= 1 : w[i] == w[i-1]} / (len(w) - 1)``: the share of words (from the second
    on, i.e. of those that have a previous word) equal to the previous word, compared
    exactly (case-sensitive).  This is the published denominator
    (fengsxy/DSL-LLaDA ``dsl_llada/eval/compute_metrics_batch.py``, ``compute_rep_rate``,
    counts adjacent pairs).  Fewer than 2 words: 0.0 (the published fallback).
distinct-n
    ``|unique n-grams| / |n-grams|`` over the output's words, so per sample
    ``distinct_n = 1 - seq_rep_n`` whenever the output has n-grams.  Fewer than n
    words: 0.0 (the published fallback, ``compute_distinct_n``); then distinct-n and
    seq-rep-n are both 0, which is why the empty / short flags are reported too.

Corpus-level variants (``*_corpus``) pool the n-grams / adjacent pairs of all outputs
first, exactly as the published script does (which also leaves empty outputs out);
lm-eval's per-sample ``mean`` is the mean of the per-sample ratios instead.
"""

from __future__ import annotations

from typing import Iterable

from dslbench.metrics.text import ngrams, words


def seq_rep_n(tokens: list[str], n: int) -> float:
    grams = ngrams(tokens, n)
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def distinct_n(tokens: list[str], n: int) -> float:
    grams = ngrams(tokens, n)
    if not grams:
        return 0.0
    return len(set(grams)) / len(grams)


def adjacent_rep_counts(tokens: list[str]) -> tuple[int, int]:
    """(repeated adjacent pairs, adjacent pairs) of one output: the terms that the published
    rate pools over outputs (an empty or one-word output adds (0, 0))."""
    repeats = sum(1 for prev, cur in zip(tokens, tokens[1:]) if cur == prev)
    return repeats, max(len(tokens) - 1, 0)


def adjacent_rep(tokens: list[str]) -> float:
    repeats, pairs = adjacent_rep_counts(tokens)
    return repeats / pairs if pairs else 0.0


def distinct_n_corpus(texts: Iterable[str], n: int) -> float:
    """Unique / total n-grams pooled over all non-empty outputs (published definition)."""
    grams = [g for t in texts if t.strip() for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def adjacent_rep_corpus(texts: Iterable[str]) -> float:
    """Repeated adjacent pairs / all adjacent pairs, pooled over non-empty outputs (published)."""
    counts = [adjacent_rep_counts(words(t)) for t in texts]
    repeats, pairs = sum(r for r, _ in counts), sum(p for _, p in counts)
    return repeats / pairs if pairs else 0.0
