"""The published open-ended figure's axes: words, Rep % and GenPPL against NFE, one panel each,
one line per model; published points hollow, measured points solid, in the report's colours."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dslbench.report.palette import PUBLISHED_MODELS, model_colours, published_key  # noqa: F401  (re-exported)
from dslbench.report.plots import LABELS, _grid, _save, _style, legend_below, nfe_lines, published_lines

DATASETS = ("prompts", "prefix", "synth")
# (cells column, published column, scale, axis label)
PANELS = [
    ("words", "words", 1.0, "words (mean over non-empty outputs)"),
    ("rep", "rep_pct", 100.0, "Rep % (adjacent pairs, pooled)"),
    ("genppl", "genppl", 1.0, "GenPPL"),
]


def vs_nfe_figure(cells: pd.DataFrame, published: pd.DataFrame | None, dataset: str, path: Path,
                  colours: dict | None = None) -> Path | None:
    """``cells``: this dataset's open-ended cells; ``published``: rows to draw hollow (or None)."""
    if cells.empty:
        return None
    colours = colours or model_colours(cells, {"published": published} if published is not None else None)
    fig, axes = _grid(len(PANELS))
    for ax, (col, pcol, scale, label) in zip(axes, PANELS):
        nfe_lines(ax, cells, col, colours, scale=scale)
        published_lines(ax, published, pcol, colours)
        _style(ax, f"{dataset}: {label.split(' (')[0]}", LABELS["nfe_budget"], label)
        if col == "genppl":  # perplexities span orders of magnitude (an untrained row's thousands)
            ax.set_yscale("log")
    legend_below(fig, axes)
    return _save(fig, Path(path))
