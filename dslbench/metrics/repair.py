"""Selective-corruption repair: fix rate and preserve rate, at token and word level.

Token level (``repair_scores``), over the model's own token ids; the three sequences
have the same length (corruption and repair replace tokens in place):

* corrupted positions C: the positions the corruption replaced (given);
  clean positions: all others, where the corrupted sequence must equal the original
  (checked: a difference outside C is an error, not a silent miscount);
* ``fix_rate``      = #{p in C : repaired[p] == original[p]} / |C|
* ``preserve_rate`` = #{p not in C : repaired[p] == corrupted[p]} / #clean
  (equivalently == original[p] there).

Word level (``repair_word_scores``), over whitespace words of the decoded texts
(``text.words``), because a replaced token can change word boundaries:

* if original, corrupted and repaired have the same number of words, words are
  aligned by position: original word i is *corrupted* when corrupted[i] != original[i]
  and *kept* when repaired[i] == original[i];
* otherwise each of corrupted and repaired is aligned to the original with
  ``difflib.SequenceMatcher(autojunk=False)``: original word i is *kept* in a text
  when it falls in an ``equal`` block of that text's alignment (matched to an
  identical word), and *corrupted* when it is not kept in the corrupted text.

  ``word_fix_rate`` = kept corrupted words / corrupted words,
  ``word_preserve_rate`` = kept clean words / clean words.

Edge cases: with no corrupted positions (words) the fix rate is undefined and
returned as ``None``; with no clean positions (words) the preserve rate is ``None``.
They are never reported as 0 or 1.  The counts are always returned, so rates over a
run can be aggregated two ways:

* ``per_passage_rate``: the mean over passages of each passage's rate, as the published
  repair table is computed; a passage whose rate is undefined is left out of the mean
  (the released script would count a passage without clean positions as preserving
  100 %; here nothing is filled in) and ``undefined_passages`` says how many;
* ``pooled_rate``: the ratio of sums over all positions of the run (an undefined
  sample adds 0 to both sums), a dslbench figure that weights long passages more.

A corrupted position whose replacement happens to equal the original id counts as
corrupted (it is in C) and is "fixed" by any repair that keeps it; corruption
procedures should draw replacements different from the original.
"""

from __future__ import annotations

import difflib
from typing import Iterable

from dslbench.metrics.text import words


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def repair_scores(
    original_ids: list[int],
    corrupted_ids: list[int],
    repaired_ids: list[int],
    corrupted_positions: list[int],
    *,
    original_text: str | None = None,
    corrupted_text: str | None = None,
    repaired_text: str | None = None,
) -> dict:
    """Token-level fix / preserve rates and counts; with the three texts, word-level too.

    Returns ``fix_rate``, ``preserve_rate`` (float, or None when undefined),
    ``n_corrupted``, ``n_fixed``, ``n_clean``, ``n_preserved``; and when all three texts
    are given, the keys of ``repair_word_scores`` as well.
    """
    n = len(original_ids)
    if len(corrupted_ids) != n or len(repaired_ids) != n:
        raise ValueError(
            f"repair_scores: sequence lengths differ (original {n}, corrupted {len(corrupted_ids)}, "
            f"repaired {len(repaired_ids)}); repair must replace tokens in place"
        )
    corrupted = set()
    for p in corrupted_positions:
        if not 0 <= p < n:
            raise ValueError(f"repair_scores: corrupted position {p} outside 0..{n - 1}")
        if p in corrupted:
            raise ValueError(f"repair_scores: corrupted position {p} listed twice")
        corrupted.add(p)
    n_fixed = sum(1 for p in corrupted if repaired_ids[p] == original_ids[p])
    n_clean = n_preserved = 0
    for p in range(n):
        if p in corrupted:
            continue
        if corrupted_ids[p] != original_ids[p]:
            raise ValueError(f"repair_scores: position {p} differs from the original but is not listed as corrupted")
        n_clean += 1
        n_preserved += repaired_ids[p] == corrupted_ids[p]
    out = {
        "fix_rate": _rate(n_fixed, len(corrupted)),
        "preserve_rate": _rate(n_preserved, n_clean),
        "n_corrupted": len(corrupted),
        "n_fixed": n_fixed,
        "n_clean": n_clean,
        "n_preserved": n_preserved,
    }
    texts = (original_text, corrupted_text, repaired_text)
    if any(t is not None for t in texts):
        if any(t is None for t in texts):
            raise ValueError("repair_scores: give all three texts (original, corrupted, repaired) or none")
        out.update(repair_word_scores(original_text, corrupted_text, repaired_text))
    return out


def _kept(original: list[str], other: list[str]) -> list[bool]:
    """Per original word: matched to an identical word of ``other`` by difflib alignment."""
    kept = [False] * len(original)
    matcher = difflib.SequenceMatcher(a=original, b=other, autojunk=False)
    for tag, i1, i2, _j1, _j2 in matcher.get_opcodes():
        if tag == "equal":
            for i in range(i1, i2):
                kept[i] = True
    return kept


def repair_word_scores(original_text: str, corrupted_text: str, repaired_text: str) -> dict:
    """Word-level fix / preserve rates and counts (alignment: see the module docstring).

    Returns ``word_fix_rate``, ``word_preserve_rate`` (float, or None when undefined),
    ``n_corrupted_words``, ``n_fixed_words``, ``n_clean_words``, ``n_preserved_words``
    and ``word_alignment`` ("position" or "difflib").
    """
    orig, corr, rep = words(original_text), words(corrupted_text), words(repaired_text)
    if len(orig) == len(corr) == len(rep):
        alignment = "position"
        was_clean = [o == c for o, c in zip(orig, corr)]
        kept = [o == r for o, r in zip(orig, rep)]
    else:
        alignment = "difflib"
        was_clean = _kept(orig, corr)
        kept = _kept(orig, rep)
    n_corr = sum(1 for c in was_clean if not c)
    n_fixed = sum(1 for c, k in zip(was_clean, kept) if not c and k)
    n_clean = len(orig) - n_corr
    n_pres = sum(1 for c, k in zip(was_clean, kept) if c and k)
    return {
        "word_fix_rate": _rate(n_fixed, n_corr),
        "word_preserve_rate": _rate(n_pres, n_clean),
        "n_corrupted_words": n_corr,
        "n_fixed_words": n_fixed,
        "n_clean_words": n_clean,
        "n_preserved_words": n_pres,
        "word_alignment": alignment,
    }


def pooled_rate(pairs: Iterable[tuple[int, int]]) -> float:
    """sum(hits) / sum(totals) over samples, e.g. (n_fixed, n_corrupted) pairs.

    A run with no positions at all has no rate: that raises instead of returning 0.
    """
    pairs = list(pairs)
    hits = sum(h for h, _ in pairs)
    total = sum(t for _, t in pairs)
    if total <= 0:
        raise ValueError("pooled_rate: no positions were scored (all totals are 0)")
    return hits / total


def undefined_passages(pairs: Iterable[tuple[int, int]]) -> int:
    """How many samples have no positions (their rate is undefined)."""
    return sum(1 for _, t in pairs if t <= 0)


def per_passage_rate(pairs: Iterable[tuple[int, int]]) -> float:
    """Mean over samples of hits / total (the published aggregation), samples with total 0 left
    out. A run where every sample has total 0 has no rate: that raises instead of returning 0."""
    rates = [h / t for h, t in pairs if t > 0]
    if not rates:
        raise ValueError("per_passage_rate: no passage has a defined rate (all totals are 0)")
    return sum(rates) / len(rates)
