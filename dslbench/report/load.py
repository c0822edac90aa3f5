"""lm-eval output directories -> tidy tables (one row per cell, one row per sample).

An lm-eval run with ``--output_path OUT --log_samples`` (or ``dslbench.harness.run.evaluate_cell``)
leaves ``OUT/<model>/results_<date>.json`` and one ``samples_<task>_<date>.jsonl`` per task, with
the same ``<date>``. ``load_runs`` walks the given paths for such results files and returns:

* ``cells``: one row per model x checkpoint x task (the task name carries the budget), with every
  aggregated metric lm-eval wrote (filter ``none``; other filters as ``metric[filter]``);
* ``samples``: one row per logged sample, with the per-sample metric values (pooled
  ``(hits, total)`` metrics become a per-sample rate plus ``_num`` / ``_den`` columns; see
  :mod:`dslbench.report.samples`).

Task families by name: ``dsl_summ_<dataset>_<N>step`` (summarization), ``dsl_repair_...``
(repair), ``dsl_gen[_prefix|_synth]_<N>step`` (``open_ended``; dataset ``prompts`` / ``prefix`` /
``synth``). An open-ended cell also carries its GenPPL evaluator (``ppl_model``, from the records).

Who ran it: the backend is lm-eval's ``config.model``, the checkpoint the ``pretrained`` model
arg, and the display name (``model``) either the ``name`` from a ``cell.json`` that the
leaderboard runner writes next to the cell, or the backend plus its non-default model args
(less those a task's generation kwargs replaced). The ``model_args`` column shows the args as
they ran: an arg a task overrode carries the task's value and the ignored one, lm-eval's
``--gen_kwargs`` follows, and ``--limit`` is named where two runs of a cell differ in it; such
runs are cells of their own, and ``nfe_budget`` is the ``nfe`` the task ran with.

Bad inputs raise ``ReportInputError`` naming the file (a path that is not an lm-eval output, an
unreadable results file, mixed metric sets for one task). Partial inputs (a results file whose
samples file is missing, a directory without results next to good ones) are reported as
``ReportWarning`` and skipped, so a report of what is there can still be written; ``strict=True``
turns them into errors.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from dslbench.metrics.summary import SUMMARY_METRICS
from dslbench.report.errors import ReportInputError, ReportWarning
from dslbench.report.samples import REPAIR_METRICS, ppl_model_of, read_samples, repair_protocol_of
from dslbench.runs.effective import cli_gen_kwargs, fmt_arg, overridden_args, requested, task_gen_kwargs
from dslbench.runs.files import CELL_INFO, OUTPUT_MARK

EFFICIENCY_METRICS: tuple[str, ...] = ("nfe", "gen_tokens", "tokens_per_forward", "seconds_per_sample")
TIMING_METRICS: tuple[str, ...] = ("seconds_per_sample",)  # wall clock: kept out of leaderboard.csv
# open-ended generation (dsl_gen_*): words / empty share the summarization columns; appended last
# so that a leaderboard without open-ended cells keeps its columns (they only appear when present)
OPEN_ENDED_METRICS: tuple[str, ...] = ("genppl", "d2", "d3", "rep", "n_valid", "mauve")
KNOWN_METRICS: tuple[str, ...] = SUMMARY_METRICS + REPAIR_METRICS + EFFICIENCY_METRICS + OPEN_ENDED_METRICS

ID_COLUMNS: list[str] = [
    "family", "dataset", "corruption", "corruption_rate", "nfe_budget",
    "model", "backend", "model_args", "checkpoint", "task",
]
SORT_COLUMNS: list[str] = [
    "family", "dataset", "corruption", "corruption_rate", "nfe_budget", "model", "checkpoint", "model_args", "task",
]
SAMPLE_ID_COLUMNS: list[str] = ID_COLUMNS + ["doc_id", "doc_key"]

# model args that say where / how fast, not which decoding: left out of the derived display name
_NOT_VARIANT = frozenset({"pretrained", "device", "dtype", "batch_size", "max_batch_size", "trust_remote_code", "seed"})

_SUMM = re.compile(r"^dsl_summ_(?P<dataset>.+)_(?P<nfe>\d+)step$")
_REPAIR = re.compile(r"^dsl_repair(?:_(?P<source>synth))?_(?P<mode>random|semantic)_(?P<rate>\d+)$")
_GEN = re.compile(r"^dsl_gen(?:_(?P<set>prefix|synth))?_(?P<nfe>\d+)step$")


__all__ = ["REPAIR_METRICS", "ReportInputError", "ReportWarning", "load_runs", "parse_task", "read_samples"]


# ----------------------------------------------------------------------------- task names
def parse_task(task: str) -> dict[str, Any]:
    """``family`` / ``dataset`` / ``nfe_budget`` / ``corruption`` / ``corruption_rate`` of a task name."""
    if m := _SUMM.match(task):
        return {"family": "summarization", "dataset": m["dataset"], "nfe_budget": int(m["nfe"]),
                "corruption": "", "corruption_rate": None}
    if m := _REPAIR.match(task):
        return {"family": "repair", "dataset": m["source"] or "wikitext", "nfe_budget": None,
                "corruption": m["mode"], "corruption_rate": int(m["rate"])}
    if m := _GEN.match(task):
        return {"family": "open_ended", "dataset": m["set"] or "prompts", "nfe_budget": int(m["nfe"]),
                "corruption": "", "corruption_rate": None}
    return {"family": "other", "dataset": task, "nfe_budget": None, "corruption": "", "corruption_rate": None}


# ----------------------------------------------------------------------------- model identity
def _model_args_dict(raw: Any) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return dict(raw)
    if isinstance(raw, str):
        from lm_eval.utils import simple_parse_args_string

        return simple_parse_args_string(raw)
    raise ValueError(f"model_args of unexpected type {type(raw).__name__}")


def canonical_args(args: dict[str, Any], exclude: Iterable[str] = ("pretrained",)) -> str:
    """``k=v`` pairs, sorted, comma-joined; booleans lower-case (stable across CLI and YAML)."""
    skip = set(exclude)
    return ",".join(f"{k}={fmt_arg(v)}" for k, v in sorted(args.items()) if k not in skip)


def checkpoint_name(pretrained: Any, local: bool = False) -> str:
    """A local checkpoint directory by its folder name; a hub id as given. ``local``: the value
    is known to be a path (a leaderboard cell's checkpoint resolved inside its output folder),
    so the name does not depend on the folder the report is written from."""
    if pretrained is None:
        return ""
    text = str(pretrained).rstrip("/")
    if local or text.startswith(("/", ".", "~", OUTPUT_MARK)) or os.path.isdir(text):
        return Path(text).name
    return text


def _resolved_by_runner(info: dict, recorded: Any) -> bool:
    """The leaderboard runner resolved the cell's ``pretrained`` (``tiny:seed=N``, a path inside
    its output folder): what lm-eval recorded is then a local path, relative to wherever the
    runner was started."""
    written = (info.get("model_args") or {}).get("pretrained") if isinstance(info.get("model_args"), dict) else None
    return isinstance(written, str) and recorded is not None and written != str(recorded)


def args_label(args: dict[str, Any], overridden: dict[str, dict], gen_kwargs: dict[str, Any]) -> str:
    """The ``model_args`` column: the model args as they ran (an arg a task replaced shows the
    task's value and the ignored one), then lm-eval's ``--gen_kwargs`` if any. Without either it
    is :func:`canonical_args`."""
    parts = []
    for k, v in sorted(args.items()):
        if k == "pretrained":
            continue
        if k in overridden:
            parts.append(f"{k}={fmt_arg(overridden[k]['used'])} (task overrides model arg {fmt_arg(v)})")
        else:
            parts.append(f"{k}={fmt_arg(v)}")
    text = ",".join(parts)
    if gen_kwargs:
        text += ("; " if text else "") + "--gen_kwargs " + canonical_args(gen_kwargs, exclude=())
    return text


def display_name(backend: str, args: dict[str, Any]) -> str:
    variant = canonical_args(args, exclude=_NOT_VARIANT)
    return f"{backend}({variant})" if variant else backend


# ----------------------------------------------------------------------------- one run
@dataclass
class Run:
    results_file: Path
    date: float
    backend: str
    model_args: dict[str, Any]
    model: str
    checkpoint: str
    metrics: dict[str, dict[str, float]]  # task -> metric -> value
    n_samples: dict[str, int | None]
    samples_files: dict[str, Path | None] = field(default_factory=dict)
    gen_kwargs: dict[str, Any] = field(default_factory=dict)  # lm-eval's --gen_kwargs
    limit: Any = None  # lm-eval's --limit
    task_kwargs: dict[str, dict] = field(default_factory=dict)  # task -> generation kwargs as run
    overridden: dict[str, dict] = field(default_factory=dict)  # task -> model args it replaced

    def args_text(self, task: str) -> str:
        """The ``model_args`` column of one task: :func:`args_label`."""
        return args_label(self.model_args, self.overridden.get(task, {}), self.gen_kwargs)

    def task_identity(self, task: str) -> tuple:
        """What makes one of its tasks a cell of its own: who ran it, the args as they ran,
        ``--gen_kwargs`` and ``--limit``."""
        return (self.model, self.checkpoint, self.args_text(task), fmt_arg(self.limit), task)

    def nfe_budget(self, task: str) -> int | None:
        """The task's budget: the ``nfe`` its generation kwargs ran with (``--gen_kwargs`` can
        change it), else the one its name carries."""
        named = parse_task(task)["nfe_budget"]
        asked = self.task_kwargs.get(task, {}).get("nfe")
        if named is None or asked is None:
            return named
        try:
            return int(asked)
        except (TypeError, ValueError):
            return named


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportInputError(f"{path}: not a readable lm-eval results file ({err})") from None


def _cell_info(results_file: Path, roots: list[Path]) -> dict | None:
    """The runner's ``cell.json`` beside the results file or in a parent up to the given root."""
    here = results_file.parent
    for _ in range(3):
        info = here / CELL_INFO
        if info.is_file():
            try:
                return json.loads(info.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise ReportInputError(f"{info}: unreadable cell description ({err})") from None
        if here in roots or here.parent == here:
            break
        here = here.parent
    return None


def _metric_name(key: str) -> str | None:
    name, _, filt = key.partition(",")
    if not filt or name.endswith("_stderr") or name in ("alias", "name", "sample_len"):
        return None
    return name if filt == "none" else f"{name}[{filt}]"


def load_run(results_file: str | os.PathLike, roots: Iterable[Path] = ()) -> Run:
    """Read one ``results_<date>.json`` and locate its samples files (``None`` where missing)."""
    path = Path(results_file)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict) or not isinstance(data.get("config"), dict):
        raise ReportInputError(
            f"{path}: not an lm-eval results file (expected the keys 'results' and 'config' that "
            "lm-eval writes with --output_path)"
        )
    config = data["config"]
    backend = str(config.get("model") or data.get("model_source") or "")
    if not backend:
        raise ReportInputError(f"{path}: lm-eval results without a model name in 'config'")
    try:
        args = _model_args_dict(config.get("model_args"))
    except ValueError as err:
        raise ReportInputError(f"{path}: unreadable model_args ({err})") from None
    info = _cell_info(path, list(roots)) or {}
    groups = set((data.get("group_subtasks") or {}).keys())
    try:
        gen_kwargs = cli_gen_kwargs(data)
    except ValueError as err:
        raise ReportInputError(f"{path}: unreadable config.gen_kwargs ({err})") from None
    task_kwargs = {t: requested(task_gen_kwargs(data, t)) for t in data["results"] if t not in groups}
    overridden = {t: o for t, kw in task_kwargs.items() if (o := overridden_args(args, kw))}
    ignored = {k for o in overridden.values() for k in o}  # never named with a value that did not run
    model = str(info.get("name") or display_name(backend, {k: v for k, v in args.items() if k not in ignored}))
    recorded = args.get("pretrained", data.get("model_name"))
    checkpoint = checkpoint_name(recorded, local=_resolved_by_runner(info, recorded))
    metrics: dict[str, dict[str, float]] = {}
    for task, values in data["results"].items():
        if task in groups:
            continue  # a group's aggregate; its member tasks are rows of their own
        row = {}
        open_ended = parse_task(task)["family"] == "open_ended"
        for key, value in values.items():
            name = _metric_name(key)
            if name is not None and open_ended and value is None:
                value = math.nan  # an undefined GenPPL / MAUVE (no non-empty output) stays a column
            if name is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
                row[name] = float(value)
        metrics[task] = row
    n_samples = {t: (data.get("n-samples", {}).get(t) or {}).get("effective") for t in metrics}
    date_id = path.stem[len("results_"):] if path.stem.startswith("results_") else None
    samples = {}
    for task in metrics:
        f = path.parent / f"samples_{task}_{date_id}.jsonl" if date_id else None
        samples[task] = f if f is not None and f.is_file() else None
    try:
        date = float(data.get("date") or 0.0)
    except (TypeError, ValueError):
        date = 0.0
    limit = (data.get("config") or {}).get("limit")
    return Run(path, date, backend, args, model, checkpoint, metrics, n_samples, samples, gen_kwargs, limit,
               task_kwargs, overridden)


def expected_samples_file(run: Run, task: str) -> Path:
    date_id = run.results_file.stem[len("results_"):]
    return run.results_file.parent / f"samples_{task}_{date_id}.jsonl"


# ----------------------------------------------------------------------------- many runs
def find_results_files(path: str | os.PathLike) -> list[Path]:
    """The ``results_*.json`` files at or below ``path`` (hidden folders, e.g. a cell still being
    written by the leaderboard runner, are skipped)."""
    p = Path(path)
    if p.is_file():
        return [p]
    found = []
    for dirpath, dirnames, filenames in os.walk(p):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames) if f.startswith("results_") and f.endswith(".json")]
    return found


@dataclass
class Loaded:
    cells: pd.DataFrame
    samples: pd.DataFrame
    runs: list[Run]
    warnings: list[str]


def _problem(msg: str, strict: bool, problems: list[str]) -> None:
    if strict:
        raise ReportInputError(msg)
    problems.append(msg)
    warnings.warn(msg, ReportWarning, stacklevel=3)


def load_runs(paths: Iterable[str | os.PathLike], strict: bool = False) -> Loaded:
    """Read lm-eval output directories (or results files) into the cell and sample tables."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ReportInputError("no lm-eval output directories given")
    problems: list[str] = []
    runs: list[Run] = []
    roots = [p.resolve() if p.is_dir() else p.resolve().parent for p in paths if p.exists()]
    for p in paths:
        if not p.exists():
            _problem(f"{p}: no such file or directory", strict, problems)
            continue
        files = find_results_files(p)
        if not files:
            _problem(
                f"{p}: not an lm-eval output directory: no results_*.json below it (lm-eval writes "
                "OUTPUT_PATH/<model>/results_<date>.json and samples_<task>_<date>.jsonl with "
                "--output_path OUTPUT_PATH --log_samples)", strict, problems,
            )
            continue
        for f in files:
            try:
                runs.append(load_run(f.resolve(), roots))
            except ReportInputError as err:
                _problem(str(err), strict, problems)
    if not runs:
        raise ReportInputError("nothing to report: " + ("; ".join(problems) or "no lm-eval results found"))

    # one run per (model, checkpoint, args as run, --gen_kwargs, --limit, task): the newest wins,
    # the other is named
    chosen: dict[tuple, Run] = {}
    for run in sorted(runs, key=lambda r: (r.date, str(r.results_file))):
        for task in run.metrics:
            key = run.task_identity(task)
            if key in chosen and chosen[key].results_file != run.results_file:
                msg = (f"{task} of {run.model} appears twice: using {run.results_file} (newer), "
                       f"ignoring {chosen[key].results_file}")
                problems.append(msg)
                warnings.warn(msg, ReportWarning, stacklevel=2)
            chosen[key] = run

    # one metric set per task
    metric_sets: dict[str, tuple[frozenset, Path]] = {}
    for (*_, task), run in sorted(chosen.items(), key=lambda kv: (kv[0], str(kv[1].results_file))):
        names = frozenset(run.metrics[task])
        if task in metric_sets and metric_sets[task][0] != names:
            other, other_file = metric_sets[task]
            only_a = ", ".join(sorted(other - names)) or "-"
            only_b = ", ".join(sorted(names - other)) or "-"
            raise ReportInputError(
                f"mixed metric sets for task {task}: {other_file} has [{only_a}] that {run.results_file} "
                f"lacks, and {run.results_file} has [{only_b}] that {other_file} lacks; these runs "
                "come from different task versions: re-run one of them, or report them separately"
            )
        metric_sets.setdefault(task, (names, run.results_file))

    # --limit is named only where it splits a cell (a leaderboard runs all its cells with one)
    limits: dict[tuple, set[str]] = {}
    for model, checkpoint, args_text, limit, task in chosen:
        limits.setdefault((model, checkpoint, args_text, task), set()).add(limit)
    cell_rows, sample_rows = [], []
    for (model, checkpoint, args_text, limit, task), run in chosen.items():
        if len(limits[(model, checkpoint, args_text, task)]) > 1:
            args_text += ("; " if args_text else "") + f"--limit {limit if run.limit is not None else 'none'}"
        ids = {**parse_task(task), "nfe_budget": run.nfe_budget(task), "model": model, "backend": run.backend,
               "model_args": args_text, "checkpoint": checkpoint, "task": task}
        row = {**ids, "n_samples": run.n_samples.get(task), **run.metrics[task]}
        cell_rows.append(row)
        sfile = run.samples_files.get(task)
        if sfile is None:
            _problem(
                f"{expected_samples_file(run, task)}: samples file missing (results {run.results_file}; "
                "run lm-eval with --log_samples): the leaderboard keeps this cell's aggregate, "
                "per-sample tables and paired comparisons leave it out", strict, problems,
            )
            continue
        rows = read_samples(sfile, ids)
        if ids["family"] == "repair":
            row["repair_protocol"] = repair_protocol_of(rows)
        if ids["family"] == "open_ended":
            row["ppl_model"] = checkpoint_name(ppl_model_of(rows))  # a local folder by its name, as checkpoints
        if run.n_samples.get(task) is not None and len(rows) != run.n_samples[task]:
            _problem(f"{sfile}: {len(rows)} logged samples, but {run.results_file} reports "
                     f"{run.n_samples[task]}", strict, problems)
        sample_rows += rows

    return Loaded(tidy_cells(pd.DataFrame(cell_rows)), tidy_samples(pd.DataFrame(sample_rows)), runs, problems)


# ----------------------------------------------------------------------------- column order
def _ordered(columns: Iterable[str], head: list[str]) -> list[str]:
    cols = list(columns)
    known = [c for c in KNOWN_METRICS if c in cols]
    extras = sorted(c for c in cols if c not in head and c not in KNOWN_METRICS)
    return head + known + extras


def _sort(df: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    keys = [c for c in SORT_COLUMNS + extra if c in df.columns]
    return df.sort_values(keys, kind="mergesort", na_position="first").reset_index(drop=True)


def _fix_types(df: pd.DataFrame) -> pd.DataFrame:
    for col in ("nfe_budget", "corruption_rate", "n_samples", "doc_id"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    for col in ("family", "dataset", "corruption", "model", "backend", "model_args", "checkpoint", "task", "doc_key",
                "repair_protocol", "ppl_model"):
        if col in df.columns:
            df[col] = df[col].fillna("").astype(str)
    return df


def tidy_cells(df: pd.DataFrame) -> pd.DataFrame:
    head = ID_COLUMNS + ["n_samples"]
    if df.empty:
        return pd.DataFrame(columns=head)
    df = _fix_types(df)
    return _sort(df[_ordered(df.columns, head)], [])


def tidy_samples(df: pd.DataFrame) -> pd.DataFrame:
    head = SAMPLE_ID_COLUMNS
    if df.empty:
        return pd.DataFrame(columns=head + ["response"])
    df = _fix_types(df)
    tail = ["response"]
    cols = [c for c in _ordered([c for c in df.columns if c not in tail], head)] + tail
    pair_cols = sorted(c for c in cols if c.endswith(("_num", "_den")))
    cols = [c for c in cols if c not in pair_cols and c != "response"] + pair_cols + ["response"]
    return _sort(df[cols], ["doc_id"])
