"""dslbench.runs: orchestration, the layer that runs things and writes files.

- ``config``: the leaderboard config (models x tasks x budgets) and its plan of cells;
- ``model_args``: a model's args: ``${VAR}`` expansion, the ``tiny:`` checkpoints built on first
  use, the check against the backends' declared args;
- ``matrix``: the runner (resume, atomic cells, ``cell.json``); ``executors``: who runs the pending
  cells and where (one process, or a Ray cluster); ``launch``: data parallel inside a cell;
  ``cost``: ``--dry-run``;
- ``trace``: the denoising-trace recorder (runs a backend's sampler with read-only taps);
- ``files``: the names and schema of the files written here and read by ``report``.

Layer: above ``training`` / ``harness``. May import them and everything below; never ``report``
or the faces (they call this layer and render what it wrote).
"""
