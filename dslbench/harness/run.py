"""Run one evaluation cell through lm-eval's Python API and store it like the CLI does.

Each cell writes lm-eval's own results/samples files under its folder, then a ``done.json``
marker (atomically, last): a cell with the marker is finished and is skipped on a re-run, so an
interrupted regeneration resumes where it stopped. lm-eval only logs a failure to write those
files, so the marker is written only after they are read back complete (:func:`check_saved`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dslbench import fsio

DONE = "done.json"


class CellSaveError(RuntimeError):
    """lm-eval finished but its results / samples files are missing or incomplete."""


def check_saved(results_file: Path, samples_files: dict[str, Path], expected: dict[str, int]) -> None:
    """Read back what lm-eval wrote: the results file parses and names every task, and each
    task's samples file holds one parseable record per evaluated document."""
    def fail(path: Path, why: str) -> CellSaveError:
        return CellSaveError(f"{path}: {why}; the cell is not marked done (lm-eval logs, but does not raise, "
                             "errors writing its outputs: check free space and permissions, then re-run)")

    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise fail(results_file, "lm-eval did not write its results file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise fail(results_file, f"unreadable results file ({err})") from None
    missing = sorted(set(expected) - set(results.get("results", {})) if isinstance(results, dict) else expected)
    if missing:
        raise fail(results_file, f"no results for task(s) {', '.join(missing)}")
    for task, n in expected.items():
        path = samples_files[task]
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            records = [json.loads(line) for line in lines if line.strip()]
        except FileNotFoundError:
            raise fail(path, f"lm-eval did not write the samples of {task}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise fail(path, f"unreadable samples file ({err})") from None
        if len(records) != n:
            raise fail(path, f"{len(records)} sample record(s) for {task}, expected {n}")


def write_json_atomic(data, path: Path) -> None:
    """``data`` as JSON at ``path`` (temp file + rename, a crash point of :mod:`dslbench.fsio`);
    a failed write names the file."""
    fsio.write_text_atomic(json.dumps(data, indent=1, sort_keys=True), path)


def cell_done(out_dir: str | os.PathLike) -> dict | None:
    marker = Path(out_dir) / DONE
    return json.loads(marker.read_text()) if marker.exists() else None


def _cache_env_info() -> None:
    """lm-eval records ``torch.utils.collect_env.get_pretty_env_info()`` in every result; it runs
    ``pip list`` and other subprocesses (seconds per cell). The environment does not change
    within a process, so it is computed once per process and reused by later cells."""
    import functools

    import torch.utils.collect_env as collect_env

    if not getattr(collect_env.get_pretty_env_info, "_dslbench_cached", False):
        cached = functools.cache(collect_env.get_pretty_env_info)
        cached._dslbench_cached = True
        collect_env.get_pretty_env_info = cached


def evaluate_cell(
    model: str,
    model_args: dict,
    tasks: list[str],
    out_dir: str | os.PathLike,
    limit: int | float | None = None,
    seed: int = 1234,
    batch_size: int = 1,
    force: bool = False,
    metadata: dict | None = None,
) -> dict:
    """Evaluate (or reuse) one cell; returns the aggregated lm-eval results (without samples).
    ``metadata``: lm-eval's ``--metadata`` (task settings such as the evaluator ``ppl_model``)."""
    out_dir = Path(out_dir)
    if not force and (done := cell_done(out_dir)) is not None:
        return done
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    import dslbench._lm_eval_hook  # noqa: F401  (registers the backends even without the .pth file)
    from dslbench.paths import tasks_dir

    _cache_env_info()
    tracker = EvaluationTracker(output_path=str(out_dir))
    results = lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=tasks,
        limit=limit,
        batch_size=batch_size,
        log_samples=True,
        evaluation_tracker=tracker,
        # lm-eval hands --metadata to the tasks through its TaskManager (ours, for the include path)
        task_manager=TaskManager(include_defaults=False, include_path=str(tasks_dir()), metadata=metadata or None),
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    if results is None:  # a rank other than 0 of a data-parallel launch: rank 0 writes the files
        return {}
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task_name in results["configs"]:
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    # Where the tracker wrote (its own naming: OUT/<model>/results_<date>.json, samples_<task>_<date>.jsonl).
    where = out_dir / str(tracker.general_config_tracker.model_name_sanitized)
    date = getattr(tracker, "date_id", None)
    check_saved(
        where / f"results_{date}.json",
        {t: where / f"samples_{t}_{date}.jsonl" for t in samples},
        {t: len(v) for t, v in samples.items()},
    )
    summary = json.loads(json.dumps(
        {k: results[k] for k in ("results", "n-samples", "config") if k in results},
        default=handle_non_serializable,
    ))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(summary, out_dir / DONE)
    return summary
