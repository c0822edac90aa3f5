"""lm-eval helpers of the selective-corruption repair tasks.

How a request travels: the document is a clean passage; ``doc_to_text`` hands it to the backend
as the context, and the task's ``generation_kwargs`` (``repair_mode``, ``repair_rate``,
``repair_seed``, ``repair_nfe``, ``return_stats``) tell a dslbench backend to corrupt it in its
own token space (deterministic per passage and seed), run its repair mode, and return the
repaired text with a record of the original / corrupted / repaired ids and the repair protocol
that produced it. ``process_results`` scores that record. ``fix_rate`` / ``preserve_rate`` (and the
word-level pair) are means over passages of each passage's rate, as the published table is
computed; the ``*_pooled`` metrics are the same counts pooled over all positions of the run (ratio
of sums). All in percent.
"""

from __future__ import annotations

import logging

import datasets

from dslbench.data.repair import load_passages
from dslbench.metrics.sample_stats import split_stats
from dslbench.metrics.repair import per_passage_rate, pooled_rate, repair_scores, undefined_passages

log = logging.getLogger(__name__)


def load_passages_dataset(source: str = "wikitext", n_docs: int = 100, seed: int = 42, **_metadata) -> datasets.DatasetDict:
    rows = [{"id": str(r["id"]), "text": r["text"]} for r in load_passages(source, n_docs=n_docs, seed=seed)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def process_results(doc: dict, results: list[str]) -> dict:
    text, stats = split_stats(results[0])
    if stats is None or "corrupted_ids" not in stats:
        raise ValueError(
            "repair task: the response carries no repair record; run it with a dslbench backend "
            "(mdm_llada, dsl_llada, softmask_llada), which implements the repair mode"
        )
    s = repair_scores(
        stats["original_ids"], stats["corrupted_ids"], stats["repaired_ids"], stats["corrupted_positions"],
        original_text=stats["original_text"], corrupted_text=stats["corrupted_text"], repaired_text=text,
    )
    counts = {
        "fix_rate": (s["n_fixed"], s["n_corrupted"]),
        "preserve_rate": (s["n_preserved"], s["n_clean"]),
        "word_fix_rate": (s["n_fixed_words"], s["n_corrupted_words"]),
        "word_preserve_rate": (s["n_preserved_words"], s["n_clean_words"]),
    }
    return {
        **counts,
        **{f"{name}_pooled": pair for name, pair in counts.items()},
        "nfe": float(stats["nfe"]),
        "seconds_per_sample": float(stats["seconds"]),
    }


def per_passage_percent(pairs) -> float:
    """100 x the mean over passages of hits / total (the published aggregation); passages whose
    rate is undefined (total 0) are left out, with a warning that counts them."""
    pairs = list(pairs)
    if n := undefined_passages(pairs):
        log.warning("repair: %d of %d passages have no positions of this kind; left out of the per-passage mean", n, len(pairs))
    return 100.0 * per_passage_rate(pairs)


def pooled_percent(pairs) -> float:
    """100 x sum(hits) / sum(totals) over the run's samples."""
    return 100.0 * pooled_rate(pairs)
