"""``dslbench leaderboard --dry-run``: what the pending cells will cost, before anything runs.

Documents are the config's ``limit`` per task (lm-eval evaluates fewer when a task has fewer);
forward passes are documents x NFE budget, the most a budget-respecting sampler spends (the DSL
row with ``accounting: published`` spends one more per document). Tasks without a budget (repair)
spend what their task defines, so they are listed without a count.
"""

from __future__ import annotations

def cell_cost(cell, limit: int | float | None) -> tuple[int | None, int | None]:
    """(documents, forward passes) of one cell; None where it is not known before lm-eval loads the task."""
    docs = len(cell.tasks) * limit if isinstance(limit, int) else None
    passes = docs * cell.budget if docs is not None and cell.budget is not None else None
    return docs, passes


def dry_run_lines(pending: list, limit: int | float | None, executor: str) -> list[str]:
    """One line per pending cell and a total."""
    if not pending:
        return ["dry run: nothing to do, every cell is finished"]
    lines = [f"dry run ({executor} executor): {len(pending)} pending cell(s); documents = tasks x limit {limit}, "
             "forward passes = documents x NFE budget"]
    total_docs = total_passes = 0
    unknown = False
    for cell in pending:
        docs, passes = cell_cost(cell, cell.limit)
        unknown |= docs is None
        total_docs += docs or 0
        total_passes += passes or 0
        budget = f"NFE {cell.budget}" if cell.budget is not None else "task's own budget"
        res = ""
        if executor == "ray":
            n = cell.model.processes
            res = f" | resources {cell.model.resources or f'default ({n} GPU if the cluster has GPUs, else {n} CPU)'}"
        lines.append(f"  {cell.label}: {', '.join(cell.tasks)} | documents {_n(docs)} | {budget} | "
                     f"forward passes {_n(passes) if cell.budget is not None else 'per the task'}{res}")
    fixed = any(c.budget is None for c in pending)
    lines.append(f"total: {total_docs:,} documents{' (+ unknown)' if unknown else ''}, {total_passes:,} budgeted "
                 f"forward passes{' (+ the fixed-budget tasks)' if fixed else ''}")
    return lines


def _n(value: int | None) -> str:
    return f"{value:,}" if value is not None else "all (unknown before lm-eval loads the task)"
