"""lm-eval helpers shared by every summarization task (``dsl_summ_*``, synthetic included).

The task YAMLs (written by ``_generate.py``) point here with ``!function summ_utils.<name>``:
one loader per dataset (``custom_dataset``), one prompt builder, one ``process_results``. Data
loading, the seeded draw and the word limit live in :mod:`dslbench.data.summarization`; the
metrics in :mod:`dslbench.metrics.summary` and :mod:`dslbench.metrics.efficiency`.

lm-eval calls ``custom_dataset(**metadata, **dataset_kwargs)``; ``metadata`` is the task's YAML
``metadata`` (defaults ``n_docs``, ``max_words``, ``seed``) updated with the user's
``--metadata '{...}'`` JSON (and lm-eval's own keys and the model args, which are ignored here).
``rouge_tokenizer`` (``default`` | ``unicode``, see :mod:`dslbench.metrics.rouge`) travels with
each document to ``process_results``.
"""

from __future__ import annotations

import logging

import datasets

from dslbench.data.prompts import SYNTH_INSTRUCTION, summarization_prompt
from dslbench.data.summarization import DATASETS, load_examples
from dslbench.data.synth import make_summarization_examples
from dslbench.metrics.sample_stats import split_stats
from dslbench.metrics.aggregate import count, mean_defined, pooled_ratio  # noqa: F401  (YAML aggregations)
from dslbench.metrics.efficiency import efficiency, tokens_per_forward  # noqa: F401  (YAML aggregation)
from dslbench.metrics.newsroom import source_seen
from dslbench.metrics.rouge import ROUGE_TOKENIZERS, rouge_tokens
from dslbench.metrics.summary import summary_metrics

log = logging.getLogger(__name__)


def _with_tokenizer(name: str, rows: list[dict], rouge_tokenizer: str) -> list[dict]:
    """Each row with the task's ROUGE tokenizer; one warning when references tokenize to nothing
    under it (every output would score ROUGE 0 against them)."""
    if rouge_tokenizer not in ROUGE_TOKENIZERS:
        raise ValueError(
            f"{name}: metadata rouge_tokenizer={rouge_tokenizer!r}; allowed: {', '.join(ROUGE_TOKENIZERS)}"
        )
    blank = sum(1 for r in rows if not rouge_tokens(r["summary"], rouge_tokenizer))
    if blank:
        hint = (" (rouge-score's default tokenizer keeps only [a-z0-9]; for non-English data pass "
                "--metadata '{\"rouge_tokenizer\": \"unicode\"}')" if rouge_tokenizer == "default" else "")
        log.warning("%s: %d of %d reference summaries have no ROUGE tokens under the %s tokenizer: every "
                    "output scores ROUGE 0 against them%s", name, blank, len(rows), rouge_tokenizer, hint)
    return [{**r, "rouge_tokenizer": rouge_tokenizer} for r in rows]


def _as_dataset(rows: list[dict]) -> datasets.DatasetDict:
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def _loader(name: str):
    def load(n_docs=1000, max_words=1500, seed=42, rouge_tokenizer="default", **_metadata) -> datasets.DatasetDict:
        rows = load_examples(name, n_docs=n_docs, max_words=max_words, seed=seed)
        return _as_dataset(_with_tokenizer(name, rows, rouge_tokenizer))

    load.__name__ = load.__qualname__ = f"load_{name}"
    load.__doc__ = f"The seeded {name} test draw (local JSONL under $DSLBENCH_DATA_DIR, else the hub)."
    return load


load_xsum = _loader("xsum")
load_cnndm = _loader("cnndm")
load_pubmed = _loader("pubmed")
load_arxiv = _loader("arxiv")
load_samsum = _loader("samsum")
assert {f"load_{n}" for n in DATASETS} <= set(globals())


def load_synth(n_docs=200, seed=42, rouge_tokenizer="default", **_metadata) -> datasets.DatasetDict:
    """The synthetic held-out test split, generated on the fly (seeded; disjoint from training)."""
    rows = make_summarization_examples(int(n_docs), seed=int(seed), split="test")
    return _as_dataset(_with_tokenizer("synth", [{**r, "instruction": SYNTH_INSTRUCTION} for r in rows], rouge_tokenizer))


def doc_to_text(doc: dict) -> str:
    """Instruction line + source: one user message (one user turn with --apply_chat_template)."""
    return summarization_prompt(doc["instruction"], doc["document"])


def process_results(doc: dict, results: list[str]) -> dict:
    """Every summary metric plus the measured efficiency of one sample (empty outputs included).

    The Newsroom statistics are taken against the source the model saw: the document without
    the text the backend dropped from an over-long prompt (its record's ``prompt_dropped_text``);
    ``truncated_rate`` is 1 for a sample whose prompt was cut."""
    text, stats = split_stats(results[0])
    eff = efficiency(stats)
    if "prompt_tokens_dropped" not in stats:
        raise ValueError("the dslbench record has no prompt_tokens_dropped: it comes from an older dslbench; re-run the task")
    seen = source_seen(doc["document"], stats.get("prompt_dropped_text", ""))
    return {
        **summary_metrics(text, doc["summary"], seen, eff["gen_tokens"], doc.get("rouge_tokenizer", "default")),
        **eff,
        "truncated_rate": float(stats["prompt_tokens_dropped"] > 0),
        "tokens_per_forward": (eff["gen_tokens"], eff["nfe"]),
    }
