"""Orchestration: who runs the leaderboard's cells and where (one process, or a Ray cluster).

The cells themselves (what a cell is, what it writes, when it is finished) are defined by
``dslbench.report.matrix``; an executor only decides where and when ``run one cell`` is called.
"""
