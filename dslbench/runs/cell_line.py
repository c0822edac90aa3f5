"""The console line of a finished cell: each task's headline metric and measured NFE, read back
from the cell's ``done.json`` (lm-eval's aggregated results, as the report reads them)."""

from __future__ import annotations

import json
from pathlib import Path

# per task, the first of these it reports: summarization, open-ended, repair, lm-eval's own tasks
HEADLINE_METRICS = ("rouge1", "genppl", "fix_rate", "exact_match", "acc")


def _task_part(task: str, values: dict) -> str:
    metrics = {key.partition(",")[0]: v for key, v in values.items() if "," in key and "_stderr" not in key}
    name = next((m for m in HEADLINE_METRICS if isinstance(metrics.get(m), (int, float))), None)
    part = task if name is None else f"{task} {name} {metrics[name]:.4g}"
    nfe = metrics.get("nfe")
    return part + (f" (NFE {nfe:.3g})" if isinstance(nfe, (int, float)) else "")


def cell_summary(cell_dir: str | Path) -> str:
    """``task metric value (NFE n), ...`` over the cell's tasks; ``""`` when it has no results file."""
    from dslbench.harness.run import DONE

    try:
        results = json.loads((Path(cell_dir) / DONE).read_text(encoding="utf-8")).get("results", {})
    except (OSError, ValueError, AttributeError):
        return ""
    return ", ".join(_task_part(task, values) for task, values in sorted(results.items()) if isinstance(values, dict))
