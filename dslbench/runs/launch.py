"""Data parallel inside one cell: ``evaluate_cell`` under ``torchrun --nproc_per_node N``.

A model with ``processes: N`` in the leaderboard config has each of its cells evaluated by N
processes (one device each on GPU, gloo ranks on CPU): lm-eval splits the documents over the
ranks and rank 0 writes the files. The cell's own bookkeeping (partial folder, ``cell.json``,
the rename into place) stays in the single calling process, so it composes with either executor:
on Ray such a cell is one task holding N GPUs. ``--standalone`` picks a free rendezvous port, so
several launches on one node do not collide.

    python -m dslbench.runs.launch SPEC.json     (what each rank runs; SPEC = evaluate_cell's arguments)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SPEC = ".launch.json"  # in the cell's partial folder while its ranks run, removed afterwards


@dataclass(frozen=True)
class LaunchedEvaluate:
    """Stands in for ``evaluate_cell`` (same arguments): runs it on ``processes`` ranks."""

    processes: int

    def __call__(self, model, model_args, tasks, out_dir, limit=None, seed=1234, batch_size=1, force=False,
                 metadata=None) -> dict:
        spec = Path(out_dir) / SPEC
        spec.parent.mkdir(parents=True, exist_ok=True)
        spec.write_text(json.dumps({"model": model, "model_args": model_args, "tasks": tasks, "out_dir": str(out_dir),
                                    "limit": limit, "seed": seed, "batch_size": batch_size, "force": force,
                                    "metadata": metadata}))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.processes}",
               "-m", "dslbench.runs.launch", str(spec)]
        try:
            done = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        finally:
            spec.unlink(missing_ok=True)
        if done.returncode != 0:
            raise RuntimeError(f"{model} on {', '.join(tasks)}: the {self.processes} data-parallel ranks "
                               f"exited with status {done.returncode} ({' '.join(cmd)})")
        return {}


def main(argv: list[str] | None = None) -> int:
    from dslbench.harness.run import evaluate_cell

    spec = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    evaluate_cell(spec.pop("model"), spec.pop("model_args"), spec.pop("tasks"), spec.pop("out_dir"), **spec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
