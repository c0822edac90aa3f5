"""What a cell actually ran, read back from lm-eval's own output files.

A task's generation kwargs win over the model args of the same name (the backend warns once:
``DiffusionBackend._warn_overrides``), lm-eval's ``--gen_kwargs`` is merged into every task's
generation kwargs, and ``--limit`` cuts the documents. lm-eval records all three in its results
JSON (``configs[task].generation_kwargs`` after the merge, ``config.gen_kwargs``,
``config.limit``, ``n-samples``), and each sample's dslbench stats record
(:mod:`dslbench.metrics.sample_stats`) carries the settings its decoding used. This module turns
them into one plain block, so that the leaderboard runner can store it in ``cell.json`` and the
report can label the cells; it only reads files (the report imports it, like
:mod:`dslbench.runs.files`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dslbench.metrics.sample_stats import split_stats

# settings a sample's stats record carries (each backend writes some of them)
RECORD_KEYS: tuple[str, ...] = ("nfe_budget", "gen_length", "steps", "block_length", "response_cut", "sampler",
                                "accounting")


def fmt_arg(value: Any) -> str:
    """A model arg / generation kwarg as text: booleans lower-case, integral floats as integers
    (the same value from the CLI, YAML or JSON reads the same)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def requested(gen_kwargs: dict[str, Any]) -> dict[str, Any]:
    """A task's generation kwargs as the backend applies them: lm-eval's generic
    ``max_gen_toks`` is the length unless ``gen_length`` is given."""
    out = dict(gen_kwargs or {})
    if "gen_length" not in out and out.get("max_gen_toks") is not None:
        out["gen_length"] = out["max_gen_toks"]
    return out


def overridden_args(model_args: dict[str, Any], gen_kwargs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The model args a task's generation kwargs replaced with another value:
    ``{arg: {"model_arg": given, "used": task's}}``."""
    used = requested(gen_kwargs)
    return {k: {"model_arg": v, "used": used[k]} for k, v in sorted(model_args.items())
            if k in used and fmt_arg(used[k]) != fmt_arg(v)}


def record_settings(samples_file: Path | None) -> dict[str, Any]:
    """The :data:`RECORD_KEYS` the samples' stats records carry: one value when every sample
    agrees, else the sorted distinct values. Empty without a samples file or records."""
    if samples_file is None or not Path(samples_file).is_file():
        return {}
    seen: dict[str, dict[str, Any]] = {}
    with open(samples_file, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                resps = json.loads(line).get("resps") or []
                resp = resps[0][0] if resps and isinstance(resps[0], list) and resps[0] else ""
                _, stats = split_stats(str(resp))
            except (json.JSONDecodeError, AttributeError, IndexError, TypeError):
                continue
            for key in RECORD_KEYS:
                if stats and stats.get(key) is not None:
                    seen.setdefault(key, {})[fmt_arg(stats[key])] = stats[key]
    return {k: next(iter(v.values())) if len(v) == 1 else [v[t] for t in sorted(v)] for k, v in sorted(seen.items())}


def task_gen_kwargs(results: dict, task: str) -> dict[str, Any]:
    """A task's generation kwargs as lm-eval ran it (``--gen_kwargs`` merged in)."""
    cfg = (results.get("configs") or {}).get(task) or {}
    kwargs = cfg.get("generation_kwargs") if isinstance(cfg, dict) else None
    return dict(kwargs) if isinstance(kwargs, dict) else {}


def cli_gen_kwargs(results: dict) -> dict[str, Any]:
    """lm-eval's ``--gen_kwargs`` (a dict in recent versions, ``k=v,...`` text in older ones)."""
    raw = (results.get("config") or {}).get("gen_kwargs")
    if not raw:
        return {}
    if isinstance(raw, dict):
        return dict(raw)
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(str(raw))


def effective(results_file: Path, model_args: dict[str, Any]) -> dict[str, Any]:
    """The block ``cell.json`` keeps under ``effective``: lm-eval's ``--gen_kwargs`` and
    ``--limit``, and per task the documents evaluated, the settings recorded by its samples
    (the nfe budget the task asked for where no record says it) and the model args it overrode."""
    results_file = Path(results_file)
    data = json.loads(results_file.read_text(encoding="utf-8"))
    date_id = results_file.stem[len("results_"):]
    groups = set((data.get("group_subtasks") or {}).keys())
    tasks = {}
    for task in sorted(set(data.get("results") or {}) - groups):
        asked = requested(task_gen_kwargs(data, task))
        counts = (data.get("n-samples") or {}).get(task) or {}
        entry: dict[str, Any] = {"n_samples": counts.get("effective"), "n_documents": counts.get("original")}
        if asked.get("nfe") is not None:
            entry["nfe_budget"] = asked["nfe"]
        if asked.get("gen_length") is not None:
            entry["gen_length"] = asked["gen_length"]
        entry.update(record_settings(results_file.parent / f"samples_{task}_{date_id}.jsonl"))
        if over := overridden_args(model_args, asked):
            entry["overridden"] = over
        tasks[task] = entry
    return {"gen_kwargs": cli_gen_kwargs(data), "limit": (data.get("config") or {}).get("limit"), "tasks": tasks}
