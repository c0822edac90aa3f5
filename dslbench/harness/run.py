"""Run one evaluation cell through lm-eval's Python API and store it like the CLI does.

Each cell writes lm-eval's own results/samples files under its folder, then a ``done.json``
marker (atomically, last): a cell with the marker is finished and is skipped on a re-run, so an
interrupted regeneration resumes where it stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dslbench import fsio

DONE = "done.json"


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
) -> dict:
    """Evaluate (or reuse) one cell; returns the aggregated lm-eval results (without samples)."""
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
        task_manager=TaskManager(include_defaults=False, include_path=str(tasks_dir())),
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task_name in results["configs"]:
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    summary = json.loads(json.dumps(
        {k: results[k] for k in ("results", "n-samples", "config") if k in results},
        default=handle_non_serializable,
    ))
    tmp = out_dir / (DONE + ".tmp")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(summary, indent=1, sort_keys=True))
    fsio.replace(tmp, out_dir / DONE)
    return summary
