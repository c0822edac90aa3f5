"""lm-eval helpers of the unconditional-generation tasks (``dsl_uncond_*``).

The task YAMLs (written by ``_generate.py``) point here with ``!function uncond_utils.<name>``.

- :class:`UncondTask`: lm-eval's ConfigurableTask with one addition: metadata ``length``
  replaces the generated length (``gen_length``) of every request.
- :func:`load_samples` (``custom_dataset``): N documents (metadata ``num_samples``), each only a
  sample name (``sample <i>``: the backend derives the sample's seed from it and shows the model
  no prompt, ``prompt_format: none``) and its MAUVE reference (line i of
  ``$DSLBENCH_DATA_DIR/owt_references.jsonl``).
- :class:`UncondScores` (the filter): the evaluator's ReMDM-style GenPPL of every sample of the
  task in one pass (padding and EOS rule depend on the whole set), added to each sample's record.
- :func:`process_results` and the aggregations: :mod:`dslbench.metrics.uncond` (entropy, pooled
  GenPPL), :mod:`dslbench.metrics.open_ended` (length, repetition) and MAUVE from
  :mod:`dslbench.metrics.evaluator`.
"""

from __future__ import annotations

import datasets
from lm_eval.api.filter import Filter
from lm_eval.api.task import ConfigurableTask

from dslbench.data.uncond import load_references, reference_texts
from dslbench.metrics import open_ended as oe
from dslbench.metrics import uncond as un
from dslbench.metrics.efficiency import efficiency, tokens_per_forward  # noqa: F401  (YAML aggregation)
from dslbench.metrics.open_ended import distinct, n_valid, rep, words_valid  # noqa: F401  (YAML aggregations)
from dslbench.metrics.uncond import mean_entropy as entropy, pooled_genppl as genppl  # noqa: F401  (YAML aggregations)
from dslbench.metrics.evaluator import load_evaluator, mauve_score
from dslbench.metrics.sample_stats import attach_stats, split_stats

DEFAULT_PPL_MODEL = "gpt2-large"
MAUVE_MAX_TOKENS = 1024  # released: compute_mauve(max_text_length=1024)


def _positive_int(name: str, value) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or str(number) != str(value).strip():
        raise ValueError(f"dsl_uncond metadata {name}={value!r}: give a whole number >= 1")
    return number


class UncondTask(ConfigurableTask):
    """Metadata ``length`` (e.g. ``--metadata '{"length": 64}'``) sets the generated length."""

    def __init__(self, config=None, **kwargs):
        config = {k: v for k, v in (config or {}).items() if k != "class"}  # lm-eval's route key, not a field
        super().__init__(config=config, **kwargs)
        length = (self.config.metadata or {}).get("length")
        if length is not None:
            self.config.generation_kwargs["gen_length"] = _positive_int("length", length)


def load_samples(num_samples: int = 5000, ppl_model: str = DEFAULT_PPL_MODEL, **_metadata) -> datasets.DatasetDict:
    n = _positive_int("num_samples", num_samples)
    if not isinstance(ppl_model, str) or not ppl_model.strip():
        raise ValueError(f"metadata ppl_model={ppl_model!r}: give a causal LM's hub id or a local folder")
    refs = reference_texts()  # fails here, before any generation, when the file is missing
    rows = [{"id": i, "prompt": f"sample {i}", "reference": refs[i] if i < len(refs) else "", "ppl_model": ppl_model}
            for i in range(n)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


class UncondScores(Filter):
    """Takes each instance's response and adds the evaluator's ReMDM GenPPL contribution to its
    dslbench record: ``ppl_model``, ``genppl_nll_sum``, ``genppl_tokens``."""

    def apply(self, resps, docs):
        split = [split_stats(r[0]) for r in resps]
        models = {doc["ppl_model"] for doc in docs}
        if len(models) > 1:
            raise ValueError(f"one task names several evaluators: {sorted(models)}")
        if not split:
            return []
        if any(stats is None or "gen_length" not in stats for _, stats in split):
            raise ValueError("dsl_uncond_*: a response has no dslbench record: run these tasks on a dslbench backend")
        lengths = {stats["gen_length"] for _, stats in split}
        evaluator = load_evaluator(models.pop())
        # released: retokenized with truncation at the generated length (model.length)
        scores = evaluator.score_chunked([text for text, _ in split], max_length=max(lengths))
        return [attach_stats(text, {**stats, "ppl_model": evaluator.name, "genppl_nll_sum": nll, "genppl_tokens": n})
                for (text, stats), (nll, n) in zip(split, scores)]


def process_results(doc: dict, results: list[str]) -> dict:
    text, stats = split_stats(results[0])
    if stats is None or "genppl_tokens" not in stats or "gen_ids" not in stats:
        raise ValueError("dsl_uncond_*: the dslbench record has no evaluator score or token ids: run the task as shipped")
    if not doc["reference"]:
        load_references(int(doc["id"]) + 1)  # raises: the file holds fewer references than samples
    eff = efficiency(stats)
    return {
        **oe.metric_items(oe.per_sample(text)),
        "genppl": (stats["genppl_nll_sum"], stats["genppl_tokens"]),
        "entropy": un.token_entropy(stats["gen_ids"]),
        "mauve": {"id": doc["id"], "text": text, "reference": doc["reference"], "ppl_model": stats["ppl_model"]},
        **eff,
        "tokens_per_forward": (eff["gen_tokens"], eff["nfe"]),
    }


def mauve(items) -> float:
    """MAUVE (mauve-text defaults) of the samples (q) against the first N references (p), as
    ReMDM's ``compute_mauve(p_text=references, q_text=samples, max_text_length=1024)``; the
    features are the evaluator's (GPT-2-large by default, mauve's own default featurizer)."""
    import math

    items = sorted(items, key=lambda it: it["id"])
    if len(items) < 2:
        return math.nan  # mauve needs two texts a side
    evaluator = load_evaluator(items[0]["ppl_model"])
    return mauve_score([it["reference"] for it in items], [it["text"] for it in items], evaluator,
                       max_text_length=min(MAUVE_MAX_TOKENS, evaluator.context_size))
