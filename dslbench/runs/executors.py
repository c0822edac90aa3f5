"""Executors of the leaderboard matrix: the same "run one cell" function, called in this process
one cell after another (``local``) or as one Ray task per cell across a cluster (``ray``).

Both get the pending cells (the runner has already skipped the finished ones) and call the
matrix runner's cell function, which evaluates into a hidden partial folder and renames it into
place. On Ray, attempts of one cell may overlap (a node that was declared lost may still be
running), so every attempt evaluates into its own ``.<cell>.partial-<attempt>`` folder and the
final rename refuses to overwrite a finished cell: the first attempt to finish wins, a later one
is discarded, and a cell is never written twice or half. A task whose worker dies (killed, out of
memory, node lost) is retried ``max_retries`` times (Python errors only with ``retry_errors``:
they are usually deterministic); a cell that still fails is reported with its log and the other
cells go on. Each Ray attempt's stdout / stderr goes to ``OUTPUT/logs/<model>/<cell>.log``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import os
import shutil
import socket
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

RAY_INSTALL = "pip install 'dslbench[ray]'"
RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory", "resources", "accelerator_type")
FAULT_ENV = "DSLBENCH_FAULT_CELLS"  # test-only: make named cells' attempts die (see parse_faults)
_ATTEMPT = ">>> attempt "


@dataclass
class CellFailure:
    cell: Any
    error: str
    log: Path | None
    attempts: int = 1


@dataclass
class ExecutorResult:
    ran: list = field(default_factory=list)
    failed: list[CellFailure] = field(default_factory=list)


# ----------------------------------------------------------------------------- config helpers
def check_resources(value: Any) -> dict[str, Any]:
    """A model's ``resources:`` entry (Ray task options); raises ValueError naming the bad key."""
    if not isinstance(value, dict):
        raise ValueError(f"resources must be a mapping of {', '.join(RESOURCE_KEYS)}, e.g. {{num_gpus: 1}}")
    for key, v in value.items():
        if key not in RESOURCE_KEYS:
            raise ValueError(f"resources: unknown key {key!r}; allowed: {', '.join(RESOURCE_KEYS)}")
        if key == "resources":
            ok = isinstance(v, dict) and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in v.values())
        elif key == "accelerator_type":
            ok = isinstance(v, str) and v != ""
        else:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
        if not ok:
            raise ValueError(f"resources: {key}={v!r} is not allowed (a number >= 0"
                             + (", per custom resource name" if key == "resources" else "") + ")")
    return dict(value)


def cell_key(cell) -> str:
    """``<model folder>/<cell folder>``, e.g. ``LLaDA/nfe4``: how a cell is named on the command line."""
    return f"{cell.dir.parent.name}/{cell.dir.name}"


def cell_log(cell, output: Path) -> Path:
    return Path(output).absolute() / "logs" / cell.dir.parent.name / f"{cell.dir.name}.log"


def parse_faults(text: str | None) -> dict[str, tuple[str, int | None]]:
    """``DSLBENCH_FAULT_CELLS``, a test-only hook: ``MODEL/CELL=exit[:N]`` makes the first N
    attempts (all without N) of that cell end its worker with ``os._exit(1)``, as a killed or
    out-of-memory worker does; ``MODEL/CELL=hang`` makes every attempt sleep until killed.
    Comma-separated for several cells."""
    faults: dict[str, tuple[str, int | None]] = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        key, _, action = item.partition("=")
        kind, _, n = action.partition(":")
        if not key or kind not in ("exit", "hang") or (n and not n.isdigit()) or (kind == "hang" and n):
            raise ValueError(f"{FAULT_ENV}: cannot read {item!r}; expected MODEL/CELL=exit[:N] or MODEL/CELL=hang")
        faults[key] = (kind, int(n) if n else None)
    return faults


# ----------------------------------------------------------------------------- one attempt
def install_cell(partial: Path, dest: Path, replace_ino: int | None = None) -> bool:
    """Rename a finished ``partial`` folder to ``dest`` unless a finished cell is already there.

    ``replace_ino`` names (by inode) the outdated cell the driver saw before submitting (a changed
    config, ``--force``): only that folder is moved away, never a cell a racing attempt of this
    run has just installed (a renamed folder keeps its inode, a new one has another). A rename onto
    a non-empty directory fails atomically, which is the "refuse to overwrite". Returns whether
    this attempt's folder was installed."""
    displaced = None
    if replace_ino is not None:
        with contextlib.suppress(FileNotFoundError):
            if dest.stat().st_ino == replace_ino:
                displaced = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(dest, displaced)
    try:
        os.rename(partial, dest)
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            if displaced is not None and not dest.exists():
                os.rename(displaced, dest)  # put the outdated cell back rather than lose it
            raise
        shutil.rmtree(partial, ignore_errors=True)  # a finished cell is in place: ours is not needed
        return False
    finally:
        if displaced is not None and displaced.exists():
            shutil.rmtree(displaced, ignore_errors=True)
    return True


def data_parallel(cell) -> dict:
    """A model with ``processes: N`` > 1: its cells are evaluated by N torchrun ranks."""
    from dslbench.runs.launch import LaunchedEvaluate

    n = cell.model.processes
    return {"evaluate": LaunchedEvaluate(n)} if n > 1 else {}


def _attempts_in(log: Path) -> int:
    try:
        return sum(line.startswith(_ATTEMPT) for line in log.read_text(encoding="utf-8", errors="replace").splitlines())
    except FileNotFoundError:
        return 0


@contextlib.contextmanager
def _captured(log: Path):
    """Send this process's stdout / stderr (file descriptors, so C code and subprocesses too) to
    ``log`` (appended), and the traceback of an exception with them."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = (os.dup(1), os.dup(2))
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        try:
            yield
        except BaseException:
            traceback.print_exc()
            raise
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def run_attempt(run_one: Callable, cell, model_args: dict, desc: dict, log: str,
                fault: tuple[str, int | None] | None = None, replace_ino: int | None = None) -> dict:
    """One attempt of one cell (the body of a Ray task): output to the cell's log, a partial
    folder of its own, the no-overwrite install. Returns seconds taken and whether it installed."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    number = _attempts_in(log) + 1
    start = time.monotonic()
    with _captured(log):
        print(f"{_ATTEMPT}{number} of {cell.label} ({cell_key(cell)}) on {socket.gethostname()}, pid {os.getpid()}, "
              f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC", flush=True)
        if fault is not None:
            kind, first = fault
            if kind == "hang":
                print(f"{FAULT_ENV}: hanging until killed", flush=True)
                while True:
                    time.sleep(1)
            if first is None or number <= first:
                print(f"{FAULT_ENV}: this attempt ends its worker (os._exit(1))", flush=True)
                os._exit(1)
        partial = cell.dir.parent / f".{cell.dir.name}.partial-{number}-{uuid.uuid4().hex[:8]}"
        installed = run_one(cell, model_args=model_args, desc=desc, partial=partial,
                            install=functools.partial(install_cell, replace_ino=replace_ino), **data_parallel(cell))
        print(f"<<< attempt {number}: " + ("installed" if installed else
              "a finished cell was already in place (another attempt); this one was discarded"), flush=True)
    return {"seconds": time.monotonic() - start, "installed": bool(installed), "attempt": number}


def _clean_leftovers(cell) -> None:
    """Partial / displaced folders of earlier attempts that died (their processes are gone);
    called only for cells this driver holds the claim of, never for another driver's."""
    for p in cell.dir.parent.glob(f".{cell.dir.name}.partial-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in cell.dir.parent.glob(f".{cell.dir.name}.old-*"):
        shutil.rmtree(p, ignore_errors=True)


# ----------------------------------------------------------------------------- progress
@dataclass
class Progress:
    """One line per finished cell: done / running / failed / left and GPU-hours so far."""

    total: int
    log: Callable[[str], None]
    done: int = 0
    failed: int = 0
    gpu_seconds: float = 0.0
    bar: Any = None  # the evaluation's one progress bar (quiet console, local executor)

    def line(self, cell, message: str, running: int, left: int) -> None:
        gpu = f" | {self.gpu_seconds / 3600:.2f} GPU-h" if self.gpu_seconds else ""
        text = f"[done {self.done}/{self.total} | running {running} | failed {self.failed} | left {left}{gpu}] {cell.label}: {message}"
        if self.bar is None:
            self.log(text)
            return
        with self.bar.external_write_mode(file=self.bar.fp):  # the line above the bar, not through it
            self.log(text)

    def open_bar(self) -> Any:
        """The bar over every pending cell, opened once; None with ``--verbose`` (lm-eval's own bars show)."""
        from dslbench.console import bar_file, quiet

        if self.bar is None and quiet():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc="evaluating", unit="cell", dynamic_ncols=True, file=bar_file())
        return self.bar

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ----------------------------------------------------------------------------- executors
class LocalExecutor:
    """Today's loop: the pending cells one after another in this process (errors propagate)."""

    name = "local"
    claim_batch = 1  # the runner claims one cell at a time for it: other drivers take the next ones
    progress: Progress | None = None  # the runner's count over all its calls (else one per call)

    def run(self, pending: list, prepare: Callable, run_one: Callable, output: Path,
            log: Callable[[str], None]) -> ExecutorResult:
        result = ExecutorResult()
        from dslbench.runs.cell_line import cell_summary

        progress = self.progress or Progress(len(pending), log)
        gpus = _local_gpus()
        bar = progress.open_bar()
        for cell, desc in pending:
            args = prepare(cell)
            if bar is None:
                log(f"[{progress.done + 1}/{progress.total}] {cell.label}: evaluating {', '.join(cell.tasks)}")
            else:
                bar.set_postfix_str(cell.label)
            start = time.monotonic()
            run_one(cell, model_args=args, desc=desc, **data_parallel(cell))
            seconds = time.monotonic() - start
            progress.done += 1
            progress.gpu_seconds += seconds * gpus * cell.model.processes
            if bar is not None:
                bar.update()
            summary = cell_summary(cell.dir)
            progress.line(cell, f"finished in {seconds:.1f} s" + (f": {summary}" if summary else ""), 0,
                          progress.total - progress.done)
            result.ran.append(cell)
        return result


def _local_gpus() -> int:
    try:
        import torch

        return 1 if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def _absolute_args(args: dict) -> dict:
    """A local checkpoint path as an absolute path: Ray workers do not share the driver's cwd."""
    pre = args.get("pretrained")
    if isinstance(pre, str) and not os.path.isabs(pre) and os.path.exists(pre):
        return {**args, "pretrained": os.path.abspath(pre)}
    return args


def _task_env() -> dict[str, str]:
    """What a cell reads from the environment (data folders, hub cache and offline switches, the
    code path), handed to the tasks: a cluster started elsewhere does not have the driver's."""
    keep = ("PYTHONPATH", "TOKENIZERS_PARALLELISM")
    return {k: v for k, v in os.environ.items() if k in keep or (k.startswith(("DSLBENCH_", "HF_")) and k != FAULT_ENV)}


class RayExecutor:
    """One Ray task per pending cell, each requesting its model's ``resources`` (default: one GPU
    where the cluster has GPUs, else one CPU). Output folders must be on storage every node sees."""

    name = "ray"
    claim_batch = None  # the runner claims every cell it can before submitting them
    progress = None

    def __init__(self, address: str | None = None, max_retries: int = 2, retry_errors: bool = False):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL}") from None
        if max_retries < 0:
            raise ValueError(f"--max-retries must be >= 0, got {max_retries}")
        self.address, self.max_retries, self.retry_errors = address, max_retries, retry_errors

    def run(self, pending: list, prepare: Callable, run_one: Callable, output: Path,
            log: Callable[[str], None]) -> ExecutorResult:
        import ray

        faults = parse_faults(os.environ.get(FAULT_ENV))
        result = ExecutorResult()
        if not pending:
            return result
        # every model is built here, before any task starts: two tasks never build the same one
        jobs = [(dataclasses.replace(cell, dir=cell.dir.absolute()), desc, _absolute_args(prepare(cell)))
                for cell, desc in pending]
        owned = not ray.is_initialized()
        if owned:
            extra = {}
            if self.address is None and not os.environ.get("RAY_ADDRESS"):
                # a Ray instance of our own: workers killed for memory are retried as boundedly as
                # other deaths (Ray's own default for them is its task_oom_retries setting)
                extra["_system_config"] = {"task_oom_retries": self.max_retries}
            ray.init(address=self.address, include_dashboard=False, runtime_env={"env_vars": _task_env()}, **extra)
        try:
            res = ray.cluster_resources()
            log(f"Ray cluster: {res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU; "
                f"{len(jobs)} cell(s), up to {self.max_retries} retr{'y' if self.max_retries == 1 else 'ies'} each")
            gpu = res.get("GPU", 0) > 0
            task = ray.remote(run_attempt)
            refs, progress = {}, Progress(len(jobs), log)
            for cell, desc, args in jobs:
                _clean_leftovers(cell)
                cell_log(cell, output).parent.mkdir(parents=True, exist_ok=True)
                cell_log(cell, output).write_text("", encoding="utf-8")  # one log per run of the cell
                n = cell.model.processes  # one device per data-parallel rank
                opts = dict(cell.model.resources or ({"num_gpus": n} if gpu else {"num_cpus": n}))
                ino = cell.dir.stat().st_ino if cell.dir.exists() else None  # an outdated cell to replace
                ref = task.options(max_retries=self.max_retries, retry_exceptions=self.retry_errors, **opts).remote(
                    run_one, cell, args, desc, str(cell_log(cell, output)), faults.get(cell_key(cell)), ino)
                refs[ref] = (cell, opts)
            try:
                self._collect(refs, progress, result, output)
            except BaseException:
                for ref in refs:  # the driver stops: so do its tasks (a rerun finishes what is missing)
                    ray.cancel(ref, force=True)
                raise
            for cell, _, _ in jobs:
                _clean_leftovers(cell)
        finally:
            if owned:
                ray.shutdown()
        return result

    @staticmethod
    def _collect(refs: dict, progress: Progress, result: ExecutorResult, output: Path) -> None:
        import ray

        from dslbench.runs.cell_line import cell_summary

        while refs:
            (ref,), _ = ray.wait(list(refs), num_returns=1)
            cell, opts = refs.pop(ref)
            log = cell_log(cell, output)
            try:
                info = ray.get(ref)
            except ray.exceptions.RayError as err:
                lines = [s for s in str(err).splitlines() if s.strip()]
                attempts = _attempts_in(log)
                progress.failed += 1
                result.failed.append(CellFailure(cell, f"{type(err).__name__}: {lines[-1] if lines else ''}", log, attempts))
                message = f"FAILED after {attempts} attempt(s) ({result.failed[-1].error}); log: {log}"
            else:
                progress.done += 1
                progress.gpu_seconds += info["seconds"] * float(opts.get("num_gpus", 0))
                result.ran.append(cell)
                summary = cell_summary(cell.dir)
                message = (f"finished in {info['seconds']:.1f} s (attempt {info['attempt']})"
                           + (f": {summary}" if summary else "") + f", log: {log}")
            running = sum(cell_log(c, output).stat().st_size > 0 for c, _ in refs.values())
            progress.line(cell, message, running, len(refs) - running)


def make_executor(name: str = "local", address: str | None = None, max_retries: int = 2,
                  retry_errors: bool = False):
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, max_retries, retry_errors)
    raise ValueError(f"unknown executor {name!r}; choose local or ray")
