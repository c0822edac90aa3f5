"""Kept for the old import path (the task utils of a wheel built before the move, benchmarks,
lm-eval configs that name it): the per-sample stats record lives in
:mod:`dslbench.metrics.sample_stats`, below both the backends that attach it and the reports
that read it back."""

from dslbench.metrics.sample_stats import MARKER, attach_stats, split_stats  # noqa: F401
