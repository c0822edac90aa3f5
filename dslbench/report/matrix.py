"""``dslbench leaderboard --config FILE``: a models x tasks x budgets matrix through lm-eval.

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

String model args may use ``${VAR}`` / ``${VAR:-default}`` (environment); an unset variable or a
``<placeholder>`` is refused before anything runs, naming the model. ``pretrained: tiny:seed=N``
(tiny LLaDA-format base) and ``tiny-dsl:seed=N`` (the same base with untrained DSL modules) are
built under ``OUTPUT/models/`` on first use.

A cell is one model at one budget (all its tasks at that budget in one lm-eval call), stored in
``OUTPUT/runs/<model>/nfe<N>`` (``fixed`` for tasks without a budget) with lm-eval's own
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
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from dslbench import fsio
from dslbench.report.load import CELL_INFO

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TINY = re.compile(r"^(tiny|tiny-dsl):seed=(\d+)$")


class MatrixConfigError(ValueError):
    """A config the runner refuses; the message names the file and the field."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    backend: str
    model_args: dict[str, Any]
    resources: dict[str, Any] | None = None  # Ray task options of one cell (--executor ray)
    processes: int = 1  # data-parallel ranks per cell (torchrun, dslbench/runs/launch.py)


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


@dataclass
class Cell:
    model: ModelSpec
    budget: int | None
    tasks: list[str]
    dir: Path

    @property
    def label(self) -> str:
        return f"{self.model.name} @ {'NFE ' + str(self.budget) if self.budget is not None else 'fixed budget'}"


@dataclass
class MatrixResult:
    ran: list[Cell] = field(default_factory=list)
    skipped: list[Cell] = field(default_factory=list)
    failed: list = field(default_factory=list)  # CellFailure: cells an executor gave up on (Ray)
    leaderboard: Path | None = None
    report: Any = None


# ----------------------------------------------------------------------------- config
def slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s or "model"


def load_config(path: str | os.PathLike, out: str | os.PathLike | None = None) -> MatrixConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise MatrixConfigError(f"{path}: cannot read the leaderboard config ({err})") from None
    return parse_config(raw, path, out)


def parse_config(raw: Any, path: Path | None = None, out: str | os.PathLike | None = None) -> MatrixConfig:
    where = str(path) if path else "leaderboard config"

    def fail(msg: str) -> MatrixConfigError:
        return MatrixConfigError(f"{where}: {msg}")

    if not isinstance(raw, dict):
        raise fail("expected a mapping with models, tasks, budgets")
    unknown = sorted(set(raw) - {"name", "output", "models", "tasks", "budgets", "limit", "seed", "batch_size", "headline_nfe", "description"})
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)}")
    models_raw = raw.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise fail("'models' must be a non-empty list of {name, backend, model_args}")
    models, seen = [], set()
    for i, m in enumerate(models_raw):
        if not isinstance(m, dict) or not m.get("name") or not m.get("backend"):
            raise fail(f"models[{i}] needs a name and a backend")
        bad = sorted(set(m) - {"name", "backend", "model_args", "resources", "processes"})
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
        models.append(ModelSpec(str(m["name"]), str(m["backend"]), dict(args), resources, processes))
    tasks = raw.get("tasks")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise fail("'tasks' must be a non-empty list of task names (use {nfe} for the budget)")
    budgets = raw.get("budgets") or []
    if not isinstance(budgets, list) or not all(isinstance(b, int) and b > 0 for b in budgets):
        raise fail("'budgets' must be a list of positive integers")
    if any("{nfe}" in t for t in tasks) and not budgets:
        raise fail("tasks use {nfe} but no budgets are given")
    output = Path(out) if out is not None else Path(raw.get("output") or f"results/{path.stem if path else 'leaderboard'}")
    limit = raw.get("limit")
    if limit is not None and not (isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0):
        raise fail("'limit' must be a positive number or null")
    for key, low in (("seed", 0), ("batch_size", 1), ("headline_nfe", 1)):
        value = raw.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
            raise fail(f"'{key}' must be an integer >= {low}, got {value!r}")
    return MatrixConfig(
        path=path, name=str(raw.get("name") or (path.stem if path else "leaderboard")), output=output,
        models=models, tasks=list(tasks), budgets=sorted(set(budgets)), limit=limit,
        seed=int(raw.get("seed", 0)), batch_size=int(raw.get("batch_size", 1)),
        headline_nfe=int(raw.get("headline_nfe", 16)),
    )


def plan(config: MatrixConfig) -> list[Cell]:
    """The cells, in config order: per model, each budget, then the budget-free tasks."""
    per_budget = [t for t in config.tasks if "{nfe}" in t]
    fixed = [t for t in config.tasks if "{nfe}" not in t]
    cells = []
    for m in config.models:
        base = config.output / "runs" / slug(m.name)
        for b in config.budgets if per_budget else []:
            cells.append(Cell(m, b, [t.replace("{nfe}", str(b)) for t in per_budget], base / f"nfe{b}"))
        if fixed:
            cells.append(Cell(m, None, list(fixed), base / "fixed"))
    return cells


# ----------------------------------------------------------------------------- model args
def _expand(model: str, key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        var, default = m.group(1), m.group(2)
        if var in os.environ and os.environ[var] != "":
            return os.environ[var]
        if default is not None:
            return default
        raise MatrixConfigError(f"model {model!r}: model arg {key} needs the environment variable {var} "
                                f"(set {var}=<checkpoint path or hub id>)")

    out = _ENV.sub(sub, value)
    if re.search(r"<[^<>]+>", out):
        raise MatrixConfigError(f"model {model!r}: model arg {key}={out!r} is a placeholder; put a real "
                                "checkpoint path or hub id there")
    return out


def _tiny_checkpoint(kind: str, seed: int, models_dir: Path) -> Path:
    from dslbench.models.tiny import make_tiny

    base = models_dir / f"tiny-base-seed{seed}"
    if not (base / "config.json").exists():
        make_tiny(base, seed=seed)
    if kind == "tiny":
        return base
    dsl_dir = models_dir / f"tiny-dsl-seed{seed}"
    if not (dsl_dir / "dsl_config.json").exists():
        from dslbench.diffusion.dsl import DSLModules
        from dslbench.models.dsl_checkpoint import save_dsl_checkpoint
        from dslbench.models.loading import load_llada

        model, tokenizer, info = load_llada(base)
        dsl = DSLModules(info.vocab_size, 16, model.config.d_model, beta_init=2.0, noise_seed=seed)
        dsl.init_from_backbone(model.get_input_embeddings().weight, info.mask_id)
        save_dsl_checkpoint(model, dsl, tokenizer, dsl_dir,
                            {"beta_train": 2.0, "max_steps": 0, "data": "none (untrained DSL modules on the tiny base)"})
    return dsl_dir


def resolve_model_args(spec: ModelSpec, models_dir: Path, build: bool = True) -> dict[str, Any]:
    args = {k: _expand(spec.name, k, v) for k, v in spec.model_args.items()}
    pre = args.get("pretrained")
    if isinstance(pre, str) and (m := _TINY.match(pre)):
        path = models_dir / (f"tiny-base-seed{m.group(2)}" if m.group(1) == "tiny" else f"tiny-dsl-seed{m.group(2)}")
        args["pretrained"] = str(_tiny_checkpoint(m.group(1), int(m.group(2)), models_dir) if build else path)
    return args


def _known_tasks() -> set[str] | None:
    try:
        from dslbench.paths import tasks_dir

        root = tasks_dir()
    except FileNotFoundError:
        return None
    names = set()
    for f in root.rglob("*.yaml"):
        for line in f.read_text(encoding="utf-8").splitlines():
            if m := re.match(r"^(task|group):\s*([A-Za-z0-9_.-]+)\s*$", line):
                names.add(m.group(2))
    return names


def _check_backend_args(spec: ModelSpec, args: dict[str, Any]) -> None:
    """The backend exists and every model arg is one it declares, with an allowed value: the
    same parsing the backend does when lm-eval creates it, without loading a model."""
    import importlib

    from dslbench._lm_eval_hook import BACKENDS
    from dslbench.harness.args import parse_args

    if spec.backend not in BACKENDS:
        raise MatrixConfigError(f"model {spec.name!r}: unknown backend {spec.backend!r}; "
                                f"choose one of: {', '.join(sorted(BACKENDS))}")
    module, _, cls_name = BACKENDS[spec.backend].partition(":")
    backend = getattr(importlib.import_module(module), cls_name)
    from dslbench.harness.base import COMMON_ARGS

    if not args.get("pretrained"):
        raise MatrixConfigError(f"model {spec.name!r}: model_args needs pretrained (a checkpoint directory or hub id)")
    try:
        parse_args(spec.backend, {**COMMON_ARGS, **backend.SAMPLER_ARGS}, args)
    except ValueError as err:
        raise MatrixConfigError(f"model {spec.name!r}: {err}") from None


def check_config(config: MatrixConfig, cells: list[Cell]) -> None:
    """Refuse, before anything runs: unset variables / placeholders, unknown backends, model args
    a backend does not declare or values outside their range, and unknown dslbench task names."""
    problems = []
    for m in config.models:
        try:
            _check_backend_args(m, resolve_model_args(m, config.output / "models", build=False))
        except MatrixConfigError as err:
            problems.append(str(err))
    known = _known_tasks()
    if known:
        wanted = sorted({t for c in cells for t in c.tasks if t.startswith("dsl_")})
        missing = [t for t in wanted if t not in known]
        if missing:
            problems.append(f"unknown dslbench task(s): {', '.join(missing)}")
    if problems:
        where = f"{config.path}: " if config.path else ""
        raise MatrixConfigError(where + "; ".join(problems))


# ----------------------------------------------------------------------------- running
OUTPUT_MARK = "<output>"  # a path inside the output folder, in a cell's identity


def _portable(value: Any, output: Path) -> Any:
    """A local path inside the output folder as ``<output>/rel``; anything else (a hub id, a
    path elsewhere, ``tiny:seed=N``) unchanged."""
    if not isinstance(value, str) or not value:
        return value
    path = Path(value)
    if not (path.is_absolute() or path.exists()):
        return value  # not a local path (a relative hub id would otherwise resolve against the cwd)
    try:
        rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(output))
    except ValueError:
        return value
    return f"{OUTPUT_MARK}/{rel.as_posix()}"


def versions() -> dict[str, str]:
    """Versions of the code that computes a cell's numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("dslbench", "lm_eval", "torch"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "unknown"
    return out


def cell_description(cell: Cell, config: MatrixConfig) -> dict[str, Any]:
    """The cell's identity: everything that determines its numbers and nothing about where the
    output lives (``tiny:seed=N`` as written, other paths inside the output folder relative to it)."""
    args = {k: _portable(_expand(cell.model.name, k, v), config.output) for k, v in cell.model.model_args.items()}
    return {
        "name": cell.model.name, "backend": cell.model.backend, "model_args": args,
        "budget": cell.budget, "tasks": cell.tasks, "limit": config.limit, "seed": config.seed,
        "batch_size": config.batch_size, "versions": versions(),
    }


def cell_finished(cell: Cell, expected: dict[str, Any]) -> bool:
    """Finished = ``done.json`` present and ``cell.json`` describing the same work."""
    from dslbench.harness.run import DONE

    if not (cell.dir / DONE).is_file() or not (cell.dir / CELL_INFO).is_file():
        return False
    try:
        have = json.loads((cell.dir / CELL_INFO).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return have == json.loads(json.dumps(expected))


def run_cell(cell: Cell, config: MatrixConfig, model_args: dict[str, Any], desc: dict, evaluate: Callable,
             partial: Path | None = None, install: Callable | None = None) -> Any:
    """Evaluate one cell into ``.<cell>.partial`` and rename it into place once done: the inputs
    in, the cell's files out, nothing else touched (another executor can call it as is). On any
    failure the partial folder is removed and the cell stays pending."""
    from dslbench.harness.run import DONE, write_json_atomic

    # an executor whose attempts may overlap (Ray) gives each its own partial folder and installs it
    partial = partial or cell.dir.parent / f".{cell.dir.name}.partial"
    old = cell.dir.parent / f".{cell.dir.name}.old"
    for p in (partial, old):
        fsio.remove_tree(p)
    partial.mkdir(parents=True)
    try:
        write_json_atomic(desc, partial / CELL_INFO)
        evaluate(cell.model.backend, model_args, cell.tasks, partial, limit=config.limit, seed=config.seed,
                 batch_size=config.batch_size, force=True)
        if not (partial / DONE).is_file():
            raise RuntimeError(f"{cell.label}: the evaluation finished without writing {partial / DONE}")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if install is not None:
        return install(partial, cell.dir)
    if cell.dir.exists():
        fsio.replace(cell.dir, old)
    fsio.replace(partial, cell.dir)
    fsio.remove_tree(old)


def run_matrix(
    config: MatrixConfig | str | os.PathLike,
    out: str | os.PathLike | None = None,
    force: bool = False,
    evaluate: Callable | None = None,
    report: bool = True,
    models: list[str] | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
    executor: str = "local",
    address: str | None = None,
    max_retries: int = 2,
    retry_errors: bool = False,
    dry_run: bool = False,
    **report_kwargs: Any,
) -> MatrixResult:
    """Evaluate every unfinished cell (``executor``: local or ray), then write
    ``OUTPUT/leaderboard.csv`` and the report; ``dry_run`` only lists what is pending and its cost."""
    from dslbench.runs.executors import make_executor

    try:  # refuses a missing Ray before anything runs
        runner = make_executor(executor, address, max_retries, retry_errors)
    except ValueError as err:
        raise MatrixConfigError(str(err)) from None
    if not isinstance(config, MatrixConfig):
        config = load_config(config, out)
    elif out is not None:
        config.output = Path(out)
    if models:
        unknown = sorted(set(models) - {m.name for m in config.models})
        if unknown:
            raise MatrixConfigError(f"--models: no model named {', '.join(unknown)} in the config "
                                    f"(have: {', '.join(m.name for m in config.models)})")
        config.models = [m for m in config.models if m.name in models]
    if evaluate is None:
        from dslbench.harness.run import evaluate_cell as evaluate
    cells = plan(config)
    check_config(config, cells)
    result = MatrixResult()
    models_dir = config.output / "models"
    pending = []
    for i, cell in enumerate(cells, 1):
        desc = cell_description(cell, config)
        if not force and cell_finished(cell, desc):
            log(f"[{i}/{len(cells)}] {cell.label}: finished, skipped")
            result.skipped.append(cell)
            continue
        pending.append((cell, desc))
    if dry_run:
        from dslbench.runs.cost import dry_run_lines

        for line in dry_run_lines([c for c, _ in pending], config.limit, runner.name):
            log(line)
        return result
    done = runner.run(pending, lambda c: resolve_model_args(c.model, models_dir, build=True),
                      functools.partial(run_cell, config=config, evaluate=evaluate), config.output, log)
    result.ran, result.failed = done.ran, done.failed
    for f in result.failed:
        log(f"failed: {f.cell.label} after {f.attempts} attempt(s): {f.error}; log: {f.log}")
    if result.failed:
        log(f"{len(result.failed)} cell(s) failed: no leaderboard written; a rerun evaluates only the missing cells")
    elif report:
        from dslbench.report.build import build_report

        kwargs = {"headline_nfe": config.headline_nfe, "title": f"dslbench leaderboard: {config.name}",
                  "note": (f"Regenerated by `dslbench leaderboard --config {config.path}`" if config.path else "")
                  + f" (limit {config.limit}, seed {config.seed}).", **report_kwargs}
        result.report = build_report([c.dir for c in cells], config.output, **kwargs)
        result.leaderboard = result.report.files["leaderboard"]
        log(f"wrote {result.leaderboard} and {config.output / 'report.html'}")
    return result
