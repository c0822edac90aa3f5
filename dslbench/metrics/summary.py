"""Every per-sample summarization metric, as one flat dict (lm-eval ``process_results`` values).

``summary_metrics(prediction, reference, source)`` returns exactly the keys of
``SUMMARY_METRICS``, in that order; ``AGGREGATION`` says how the task turns each into a figure
(:mod:`dslbench.metrics.aggregate`):

===================  ==============================================================  ============
rouge1/2/L           ROUGE F1 x 100, rouge-score, Porter stemmer (``rouge.py``;      mean
                     ``rouge_tokenizer``: default or unicode); empty output: 0
words                output words (``text.words``: whitespace, the published count)  mean
words_nonempty       the same, None for an empty output (published avg length)       mean_defined
ref_words            reference words (same tokenisation)                             mean
length_ratio         words / ref_words (0.0 for an empty output)                     mean
short_output         1.0 when words < 0.25 * ref_words, or the output is empty       mean
empty                1.0 when the output has no words (blank or whitespace only)     mean
n_empty              the same flag, counted                                          count
seq_rep_1..4         1 - unique n-grams / n-grams over the words; 0.0 with < n       mean
adjacent_rep         repeated adjacent words / (words - 1); 0.0 with < 2 words       mean
adjacent_rep_pooled  (repeated adjacent pairs, adjacent pairs): pooled over          pooled_ratio
                     outputs, as the published Rep % (``repetition.py``)
distinct_2, 3        unique n-grams / n-grams; 0.0 with < n words                    mean
degenerate           1.0 when one of ``:::`` ``...`` ``{}`` ``""`` ``quest`` U+200B  mean
                     occurs more than 3 times (per pattern; ``degeneration.py``)
coverage             Newsroom fragment coverage against the source, in [0, 1]        mean_defined
density              Newsroom fragment density against the source                    mean_defined
compression          source tokens / output tokens (Newsroom)                        mean_defined
                     (all three: None for an empty output; ``newsroom.py``)
===================  ==============================================================  ============

``source`` is the source the model saw (the task removes what a prompt cut dropped). An empty
output is scored and counted, never dropped; a value that does not exist for it (the Newsroom
statistics, its non-empty length) is None and left out of the mean, with ``n_empty`` beside
it. An empty reference is bad data and raises ``ValueError`` (the length ratio and the
short-output threshold are undefined without one).
"""

from __future__ import annotations

import math

from dslbench.metrics.degeneration import is_degenerate
from dslbench.metrics.length import is_short_output, length_ratio
from dslbench.metrics.newsroom import newsroom
from dslbench.metrics.repetition import adjacent_rep, adjacent_rep_counts, distinct_n, seq_rep_n
from dslbench.metrics.rouge import ROUGE_TYPES, rouge
from dslbench.metrics.text import words

SUMMARY_METRICS: tuple[str, ...] = (
    "rouge1",
    "rouge2",
    "rougeL",
    "words",
    "words_nonempty",
    "ref_words",
    "length_ratio",
    "short_output",
    "empty",
    "n_empty",
    "seq_rep_1",
    "seq_rep_2",
    "seq_rep_3",
    "seq_rep_4",
    "adjacent_rep",
    "adjacent_rep_pooled",
    "distinct_2",
    "distinct_3",
    "degenerate",
    "coverage",
    "density",
    "compression",
)

# Direction for lm-eval's ``higher_is_better``.  Length and the Newsroom extractiveness
# figures have no better direction in themselves; they are listed in DIRECTIONLESS and
# given True only because lm-eval needs a boolean.
DIRECTIONLESS: frozenset[str] = frozenset(
    {"words", "words_nonempty", "ref_words", "length_ratio", "coverage", "density", "compression"}
)
HIGHER_IS_BETTER: dict[str, bool] = {
    **{k: True for k in ROUGE_TYPES},
    **{k: True for k in DIRECTIONLESS},
    "short_output": False,
    "empty": False,
    "n_empty": False,
    **{f"seq_rep_{n}": False for n in range(1, 5)},
    "adjacent_rep": False,
    "adjacent_rep_pooled": False,
    "distinct_2": True,
    "distinct_3": True,
    "degenerate": False,
}
assert set(HIGHER_IS_BETTER) == set(SUMMARY_METRICS)
# lm-eval aggregation per metric: "mean" (lm-eval's) or a function of dslbench.metrics.aggregate.
AGGREGATION: dict[str, str] = {
    **{k: "mean" for k in SUMMARY_METRICS},
    **{k: "mean_defined" for k in ("words_nonempty", "coverage", "density", "compression")},
    "n_empty": "count",
    "adjacent_rep_pooled": "pooled_ratio",
}


def summary_metrics(
    prediction: str,
    reference: str,
    source: str,
    gen_tokens: float | None = None,
    rouge_tokenizer: str = "default",
) -> dict[str, float | None | tuple[int, int]]:
    """All per-sample summarization metrics of one output (keys: ``SUMMARY_METRICS``).

    ``gen_tokens`` (the backend's generated-token count before EOS) is accepted for the
    task interface and checked to be a finite, non-negative number; it changes no value
    here: token counts and the efficiency figures come from ``efficiency.efficiency``.
    ``rouge_tokenizer``: ``default`` (rouge-score's, the published setting) or ``unicode``
    (:mod:`dslbench.metrics.rouge`).
    """
    if gen_tokens is not None and not (math.isfinite(float(gen_tokens)) and float(gen_tokens) >= 0):
        raise ValueError(f"summary_metrics: gen_tokens must be a non-negative number, got {gen_tokens!r}")
    out_words = words(prediction)
    ref_words = words(reference)
    if not ref_words:
        raise ValueError("summary_metrics: the reference summary is empty (bad data)")
    n, n_ref = len(out_words), len(ref_words)

    values: dict = dict(rouge(prediction, reference, rouge_tokenizer))
    values["words"] = float(n)
    values["words_nonempty"] = float(n) if n else None
    values["ref_words"] = float(n_ref)
    values["length_ratio"] = length_ratio(n, n_ref)
    values["short_output"] = float(is_short_output(n, n_ref))
    values["empty"] = float(n == 0)
    values["n_empty"] = float(n == 0)
    for k in range(1, 5):
        values[f"seq_rep_{k}"] = seq_rep_n(out_words, k)
    values["adjacent_rep"] = adjacent_rep(out_words)
    values["adjacent_rep_pooled"] = adjacent_rep_counts(out_words)
    values["distinct_2"] = distinct_n(out_words, 2)
    values["distinct_3"] = distinct_n(out_words, 3)
    values["degenerate"] = float(is_degenerate(prediction))
    values.update(newsroom(prediction, source))
    # None (does not exist) and the pooled (num, den) pair pass as they are; every other value is a float.
    return {k: v if v is None or isinstance(v, tuple) else float(v) for k, v in ((k, values[k]) for k in SUMMARY_METRICS)}
