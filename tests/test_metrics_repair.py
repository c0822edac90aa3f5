"""Repair fix / preserve rates against hand-computed values, oracle and identity repairs."""

from __future__ import annotations

import pytest

from dslbench.metrics.repair import per_passage_rate, pooled_rate, repair_scores, repair_word_scores, undefined_passages

ORIG = [1, 2, 3, 4, 5, 6]
POS = [1, 4]
CORR = [1, 9, 3, 4, 8, 6]


def test_token_level_hand_example():
    # position 1 restored (2), position 4 not (8 != 5) -> fix 1/2
    # clean 0, 2, 3, 5: position 3 changed (7 != 4) -> preserve 3/4
    s = repair_scores(ORIG, CORR, [1, 2, 3, 7, 8, 6], POS)
    assert s == {
        "fix_rate": 0.5,
        "preserve_rate": 0.75,
        "n_corrupted": 2,
        "n_fixed": 1,
        "n_clean": 4,
        "n_preserved": 3,
    }


def test_oracle_and_identity_repairs():
    oracle = repair_scores(ORIG, CORR, list(ORIG), POS)
    assert oracle["fix_rate"] == 1.0 and oracle["preserve_rate"] == 1.0
    identity = repair_scores(ORIG, CORR, list(CORR), POS)
    assert identity["fix_rate"] == 0.0 and identity["preserve_rate"] == 1.0


def test_undefined_rates_are_none_not_zero_or_one():
    s = repair_scores([1, 2], [1, 2], [1, 3], [])
    assert s["fix_rate"] is None and s["n_corrupted"] == 0
    assert s["preserve_rate"] == 0.5
    s = repair_scores([1, 2], [3, 4], [1, 4], [0, 1])
    assert s["preserve_rate"] is None and s["n_clean"] == 0
    assert s["fix_rate"] == 0.5


def test_inconsistent_inputs_are_errors():
    with pytest.raises(ValueError, match="lengths differ"):
        repair_scores(ORIG, CORR, ORIG[:-1], POS)
    with pytest.raises(ValueError, match="not listed as corrupted"):
        repair_scores(ORIG, CORR, ORIG, [1])
    with pytest.raises(ValueError, match="outside"):
        repair_scores(ORIG, CORR, ORIG, [1, 4, 6])
    with pytest.raises(ValueError, match="twice"):
        repair_scores(ORIG, CORR, ORIG, [1, 4, 4])
    with pytest.raises(ValueError, match="all three texts"):
        repair_scores(ORIG, CORR, ORIG, POS, original_text="a")


def test_word_level_position_alignment():
    # corrupted words: 1 (cat->dog), 3 (on->in); repaired keeps 0, 1, 2, 5 (in != on, a != the)
    # fix: word 1 kept -> 1/2; clean {0, 2, 4, 5}: kept 0, 2, 5 -> 3/4
    w = repair_word_scores("the cat sat on the mat", "the dog sat in the mat", "the cat sat in a mat")
    assert w["word_alignment"] == "position"
    assert (w["word_fix_rate"], w["word_preserve_rate"]) == (0.5, 0.75)
    assert (w["n_corrupted_words"], w["n_fixed_words"], w["n_clean_words"], w["n_preserved_words"]) == (2, 1, 4, 3)


def test_word_level_difflib_alignment_when_lengths_differ():
    orig = "the cat sat on the mat"
    corr = "the dogs and cats sat on the mat"  # 'cat' -> 3 words: word 1 corrupted, 5 clean
    rep = "the cat sat on mat"  # 'cat' restored, second 'the' dropped
    w = repair_word_scores(orig, corr, rep)
    assert w["word_alignment"] == "difflib"
    # fix: 1/1; clean {0, 2, 3, 4, 5}: 4 ('the') unmatched -> 4/5
    assert (w["word_fix_rate"], w["word_preserve_rate"]) == (1.0, 0.8)
    assert repair_word_scores(orig, corr, orig)["word_fix_rate"] == 1.0  # oracle
    assert repair_word_scores(orig, corr, orig)["word_preserve_rate"] == 1.0
    identity = repair_word_scores(orig, corr, corr)
    assert (identity["word_fix_rate"], identity["word_preserve_rate"]) == (0.0, 1.0)


def test_word_level_undefined_rates():
    w = repair_word_scores("a b", "a b", "a b")
    assert w["word_fix_rate"] is None and w["word_preserve_rate"] == 1.0
    w = repair_word_scores("a b", "c d", "a d")
    assert w["word_preserve_rate"] is None and w["word_fix_rate"] == 0.5


def test_repair_scores_merges_word_level():
    s = repair_scores(
        ORIG, CORR, list(ORIG), POS,
        original_text="the cat sat", corrupted_text="the dog sat", repaired_text="the cat sat",
    )
    assert s["fix_rate"] == 1.0 and s["word_fix_rate"] == 1.0 and s["word_preserve_rate"] == 1.0


def test_pooled_rate_is_a_ratio_of_sums():
    # (1 + 3) / (2 + 4) = 2/3, not the mean of 1/2 and 3/4
    assert pooled_rate([(1, 2), (3, 4), (0, 0)]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no positions"):
        pooled_rate([(0, 0)])


def test_per_passage_rate_is_the_mean_of_each_passage_rate():
    # the published aggregation: (1/2 + 3/4) / 2 = 5/8; a passage with no positions is left out
    assert per_passage_rate([(1, 2), (3, 4), (0, 0)]) == pytest.approx(5 / 8)
    assert per_passage_rate([(1, 1), (0, 9)]) == pytest.approx(0.5)  # pooled would say 1/10
    assert undefined_passages([(1, 2), (0, 0), (0, 0)]) == 2
    with pytest.raises(ValueError, match="no passage has a defined rate"):
        per_passage_rate([(0, 0)])


def test_repair_task_aggregations_by_hand():
    import importlib.util

    from dslbench.paths import tasks_dir

    spec = importlib.util.spec_from_file_location("repair_utils", tasks_dir() / "repair" / "repair_utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    pairs = [(1, 2), (3, 4)]
    assert utils.per_passage_percent(pairs) == pytest.approx(62.5)
    assert utils.pooled_percent(pairs) == pytest.approx(400 / 6)
