"""The leaderboard runner: evaluates the pending cells of a config (``dslbench leaderboard``).

A cell is one model at one budget (all its tasks at that budget in one lm-eval call), stored in
``OUTPUT/runs/<model>/nfe<N>`` (``fixed`` for tasks without a budget) with lm-eval's own
results / samples files, the runner's ``cell.json`` and ``evaluate_cell``'s ``done.json``. A cell
is evaluated into a hidden ``.<cell>.partial`` folder and renamed into place when finished, so
an interrupted run leaves no half cell behind; finished cells whose ``cell.json`` matches the
config are skipped (resume), ``force=True`` redoes them.

Several drivers may share one output folder (a Slurm job array, two people on a shared disk): a
cell is evaluated, its partial folder created or removed, only while its driver holds the cell's
claim (:mod:`dslbench.runs.claims`: a lock file and an owner record beside the cell). A driver
skips cells other live drivers hold, runs everything else, then waits for those (re-checked
every second) and takes over the claims of drivers that died; every cell is evaluated once, and
each driver writes the report when all cells are finished. The config format and the cells' plan
are in :mod:`dslbench.runs.config`; the report over the finished cells is written by the caller
(``dslbench.cli.run_leaderboard``) with :mod:`dslbench.report.build`, which reads these files.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dslbench import fsio
from dslbench.runs.config import Cell, MatrixConfig, MatrixConfigError, load_config, plan
from dslbench.runs.files import CELL_INFO, OUTPUT_MARK
from dslbench.runs.model_args import expand_arg, check_config, resolve_metadata, resolve_model_args


@dataclass
class MatrixResult:
    ran: list[Cell] = field(default_factory=list)
    skipped: list[Cell] = field(default_factory=list)
    failed: list = field(default_factory=list)  # CellFailure: cells an executor gave up on (Ray)
    leaderboard: Path | None = None  # set by the caller that writes the report (dslbench.cli.run_leaderboard)
    report: Any = None
    config: MatrixConfig | None = None  # the config as run (output folder, --models selection)
    cells: list[Cell] = field(default_factory=list)  # every cell of the plan, finished or not


# ----------------------------------------------------------------------------- running


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
    args = {k: _portable(expand_arg(cell.model.name, k, v), config.output) for k, v in cell.model.model_args.items()}
    return {
        "name": cell.model.name, "backend": cell.model.backend, "model_args": args,
        "budget": cell.budget, "tasks": cell.tasks, "limit": cell.limit, "seed": config.seed,
        "batch_size": config.batch_size, "versions": versions(),
        **({"metadata": {k: _portable(expand_arg("metadata", k, v), config.output) for k, v in config.metadata.items()}}
           if config.metadata else {}),
    }


EFFECTIVE = "effective"  # cell.json's record of what ran, written after the evaluation; not identity


def cell_finished(cell: Cell, expected: dict[str, Any]) -> bool:
    """Finished = ``done.json`` present and ``cell.json`` describing the same work (its identity:
    the ``effective`` block written after the evaluation is no part of it)."""
    from dslbench.harness.run import DONE

    if not (cell.dir / DONE).is_file() or not (cell.dir / CELL_INFO).is_file():
        return False
    try:
        have = json.loads((cell.dir / CELL_INFO).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if not isinstance(have, dict):
        return False
    have.pop(EFFECTIVE, None)
    return have == json.loads(json.dumps({k: v for k, v in expected.items() if k != EFFECTIVE}))


def effective_record(cell_dir: Path, model_args: dict[str, Any]) -> dict[str, Any]:
    """What the cell's evaluation ran (:func:`dslbench.runs.effective.effective`), over every
    lm-eval results file in it; model args compared as the identity writes them."""
    from dslbench.runs.effective import effective

    block: dict[str, Any] = {"gen_kwargs": {}, "limit": None, "tasks": {}}
    for results in sorted(cell_dir.rglob("results_*.json")):
        one = effective(results, model_args)
        block.update(gen_kwargs=one["gen_kwargs"], limit=one["limit"])
        block["tasks"].update(one["tasks"])
    return block


def run_cell(cell: Cell, config: MatrixConfig, model_args: dict[str, Any], desc: dict, evaluate: Callable,
             partial: Path | None = None, install: Callable | None = None) -> Any:
    """Evaluate one cell into ``.<cell>.partial`` and rename it into place once done: the inputs
    in, the cell's files out, nothing else touched (another executor can call it as is). On any
    failure the partial folder is removed and the cell stays pending. The caller holds the cell's
    claim, so the partial / old folders removed here are never another live driver's."""
    from dslbench.console import filtered_stderr
    from dslbench.harness.run import DONE, write_json_atomic

    # an executor whose attempts may overlap (Ray) gives each its own partial folder and installs it
    partial = partial or cell.dir.parent / f".{cell.dir.name}.partial"
    old = cell.dir.parent / f".{cell.dir.name}.old"
    for p in (partial, old):
        fsio.remove_tree(p)
    partial.mkdir(parents=True)
    try:
        write_json_atomic(desc, partial / CELL_INFO)
        extra = {"metadata": resolve_metadata(config.metadata, config.output / "models")} if config.metadata else {}
        with filtered_stderr():  # lm-eval runs `git describe`: outside a checkout git says so on stderr
            evaluate(cell.model.backend, model_args, cell.tasks, partial, limit=cell.limit, seed=config.seed,
                     batch_size=config.batch_size, force=True, **extra)
        if not (partial / DONE).is_file():
            raise RuntimeError(f"{cell.label}: the evaluation finished without writing {partial / DONE}")
        # what ran (a task's own nfe / gen_length over the model args, --limit), beside the identity
        write_json_atomic({**desc, EFFECTIVE: effective_record(partial, desc["model_args"])}, partial / CELL_INFO)
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
    models: list[str] | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
    executor: str = "local",
    address: str | None = None,
    max_retries: int = 2,
    retry_errors: bool = False,
    dry_run: bool = False,
    check_checkpoints: bool | None = None,
) -> MatrixResult:
    """Evaluate every unfinished cell (``executor``: local or ray); ``dry_run`` only lists what is
    pending and its cost. The result names every cell of the plan (``cells``) for the report.
    Every local checkpoint is checked before the first cell (``check_checkpoints``; by default
    when dslbench's own evaluator loads them, not when the caller passes its own ``evaluate``)."""
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
    if check_checkpoints is None:
        check_checkpoints = evaluate is None
    if evaluate is None:
        from dslbench.harness.run import evaluate_cell as evaluate
    cells = plan(config)
    check_config(config, cells, checkpoints=check_checkpoints)
    result = MatrixResult(config=config, cells=cells)
    pending = []
    for i, cell in enumerate(cells, 1):
        desc = cell_description(cell, config)
        if not force and cell_finished(cell, desc):
            log(f"[{i}/{len(cells)}] {cell.label}: finished, skipped")
            result.skipped.append(cell)
            continue
        pending.append((cell, desc, _inode(cell.dir)))
    if dry_run:
        from dslbench.runs.cost import dry_run_lines

        for line in dry_run_lines([c for c, _, _ in pending], config.limit, runner.name):
            log(line)
        return result
    _run_claimed(runner, pending, result, config, evaluate, force, log)
    for f in result.failed:
        log(f"failed: {f.cell.label} after {f.attempts} attempt(s): {f.error}; log: {f.log}")
    if result.failed:
        log(f"{len(result.failed)} cell(s) failed: no leaderboard written; a rerun evaluates only the missing cells")
    return result


# ----------------------------------------------------------------------------- several drivers
POLL_S = 1.0  # how often a driver re-checks the cells other drivers hold


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _run_claimed(runner, pending: list, result: MatrixResult, config: MatrixConfig, evaluate: Callable,
                 force: bool, log: Callable[[str], None]) -> None:
    """Run the pending cells, each only while this driver holds its claim
    (:mod:`dslbench.runs.claims`), so that drivers sharing the output folder evaluate every cell
    once. The local executor claims one cell at a time (the next driver takes the next cell),
    Ray all it can. Cells other drivers hold are left alone until this driver has run everything
    else; then it polls them every ``POLL_S`` seconds: a cell found finished is counted as
    skipped, one whose driver gave up or died (its claim free again) is run here."""
    from dslbench.runs.claims import Claims, FolderLock
    from dslbench.runs.executors import Progress

    models_dir = config.output / "models"

    def prepare(cell: Cell) -> dict[str, Any]:
        with FolderLock(models_dir / ".build.lock"):  # two drivers never build the same tiny model
            return resolve_model_args(cell.model, models_dir, build=True)

    run_one = functools.partial(run_cell, config=config, evaluate=evaluate)
    claims, todo, waiting = Claims(log), list(pending), None
    runner.progress = Progress(len(pending), log)  # one count across the batches
    try:
        while todo:
            batch, held, left = [], [], []
            for cell, desc, ino in todo:
                if runner.claim_batch is not None and len(batch) >= runner.claim_batch:
                    left.append((cell, desc, ino))
                    continue
                claim = claims.take(cell)
                if claim is None:
                    held.append((cell, desc, ino))
                elif cell_finished(cell, desc) and (not force or _inode(cell.dir) != ino):
                    claims.release(claim)  # finished by another driver since this one looked
                    log(f"{cell.label}: finished by another driver, skipped")
                    result.skipped.append(cell)
                else:
                    batch.append((cell, desc, claim))
            todo = held + left
            if batch:
                try:
                    done = runner.run([(c, d) for c, d, _ in batch], prepare, run_one, config.output, log)
                finally:
                    for _, _, claim in batch:
                        claims.release(claim)
                result.ran += done.ran
                result.failed += done.failed  # not retried here: the executor already did
                continue
            if todo:
                names = [c.label for c, _, _ in todo]
                if names != waiting:
                    waiting = names
                    log(f"waiting for {len(todo)} cell(s) other drivers hold (re-checked every {POLL_S:g} s): "
                        + "; ".join(f"{c.label} by {claims.holder(c)}" for c, _, _ in todo))
                time.sleep(POLL_S)
    finally:
        runner.progress.close()
        claims.close()
