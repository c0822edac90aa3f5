"""lm-eval helpers of the open-ended generation tasks (``dsl_gen_*``).

The task YAMLs (written by ``_generate.py``) point here with ``!function gen_utils.<name>``.

- Loaders (``custom_dataset``): the released prompts / prefixes shipped in
  :mod:`dslbench.data.open_ended`, or the synthetic prefixes. Each document carries the
  evaluator's name (metadata ``ppl_model``, default ``gpt2-large`` as published) to the filter.
- :class:`EvaluatorScores` (the tasks' filter): one batched pass of the evaluator over every
  response of the task (:mod:`dslbench.metrics.evaluator`), its per-sample NLL and token count
  added to the sample's dslbench record, so they land in ``--log_samples`` files.
- :func:`process_results`: what each sample contributes to each metric
  (:mod:`dslbench.metrics.open_ended`); the aggregations pool them as the released script does.
"""

from __future__ import annotations

import datasets
from lm_eval.api.filter import Filter

from dslbench.data.open_ended import load_prefixes as _released_prefixes
from dslbench.data.open_ended import load_prompts as _released_prompts
from dslbench.data.open_ended import synth_prefixes
from dslbench.metrics import open_ended as oe
from dslbench.metrics.efficiency import efficiency, tokens_per_forward  # noqa: F401  (YAML aggregation)
from dslbench.metrics.open_ended import distinct, genppl, n_valid, rep, words_valid  # noqa: F401  (YAML aggregations)
from dslbench.metrics.evaluator import load_evaluator
from dslbench.metrics.sample_stats import attach_stats, split_stats

DEFAULT_PPL_MODEL = "gpt2-large"


def _as_dataset(rows: list[dict], ppl_model: str) -> datasets.DatasetDict:
    if not isinstance(ppl_model, str) or not ppl_model.strip():
        raise ValueError(f"metadata ppl_model={ppl_model!r}: give a causal LM's hub id or a local folder")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list([{**r, "ppl_model": ppl_model} for r in rows])})


def load_prompts(ppl_model: str = DEFAULT_PPL_MODEL, **_metadata) -> datasets.DatasetDict:
    """The 200 released instruction prompts; no reference text (MAUVE is not defined here)."""
    rows = [{"id": r["id"], "category": r["category"], "prompt": r["prompt"], "reference": ""}
            for r in _released_prompts()]
    return _as_dataset(rows, ppl_model)


def load_prefixes(ppl_model: str = DEFAULT_PPL_MODEL, **_metadata) -> datasets.DatasetDict:
    """The 200 released WikiText-103 prefixes; the continuation is each item's reference."""
    rows = [{"id": r["id"], "prompt": r["prefix"], "reference": r["continuation"]} for r in _released_prefixes()]
    return _as_dataset(rows, ppl_model)


def load_synth(n_docs: int = 200, seed: int = 42, ppl_model: str = DEFAULT_PPL_MODEL, **_metadata) -> datasets.DatasetDict:
    rows = [{"id": r["id"], "prompt": r["prefix"], "reference": r["continuation"]}
            for r in synth_prefixes(int(n_docs), seed=int(seed))]
    return _as_dataset(rows, ppl_model)


class EvaluatorScores(Filter):
    """Takes each instance's response (as lm-eval's default ``take_first``) and adds the
    evaluator's GenPPL contribution to its dslbench record: ``ppl_model``, ``ppl_nll`` (the mean
    token NLL of the text's first 128 words, None when not scored) and ``ppl_tokens``."""

    def apply(self, resps, docs):
        texts, records = [], []
        for resp in resps:
            text, stats = split_stats(resp[0])
            texts.append(text)
            records.append(stats)
        models = {doc["ppl_model"] for doc in docs}
        if len(models) > 1:
            raise ValueError(f"one task names several evaluators: {sorted(models)}")
        if not texts:
            return []
        evaluator = load_evaluator(models.pop())
        valid = [i for i, t in enumerate(texts) if t.strip()]  # the released script scores non-empty outputs
        scores = dict(zip(valid, evaluator.score([texts[i] for i in valid])))
        out = []
        for i, (text, stats) in enumerate(zip(texts, records)):
            if stats is None:  # not a dslbench backend: process_results names the problem
                out.append(text)
                continue
            nll, n_tokens = scores.get(i) or (None, 0)
            out.append(attach_stats(text, {**stats, "ppl_model": evaluator.name, "ppl_nll": nll, "ppl_tokens": n_tokens}))
        return out


def process_results(doc: dict, results: list[str]) -> dict:
    text, stats = split_stats(results[0])
    eff = efficiency(stats)
    if "ppl_nll" not in stats:
        raise ValueError("the dslbench record has no evaluator score: run the dsl_gen_* task as shipped (its filter scores it)")
    score = None if stats["ppl_nll"] is None else (stats["ppl_nll"], stats["ppl_tokens"])
    out = {
        **oe.metric_items(oe.per_sample(text), score),
        **eff,
        "tokens_per_forward": (eff["gen_tokens"], eff["nfe"]),
    }
    if doc.get("reference"):
        out["mauve"] = {"id": doc["id"], "text": text, "reference": doc["reference"], "ppl_model": stats["ppl_model"]}
    return out


def mauve(items) -> float:
    """MAUVE of the generations against the references, paired as the released script pairs them
    (documents in id order; see :func:`dslbench.metrics.evaluator.released_mauve`)."""
    from dslbench.metrics.evaluator import released_mauve

    items = sorted(items, key=lambda it: it["id"])
    if not items:
        return float("nan")
    evaluator = load_evaluator(items[0]["ppl_model"])
    return released_mauve([it["text"] for it in items], [it["reference"] for it in items], evaluator)
