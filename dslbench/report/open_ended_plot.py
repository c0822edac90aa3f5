"""The published open-ended figure's axes: words, Rep % and GenPPL against NFE, one panel each,
one line per model; published points hollow, measured points solid, one colour per model name."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from dslbench.report.plots import LABELS, _colors, _grid, _save

DATASETS = ("prompts", "prefix", "synth")
PUBLISHED_MODELS = ("DSL-SDE", "LLaDA", "LLaDA+EOS+Block")
# (cells column, published column, scale, axis label)
PANELS = [
    ("words", "words", 1.0, "words (mean over non-empty outputs)"),
    ("rep", "rep_pct", 100.0, "Rep % (adjacent pairs, pooled)"),
    ("genppl", "genppl", 1.0, "GenPPL"),
]
STYLES = ("-", "-.", ":", (0, (5, 1)))


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def published_key(model: str) -> str | None:
    """The published model a measured one is drawn like: the same name up to case and punctuation,
    or ``DSL-SDE`` for any name with both DSL and SDE in it (the DSL-LLaDA SDE sampler rows)."""
    norm = _norm(model)
    for name in PUBLISHED_MODELS:
        if norm == _norm(name):
            return name
    if "dsl" in norm and "sde" in norm:
        return "DSL-SDE"
    return None


def vs_nfe_figure(cells: pd.DataFrame, published: pd.DataFrame | None, dataset: str, path: Path) -> Path | None:
    """``cells``: this dataset's open-ended cells; ``published``: rows to draw hollow (or None)."""
    if cells.empty:
        return None
    models = sorted(cells["model"].unique())
    pub_models = sorted(published["model"].unique()) if published is not None else []
    group = {m: published_key(m) or m for m in models}
    colors = _colors(sorted(set(group.values()) | set(pub_models)))
    style = {}
    for m in models:  # several measured rows of one published name: same colour, own line style
        style[m] = STYLES[sum(group[o] == group[m] for o in style) % len(STYLES)]
    fig, axes = _grid(len(PANELS))
    for ax, (col, pcol, scale, label) in zip(axes, PANELS):
        for m in models:
            line = cells[cells["model"] == m].sort_values("nfe_budget")
            y = scale * pd.to_numeric(line[col], errors="coerce") if col in line.columns else line["nfe_budget"] * float("nan")
            if "n_valid" in line.columns:  # no non-empty output: nothing to average, no point
                y = y.where(pd.to_numeric(line["n_valid"], errors="coerce") != 0)
            ax.plot(line["nfe_budget"].astype(float), y.astype(float), marker="o", ls=style[m], color=colors[group[m]],
                    label=m)
        for name in pub_models:
            pts = published[published["model"] == name].assign(nfe=lambda d: pd.to_numeric(d["nfe"])).sort_values("nfe")
            ax.plot(pts["nfe"].astype(float), pd.to_numeric(pts[pcol], errors="coerce"), marker="o", ls="--",
                    mfc="none", color=colors[name], label=f"{name} (published)")
        ax.set_xscale("log", base=2)
        if col == "genppl":  # perplexities span orders of magnitude (an untrained row's thousands)
            ax.set_yscale("log")
        ax.set_title(label)
        ax.set_xlabel(LABELS["nfe_budget"])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    what = "solid = measured here, hollow = published" if pub_models else "measured here (no published points for this set)"
    fig.suptitle(f"Open-ended generation ({dataset}) vs NFE: {what}", y=1.03)
    return _save(fig, Path(path))
