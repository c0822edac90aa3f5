"""dslbench.report: reads files, never runs a model.

lm-eval output folders (results / samples files, a leaderboard cell's ``cell.json``) and recorded
traces (``trace.json``) in; ``leaderboard.csv``, per-sample tables, plots, paired statistics,
``report.md`` / ``report.html`` and the trace page out.

Layer: above ``runs``. May import ``metrics``, the utilities and, of ``runs``, only what names
the files runs write (``runs/files.py``); never ``harness``, ``diffusion``, ``models`` or
``training``, not even indirectly (contract "reports read files, never run models").
"""
