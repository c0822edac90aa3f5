"""Per-sample summarization metrics against hand-computed values (arithmetic in comments)."""

from __future__ import annotations

import math
import random
import sys

import pytest
from rouge_score import rouge_scorer

from dslbench.metrics import rouge as rouge_mod
from dslbench.metrics.degeneration import DEGENERATE_PATTERNS, is_degenerate
from dslbench.metrics.length import is_short_output, length_ratio
from dslbench.metrics.newsroom import extractive_fragments, fragment_stats, newsroom
from dslbench.metrics.repetition import (
    adjacent_rep,
    adjacent_rep_corpus,
    distinct_n,
    distinct_n_corpus,
    seq_rep_n,
)
from dslbench.metrics.summary import AGGREGATION, DIRECTIONLESS, HIGHER_IS_BETTER, SUMMARY_METRICS, summary_metrics
from dslbench.metrics.text import fragment_tokens, ngrams, words


def test_tokenisation():
    assert words("Hello,  world!\n x") == ["Hello,", "world!", "x"]
    assert words("   ") == []
    assert fragment_tokens("Hello,  world!\n x") == ["hello", ",", "world", "!", "x"]
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    assert ngrams(["a"], 2) == []


def test_seq_rep_and_distinct_on_known_repeats():
    w = words("a b a b a b")
    # 1-grams: 6, unique {a, b} = 2 -> 1 - 2/6 = 2/3
    assert seq_rep_n(w, 1) == pytest.approx(2 / 3)
    # 2-grams: ab ba ab ba ab = 5, unique 2 -> 1 - 2/5 = 3/5
    assert seq_rep_n(w, 2) == pytest.approx(3 / 5)
    # 3-grams: aba bab aba bab = 4, unique 2 -> 1/2
    assert seq_rep_n(w, 3) == pytest.approx(1 / 2)
    # 4-grams: abab baba abab = 3, unique 2 -> 1/3
    assert seq_rep_n(w, 4) == pytest.approx(1 / 3)
    assert distinct_n(w, 2) == pytest.approx(2 / 5)
    assert distinct_n(w, 3) == pytest.approx(2 / 4)
    # no repeats at all
    assert seq_rep_n(words("one two three four five"), 1) == 0.0
    assert distinct_n(words("one two three four five"), 3) == 1.0


def test_repetition_with_fewer_words_than_n():
    w = words("hello")
    assert seq_rep_n(w, 1) == 0.0  # one unigram, unique
    assert seq_rep_n(w, 2) == 0.0  # no bigram -> no repeated bigram
    assert distinct_n(w, 2) == 0.0  # published fallback for no n-grams
    assert adjacent_rep(w) == 0.0
    assert adjacent_rep([]) == 0.0


def test_adjacent_repetition():
    # pairs: (the,the)=1 (the,cat)=0 (cat,cat)=1 (cat,cat)=1 (cat,sat)=0 -> 3 / 5
    assert adjacent_rep(words("the the cat cat cat sat")) == pytest.approx(3 / 5)
    assert adjacent_rep(words("The the")) == 0.0  # exact (case-sensitive) comparison


def test_corpus_level_variants_pool_counts():
    # bigrams: "a b a b" -> ab ba ab; "" skipped; "a b c" -> ab bc: 5 total, unique {ab, ba, bc} = 3
    assert distinct_n_corpus(["a b a b", "", "a b c"], 2) == pytest.approx(3 / 5)
    # pairs: 2 + 1 = 3, repeats: (a,a) + (c,c) = 2
    assert adjacent_rep_corpus(["a a b", "c c", ""]) == pytest.approx(2 / 3)


def test_degenerate_rule_threshold_is_per_pattern():
    assert DEGENERATE_PATTERNS == (":::", "...", "{}", '""', "quest", "\u200b")
    assert not is_degenerate("a... b... c... d")  # 3 occurrences: not more than 3
    assert is_degenerate("a... b... c... d... e")  # 4 occurrences
    # 3 + 3 = 6 in total, but no single pattern exceeds 3 -> not degenerate
    assert not is_degenerate("a::: b::: c::: d... e... f...")
    assert is_degenerate("{}{}{}{}")
    assert not is_degenerate('"" "" ""')
    assert is_degenerate('"" "" "" ""')
    assert is_degenerate("\u200b" * 4) and not is_degenerate("\u200b" * 3)
    assert is_degenerate("question question question question")  # 'quest' matches inside words
    assert not is_degenerate("....")  # str.count is non-overlapping: '...' once
    assert is_degenerate("." * 12)  # 12 // 3 = 4 non-overlapping '...'


def test_newsroom_hand_computed():
    # A = the cat sat on the mat . the dog ran .  (|A| = 11); S = a dog sat on the mat (|S| = 6)
    # 'a' novel -> skip; 'dog' at A[8], next S 'sat' != A[9] 'ran' -> fragment [dog];
    # 'sat' at A[2] -> sat on the mat (4) -> fragment; lengths 1 and 4
    stats = newsroom("A dog sat on the mat", "the cat sat on the mat. the dog ran.")
    assert stats["coverage"] == pytest.approx(5 / 6)  # (1 + 4) / 6
    assert stats["density"] == pytest.approx(17 / 6)  # (1 + 16) / 6
    assert stats["compression"] == pytest.approx(11 / 6)


def test_newsroom_takes_the_longest_match():
    # A = the cat . the cat sat; S = the cat sat: 'the' at 0 matches 2, at 3 matches 3 -> one fragment of 3
    a, s = fragment_tokens("the cat . the cat sat"), fragment_tokens("the cat sat")
    assert extractive_fragments(a, s) == [["the", "cat", "sat"]]
    assert fragment_stats(a, s) == pytest.approx({"coverage": 1.0, "density": 3.0, "compression": 2.0})


def _fragments_by_definition(a, s):
    """Grusky et al. (2018) greedy fragments, scanning every article position."""
    out, i = [], 0
    while i < len(s):
        best, j = [], 0
        while j < len(a):
            if s[i] == a[j]:
                i2, j2 = i, j
                while i2 < len(s) and j2 < len(a) and s[i2] == a[j2]:
                    i2, j2 = i2 + 1, j2 + 1
                if len(best) < i2 - i:
                    best = s[i:i2]
                j = j2
            else:
                j += 1
        i += max(len(best), 1)
        if best:
            out.append(best)
    return out


def test_newsroom_indexed_scan_equals_full_scan():
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 30))]
        s = [rng.choice("abcde") for _ in range(rng.randint(0, 12))]
        assert extractive_fragments(a, s) == _fragments_by_definition(a, s)


def test_length_ratio_and_short_output_threshold():
    assert length_ratio(5, 20) == 0.25
    assert not is_short_output(5, 20)  # 5 < 0.25 * 20 = 5 is false
    assert is_short_output(4, 20)  # 4 < 5
    assert not is_short_output(1, 3)  # 1 < 0.75 is false: a 1-word output for a 3-word reference
    assert is_short_output(0, 3)  # empty is always short
    with pytest.raises(ValueError, match="reference has no words"):
        length_ratio(3, 0)


def test_summary_metrics_full_hand_example():
    m = summary_metrics("the cat the cat sat", "the cat sat on the mat", "the cat sat on the mat today")
    assert tuple(m) == SUMMARY_METRICS
    expected = {
        # ROUGE-1: overlap the=min(2,2) + cat=min(2,1) + sat=1 = 4; F = 2*4/(5+6) = 8/11
        "rouge1": 800 / 11,
        # ROUGE-2: pred {the cat x2, cat the, cat sat}, ref {the cat, cat sat, sat on, on the, the mat}
        # overlap 1 + 1 = 2; F = 2*2/(4+5) = 4/9
        "rouge2": 400 / 9,
        # ROUGE-L: LCS "the cat sat" = 3; F = 2*3/(5+6) = 6/11
        "rougeL": 600 / 11,
        "words": 5.0,
        "words_nonempty": 5.0,
        "ref_words": 6.0,
        "length_ratio": 5 / 6,
        "short_output": 0.0,  # 5 >= 0.25 * 6
        "empty": 0.0,
        "n_empty": 0.0,
        "seq_rep_1": 1 - 3 / 5,  # unique {the, cat, sat}
        "seq_rep_2": 1 - 3 / 4,  # the-cat twice among 4 bigrams
        "seq_rep_3": 0.0,  # the-cat-the, cat-the-cat, the-cat-sat: all unique
        "seq_rep_4": 0.0,
        "adjacent_rep": 0.0,
        "adjacent_rep_pooled": (0, 4),
        "distinct_2": 3 / 4,
        "distinct_3": 1.0,
        "degenerate": 0.0,
        # fragments: [the cat] (then 'the' != 'sat'), [the cat sat]: coverage 5/5, density (4+9)/5
        "coverage": 1.0,
        "density": 13 / 5,
        "compression": 7 / 5,
    }
    assert m.pop("adjacent_rep_pooled") == expected.pop("adjacent_rep_pooled")
    assert m == pytest.approx(expected)


def test_summary_rouge_matches_direct_rouge_score_call():
    pred = "The runners were running quickly to the stations."
    ref = "A runner runs quickly to the station."
    direct = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(ref, pred)
    m = summary_metrics(pred, ref, source=ref)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert m[key] == pytest.approx(100 * direct[key].fmeasure)


def test_empty_output_is_scored_not_dropped():
    for pred in ("", "  \n "):
        m = summary_metrics(pred, "the cat sat on the mat", "the cat sat on the mat today")
        assert tuple(m) == SUMMARY_METRICS
        # Values that do not exist for an empty output are None, never a stand-in number.
        undefined = {"words_nonempty", "coverage", "density", "compression"}
        assert all(m[k] is None for k in undefined)
        assert all(isinstance(v, float) and math.isfinite(v) for k, v in m.items() if k not in undefined | {"adjacent_rep_pooled"})
        assert m["adjacent_rep_pooled"] == (0, 0)
        assert m["rouge1"] == m["rouge2"] == m["rougeL"] == 0.0
        assert m["words"] == 0.0 and m["length_ratio"] == 0.0
        assert m["empty"] == m["n_empty"] == 1.0 and m["short_output"] == 1.0
        assert all(m[k] == 0.0 for k in ("seq_rep_1", "seq_rep_4", "adjacent_rep", "distinct_2", "degenerate"))


def test_degenerate_and_short_in_summary_metrics():
    m = summary_metrics("ok ... ... ... ...", "one two three four five six seven eight nine ten", "src")
    assert m["degenerate"] == 1.0
    assert m["short_output"] == 0.0  # 5 words >= 2.5
    m = summary_metrics("ok", "one two three four five six seven eight nine ten", "src")
    assert m["short_output"] == 1.0 and m["empty"] == 0.0  # 1 < 2.5


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="reference summary is empty"):
        summary_metrics("text", "  ", "src")
    with pytest.raises(ValueError, match="gen_tokens"):
        summary_metrics("text", "ref", "src", gen_tokens=-1)
    assert summary_metrics("text", "ref", "src", gen_tokens=3) == summary_metrics("text", "ref", "src")


def test_metric_lists_are_consistent():
    assert len(set(SUMMARY_METRICS)) == len(SUMMARY_METRICS) == 22
    assert set(AGGREGATION) == set(SUMMARY_METRICS)
    assert set(HIGHER_IS_BETTER) == set(SUMMARY_METRICS)
    assert DIRECTIONLESS <= set(SUMMARY_METRICS)
    assert HIGHER_IS_BETTER["rouge1"] and not HIGHER_IS_BETTER["degenerate"]
    assert not HIGHER_IS_BETTER["seq_rep_2"] and HIGHER_IS_BETTER["distinct_2"]


def test_missing_rouge_dependency_raises_not_zero(monkeypatch):
    rouge_mod._scorer.cache_clear()
    monkeypatch.setitem(sys.modules, "rouge_score", None)
    try:
        with pytest.raises(ImportError, match="rouge-score"):
            summary_metrics("the cat", "the cat sat", "src")
        with pytest.raises(ImportError, match="rouge-score"):
            summary_metrics("", "the cat sat", "src")
    finally:
        rouge_mod._scorer.cache_clear()


# ------------------------------------------------------------------ no fabricated values (#15)
def test_aggregations_skip_what_does_not_exist_and_count_it():
    from dslbench.metrics.aggregate import count, mean_defined, pooled_ratio

    assert mean_defined([2.0, None, 4.0, None]) == 3.0  # over the two that exist, not (2+0+4+0)/4
    assert math.isnan(mean_defined([None, None]))  # an all-empty run has no compression at all
    assert count([1.0, 0.0, 1.0]) == 2
    # pooled over outputs: (1 + 0) / (1 + 3), not the mean of the per-output rates (1 + 0) / 2
    assert pooled_ratio([(1, 1), (0, 3), (0, 0)]) == pytest.approx(1 / 4)
    assert math.isnan(pooled_ratio([(0, 0)]))


def test_an_all_empty_run_reports_no_newsroom_figure_and_counts_the_empties():
    from dslbench.metrics.aggregate import count, mean_defined

    rows = [summary_metrics("", "the cat sat", "the cat sat on the mat today") for _ in range(5)]
    for key in ("coverage", "density", "compression", "words_nonempty"):
        assert math.isnan(mean_defined(r[key] for r in rows))
    assert count(r["n_empty"] for r in rows) == 5
    mixed = rows[:3] + [summary_metrics("cat sat", "the cat sat", "the cat sat on the mat today")]
    assert mean_defined(r["compression"] for r in mixed) == pytest.approx(7 / 2)  # the one real output


def test_pooled_adjacent_repetition_is_the_published_rate():
    texts = ["a a b", "c c", "", "x y z w"]
    pairs = [summary_metrics(t or " ", "ref words here", "src")["adjacent_rep_pooled"] for t in texts]
    from dslbench.metrics.aggregate import pooled_ratio

    assert pooled_ratio(pairs) == pytest.approx(adjacent_rep_corpus(texts)) == pytest.approx(2 / 6)
    assert AGGREGATION["adjacent_rep_pooled"] == "pooled_ratio" and AGGREGATION["adjacent_rep"] == "mean"


def test_source_seen_removes_exactly_the_dropped_text():
    from dslbench.metrics.newsroom import source_seen

    doc = "Head of the story. Middle part that was cut. The very end."
    assert source_seen(doc, "") == doc
    assert source_seen(doc, "Middle part that was cut. ") == "Head of the story. The very end."
    # a cut that ran past the document into a chat template's closing text
    assert source_seen(doc, "The very end.<|eot|>assistant") == "Head of the story. Middle part that was cut. "
    with pytest.raises(ValueError, match="not part of the source"):
        source_seen(doc, "something else entirely")


# ------------------------------------------------------------------ scripts (#15)
def test_cyrillic_reference_scores_zero_by_default_and_is_scored_with_the_unicode_tokenizer():
    from dslbench.metrics.rouge import rouge, rouge_tokens

    ref = "Кошка сидела на ковре."
    assert rouge_tokens(ref) == []  # rouge-score keeps only [a-z0-9]
    assert rouge(ref, ref)["rouge1"] == 0.0  # the published tokenizer, unchanged
    assert rouge(ref, ref, "unicode") == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    assert rouge("Кошка сидела", ref, "unicode")["rouge1"] == pytest.approx(100 * 2 * (1 * 0.5) / 1.5)
    assert rouge_tokens("你好世界 🎉, ok", "unicode") == ["你", "好", "世", "界", "🎉", "ok"]
    # English text: the same tokens (and stems) as rouge-score's own tokenizer
    english = "The runners were running quickly to the stations."
    assert rouge_tokens(english, "unicode") == rouge_tokens(english)
    with pytest.raises(ValueError, match="allowed: default, unicode"):
        rouge("a", "b", "latin")
