"""Shared by the task-YAML generators under ``tasks/`` (summarization, open-ended, unconditional):
a group YAML, the metric list of a generation task, and writing the generated files or checking
that the committed ones are up to date."""

from __future__ import annotations

from pathlib import Path

# The length, repetition and efficiency metrics every generation family reports (open-ended,
# unconditional): (metric, aggregation in the family's utils module or "mean", higher_is_better).
GENERATION_METRICS = (
    ("d2", "distinct", True),
    ("d3", "distinct", True),
    ("rep", "rep", False),
    ("words", "words_valid", True),
    ("n_valid", "n_valid", True),
    ("empty", "mean", False),
    ("nfe", "mean", False),
    ("gen_tokens", "mean", True),
    ("seconds_per_sample", "mean", False),
    ("tokens_per_forward", "tokens_per_forward", True),
)


def group_yaml(header: str, name: str, members: list[str], comment: str, version: float,
               aggregate: list[str] | None = None) -> str:
    """An lm-eval group; ``aggregate``: metrics averaged over its tasks, each task counting once."""
    text = header + f"# {comment}\n" + f"group: {name}\n" + "task:\n" + "".join(f"  - {m}\n" for m in members)
    if aggregate:
        text += "aggregate_metric_list:  # macro mean over the datasets (each counts once)\n"
        for metric in aggregate:
            text += f"  - metric: {metric}\n    aggregation: mean\n    weight_by_size: false\n"
    return text + f"metadata:\n  version: {version}\n"


def metric_block(metrics, module: str) -> str:
    """An lm-eval ``metric_list`` from ``(metric, aggregation, higher_is_better)`` rows; an
    aggregation other than ``mean`` is the function of that name in the task's ``module``."""
    lines = ["metric_list:"]
    for name, agg, hib in metrics:
        how = "mean" if agg == "mean" else f"!function {module}.{agg}"
        lines += [f"  - metric: {name}", f"    aggregation: {how}", f"    higher_is_better: {str(hib).lower()}"]
    return "\n".join(lines) + "\n"


def write_or_check(files: dict[str, str], here: Path, script: str, check: bool) -> int:
    """Write ``files`` (relative path -> text) under ``here``; with ``check``, write nothing and
    return 1 naming every file that differs from what ``script`` would write."""
    stale = []
    for rel, text in files.items():
        path = here / rel
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(rel)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if stale:
        print(f"out of date (run python {script}):", *stale, sep="\n  ")
        return 1
    return 0
