"""The leaderboard config (``dslbench leaderboard --config FILE``) and its plan of cells.

Config (YAML)::

    name: tiny                       # title of the report
    output: results                  # runs/, models/, leaderboard.csv, report.* go here (--out overrides)
    limit: 8                         # documents per task (null: all)
    seed: 0
    batch_size: 8
    budgets: [4, 8, 16]              # NFE budgets substituted into tasks with {nfe}
    tasks:
      - dsl_summ_synth_{nfe}step     # one per budget
      - dsl_repair_synth_random_10   # no {nfe}: evaluated once per model
      - {task: dsl_gen_synth_{nfe}step, limit: null}   # a task with its own limit (null: all documents)
    metadata: {ppl_model: gpt2-large}  # optional: lm-eval task metadata (--metadata) of every cell
    headline_nfe: 16                 # optional
    models:
      - name: LLaDA                  # display name in every table and plot
        backend: mdm_llada           # lm-eval --model
        model_args: {pretrained: GSAI-ML/LLaDA-8B-Instruct}
      - name: LLaDA+EOS+Block
        backend: mdm_llada
        model_args: {pretrained: GSAI-ML/LLaDA-8B-Instruct, logits_eos_inf: true, block_length: 32}
        resources: {num_gpus: 1}     # optional: what one cell of this model asks Ray for (--executor ray)
        processes: 1                 # optional: data-parallel ranks per cell (torchrun), for a model too slow for one device
        tasks: ["dsl_summ_synth_{nfe}step"]  # optional: this model runs only these of the config's tasks
        budgets: [16]                # optional: ... and only these of its budgets (a cheap extra row)

String model args may use ``${VAR}`` / ``${VAR:-default}`` (environment); an unset variable or a
``<placeholder>`` is refused before anything runs, naming the model. ``pretrained: tiny:seed=N``
(tiny LLaDA-format base) and ``tiny-dsl:seed=N`` (the same base with untrained DSL modules) are
built under ``OUTPUT/models/`` on first use.

A cell is one model at one budget (all its tasks at that budget in one lm-eval call), stored in
``OUTPUT/runs/<model>/nfe<N>`` (``fixed`` for tasks without a budget; tasks with a limit of their
own form a cell of their own, ``nfe<N>-limit<L>`` / ``-limitall``) with lm-eval's own
results / samples files, the runner's ``cell.json`` and ``evaluate_cell``'s ``done.json``. A cell
is evaluated into a hidden ``.<cell>.partial`` folder and renamed into place when finished, so
an interrupted run leaves no half cell behind; finished cells whose ``cell.json`` matches the
config are skipped (resume), ``force=True`` redoes them.

A cell's identity (``cell.json``) is what determines its numbers: the model (its backend and
args), the tasks, budget, limit, seed, batch size and the dslbench / lm-eval / torch versions,
never where the output folder lives: a checkpoint inside the output folder (the tiny models) is
recorded relative to it, so moving the folder or spelling ``--out`` differently redoes nothing.
Before the first cell, every model's backend and model args are checked against the backend's
declared args (names, types, ranges), so a typo in the last model fails in seconds, not hours.

Who runs the pending cells is an executor (``dslbench/runs/executors.py``): ``local`` (one after
another in this process, the default) or ``ray`` (one Ray task per cell, across GPUs and nodes).
This module reads and plans; model args are resolved and checked against the backends in
:mod:`dslbench.runs.model_args`, the cells run in :mod:`dslbench.runs.matrix`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class MatrixConfigError(ValueError):
    """A config the runner refuses; the message names the file and the field."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    backend: str
    model_args: dict[str, Any]
    resources: dict[str, Any] | None = None  # Ray task options of one cell (--executor ray)
    processes: int = 1  # data-parallel ranks per cell (torchrun, dslbench/runs/launch.py)
    tasks: list[str] | None = None  # a subset of the config's task templates (None: all)
    budgets: list[int] | None = None  # a subset of the config's budgets (None: all)


@dataclass
class MatrixConfig:
    path: Path | None
    name: str
    output: Path
    models: list[ModelSpec]
    tasks: list[str]
    budgets: list[int]
    limit: int | float | None = None
    seed: int = 0
    batch_size: int = 1
    headline_nfe: int = 16
    # task template -> its own limit, where it differs from ``limit`` (None: all documents)
    task_limits: dict = field(default_factory=dict)
    # lm-eval task metadata for every cell (``--metadata``), e.g. the open-ended tasks' evaluator
    # ``ppl_model`` (a hub id, a folder, or ``tiny-gpt2:seed=N`` built on first use)
    metadata: dict = field(default_factory=dict)


@dataclass
class Cell:
    model: ModelSpec
    budget: int | None
    tasks: list[str]
    dir: Path
    limit: int | float | None = None  # documents per task of this cell (the config's, or the tasks' own)

    @property
    def label(self) -> str:
        own = self.dir.name.partition("-limit")[2]  # tasks with a limit of their own: a cell of their own
        extra = f" ({'all documents' if own == 'all' else 'limit ' + own})" if own else ""
        return f"{self.model.name} @ {'NFE ' + str(self.budget) if self.budget is not None else 'fixed budget'}{extra}"


# ----------------------------------------------------------------------------- config
def slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s or "model"


def load_config(path: str | os.PathLike, out: str | os.PathLike | None = None) -> MatrixConfig:
    from dslbench.data.jsonl import DataFormatError, decode_utf8

    path = Path(path)
    try:
        raw = yaml.safe_load(decode_utf8(path.read_bytes(), path, "a leaderboard config"))
    except DataFormatError as err:  # names the file, the line and the byte offset
        raise MatrixConfigError(str(err)) from None
    except (OSError, yaml.YAMLError) as err:
        raise MatrixConfigError(f"{path}: cannot read the leaderboard config ({err})") from None
    return parse_config(raw, path, out)


def parse_config(raw: Any, path: Path | None = None, out: str | os.PathLike | None = None) -> MatrixConfig:
    where = str(path) if path else "leaderboard config"

    def fail(msg: str) -> MatrixConfigError:
        return MatrixConfigError(f"{where}: {msg}")

    if not isinstance(raw, dict):
        raise fail("expected a mapping with models, tasks, budgets")
    unknown = sorted(set(raw) - {"name", "output", "models", "tasks", "budgets", "limit", "seed", "batch_size", "headline_nfe", "description",
                          "metadata"})
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)}")
    models_raw = raw.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise fail("'models' must be a non-empty list of {name, backend, model_args}")
    models, seen = [], set()
    for i, m in enumerate(models_raw):
        if not isinstance(m, dict) or not m.get("name") or not m.get("backend"):
            raise fail(f"models[{i}] needs a name and a backend")
        bad = sorted(set(m) - {"name", "backend", "model_args", "resources", "processes", "tasks", "budgets"})
        if bad:
            raise fail(f"models[{i}] ({m['name']}): unknown key(s) {', '.join(bad)}")
        args = m.get("model_args") or {}
        if not isinstance(args, dict):
            raise fail(f"models[{i}] ({m['name']}): model_args must be a mapping")
        if slug(str(m["name"])) in seen:
            raise fail(f"models[{i}]: the name {m['name']!r} is used twice")
        seen.add(slug(str(m["name"])))
        resources = None
        if m.get("resources") is not None:
            from dslbench.runs.executors import check_resources

            try:
                resources = check_resources(m["resources"])
            except ValueError as err:
                raise fail(f"models[{i}] ({m['name']}): {err}") from None
        processes = m.get("processes", 1)
        if not (isinstance(processes, int) and not isinstance(processes, bool) and processes >= 1):
            raise fail(f"models[{i}] ({m['name']}): processes must be an integer >= 1, got {processes!r}")
        models.append(ModelSpec(str(m["name"]), str(m["backend"]), dict(args), resources, processes,
                                m.get("tasks"), m.get("budgets")))
    tasks, task_limits = _parse_tasks(raw.get("tasks"), fail)
    budgets = raw.get("budgets") or []
    if not isinstance(budgets, list) or not all(isinstance(b, int) and b > 0 for b in budgets):
        raise fail("'budgets' must be a list of positive integers")
    for i, m in enumerate(models):  # a model's own tasks / budgets: a subset of the config's
        for key, allowed in (("tasks", tasks), ("budgets", budgets)):
            own = getattr(m, key)
            if own is not None and not (isinstance(own, list) and own and all(x in allowed for x in own)):
                raise fail(f"models[{i}] ({m.name}): {key} must be a non-empty list drawn from the config's {key} "
                           f"({', '.join(map(str, allowed))}), got {own!r}")
    if any("{nfe}" in t for t in tasks) and not budgets:
        raise fail("tasks use {nfe} but no budgets are given")
    output = Path(out) if out is not None else Path(raw.get("output") or f"results/{path.stem if path else 'leaderboard'}")
    limit = raw.get("limit")
    if not _valid_limit(limit):
        raise fail("'limit' must be a positive number or null")
    for key, low in (("seed", 0), ("batch_size", 1), ("headline_nfe", 1)):
        value = raw.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
            raise fail(f"'{key}' must be an integer >= {low}, got {value!r}")
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise fail("'metadata' must be a mapping of task metadata (e.g. ppl_model: gpt2-large)")
    return MatrixConfig(
        path=path, name=str(raw.get("name") or (path.stem if path else "leaderboard")), output=output,
        models=models, tasks=list(tasks), budgets=sorted(set(budgets)), limit=limit,
        seed=int(raw.get("seed", 0)), batch_size=int(raw.get("batch_size", 1)),
        headline_nfe=int(raw.get("headline_nfe", 16)), metadata=dict(metadata),
        task_limits={t: v for t, v in task_limits.items() if v != limit},
    )


def _valid_limit(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0)


def _parse_tasks(raw: Any, fail) -> tuple[list[str], dict[str, Any]]:
    """Task templates, and the limits of those given as ``{task: NAME, limit: L}``."""
    usage = "'tasks' must be a non-empty list of task names (use {nfe} for the budget) or {task: NAME, limit: L}"
    if not isinstance(raw, list) or not raw:
        raise fail(usage)
    tasks, limits = [], {}
    for i, t in enumerate(raw):
        if isinstance(t, dict):
            if set(t) != {"task", "limit"} or not isinstance(t["task"], str):
                raise fail(f"tasks[{i}]: expected {{task: NAME, limit: L}}, got {t!r}")
            if not _valid_limit(t["limit"]):
                raise fail(f"tasks[{i}] ({t['task']}): limit must be a positive number or null, got {t['limit']!r}")
            limits[t["task"]] = t["limit"]
            t = t["task"]
        elif not isinstance(t, str):
            raise fail(usage)
        tasks.append(t)
    return tasks, limits


def plan(config: MatrixConfig) -> list[Cell]:
    """The cells, in config order: per model, each budget, then the budget-free tasks."""
    cells = []
    for m in config.models:
        own = config.tasks if m.tasks is None else [t for t in config.tasks if t in m.tasks]
        per_budget = _by_limit(config, [t for t in own if "{nfe}" in t])
        fixed = _by_limit(config, [t for t in own if "{nfe}" not in t])
        base = config.output / "runs" / slug(m.name)
        budgets = config.budgets if m.budgets is None else [b for b in config.budgets if b in m.budgets]
        for b in budgets if per_budget else []:
            for limit, (suffix, tasks) in per_budget.items():
                cells.append(Cell(m, b, [t.replace("{nfe}", str(b)) for t in tasks], base / f"nfe{b}{suffix}", limit))
        for limit, (suffix, tasks) in fixed.items():
            cells.append(Cell(m, None, list(tasks), base / f"fixed{suffix}", limit))
    return cells


def _by_limit(config: MatrixConfig, tasks: list[str]) -> dict:
    """limit -> (folder suffix, tasks): the config's limit first (no suffix), then each task limit."""
    groups: dict = {config.limit: ("", [])}
    for t in tasks:
        limit = config.task_limits.get(t, config.limit)
        suffix = "" if limit == config.limit else f"-limit{'all' if limit is None else f'{limit:g}'}"
        groups.setdefault(limit, (suffix, []))[1].append(t)
    return {k: v for k, v in groups.items() if v[1]}
