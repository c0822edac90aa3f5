"""Trade-off plots (matplotlib, Agg, PNG). Each function writes one file atomically and returns
its path, or ``None`` when the data has nothing to draw. PNGs carry no software/date metadata,
so the same inputs give the same bytes."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd

from dslbench.report.io import write_bytes_atomic
from dslbench.report.tables import pareto_front

LABELS = {
    "rouge1": "ROUGE-1 F1 (x100)",
    "words": "output words",
    "adjacent_rep": "adjacent repetition (share of words)",
    "nfe": "measured NFE per sample",
    "nfe_budget": "NFE budget",
    "fix_rate": "fix rate (%)",
    "preserve_rate": "preserve rate (%)",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return write_bytes_atomic(buf.getvalue(), path)


def _colors(models: list[str]) -> dict[str, tuple]:
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(models)}


def _grid(n: int):
    plt = _plt()
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _summ(cells: pd.DataFrame) -> pd.DataFrame:
    return cells[(cells["family"] == "summarization") & cells["nfe_budget"].notna()]


def metric_vs_nfe(cells: pd.DataFrame, metric: str, path: str | Path) -> Path | None:
    """One panel per dataset, one line per model: ``metric`` against the NFE budget (log2 axis)."""
    df = _summ(cells)
    if df.empty or metric not in df.columns or df[metric].isna().all():
        return None
    datasets = sorted(df["dataset"].unique())
    models = sorted(df["model"].unique())
    colors = _colors(models)
    fig, axes = _grid(len(datasets))
    for ax, ds in zip(axes, datasets):
        sub = df[df["dataset"] == ds]
        for m in models:
            line = sub[sub["model"] == m].sort_values("nfe_budget")
            if line.empty:
                continue
            ax.plot(line["nfe_budget"].astype(float), line[metric].astype(float), marker="o", label=m, color=colors[m])
        ax.set_xscale("log", base=2)
        ax.set_title(ds)
        ax.set_xlabel(LABELS["nfe_budget"])
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{LABELS.get(metric, metric)} vs NFE", y=1.03)
    return _save(fig, Path(path))


def quality_vs_length(cells: pd.DataFrame, path: str | Path, quality: str = "rouge1", length: str = "words") -> Path | None:
    """ROUGE-1 against output words, one point per model and budget (labelled with the NFE)."""
    df = _summ(cells)
    if df.empty or quality not in df.columns or length not in df.columns:
        return None
    datasets = sorted(df["dataset"].unique())
    models = sorted(df["model"].unique())
    colors = _colors(models)
    fig, axes = _grid(len(datasets))
    for ax, ds in zip(axes, datasets):
        sub = df[df["dataset"] == ds]
        for m in models:
            pts = sub[sub["model"] == m].sort_values("nfe_budget")
            if pts.empty:
                continue
            ax.plot(pts[length].astype(float), pts[quality].astype(float), marker="o", ls=":", label=m, color=colors[m])
            for _, r in pts.iterrows():
                ax.annotate(str(int(r["nfe_budget"])), (float(r[length]), float(r[quality])), fontsize=6,
                            xytext=(2, 2), textcoords="offset points")
        if "ref_words" in sub.columns and sub["ref_words"].notna().any():
            ax.axvline(float(sub["ref_words"].mean()), color="grey", ls="--", lw=0.8, label="reference words")
        ax.set_title(ds)
        ax.set_xlabel(LABELS.get(length, length))
        ax.set_ylabel(LABELS.get(quality, quality))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("ROUGE-1 vs output length (points labelled with the NFE budget)", y=1.03)
    return _save(fig, Path(path))


def pareto_plot(cells: pd.DataFrame, path: str | Path, cost: str = "nfe", quality: str = "rouge1") -> Path | None:
    """All (model, budget) points per dataset; the quality / compute Pareto front as a step line."""
    df = _summ(cells)
    if df.empty or cost not in df.columns or quality not in df.columns or df[cost].isna().all():
        return None
    datasets = sorted(df["dataset"].unique())
    models = sorted(df["model"].unique())
    colors = _colors(models)
    fig, axes = _grid(len(datasets))
    for ax, ds in zip(axes, datasets):
        sub = df[df["dataset"] == ds]
        front = pareto_front(sub, cost, quality)
        for m in models:
            pts = sub[sub["model"] == m]
            if not pts.empty:
                ax.scatter(pts[cost].astype(float), pts[quality].astype(float), label=m, color=colors[m], s=22)
        on = sub[front].sort_values(cost)
        if not on.empty:
            ax.step(on[cost].astype(float), on[quality].astype(float), where="post", color="black", lw=1, label="Pareto front")
            ax.scatter(on[cost].astype(float), on[quality].astype(float), facecolors="none", edgecolors="black", s=70)
        ax.set_xscale("log", base=2)
        ax.set_title(ds)
        ax.set_xlabel(LABELS.get(cost, cost))
        ax.set_ylabel(LABELS.get(quality, quality))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Quality / compute Pareto front (ROUGE-1 vs measured NFE)", y=1.03)
    return _save(fig, Path(path))


def repair_plot(cells: pd.DataFrame, path: str | Path) -> Path | None:
    """Fix rate vs preserve rate: colour = model, marker = corruption rate, one panel per corruption
    kind and passage source."""
    df = cells[cells["family"] == "repair"]
    if df.empty or "fix_rate" not in df.columns or "preserve_rate" not in df.columns:
        return None
    panels = sorted({(r["dataset"], r["corruption"]) for _, r in df.iterrows()})
    if "repair_protocol" in df.columns:  # a variant is named in the legend, never shown unlabelled
        df = df.assign(model=[m if p == "published" else f"{m} [variant {p or 'unrecorded'}]"
                              for m, p in zip(df["model"], df["repair_protocol"])])
    models = sorted(df["model"].unique())
    colors = _colors(models)
    markers = {10: "o", 30: "s", 50: "^"}
    fig, axes = _grid(len(panels))
    for ax, (ds, kind) in zip(axes, panels):
        sub = df[(df["dataset"] == ds) & (df["corruption"] == kind)]
        for _, r in sub.sort_values(["model", "corruption_rate"]).iterrows():
            rate = int(r["corruption_rate"])
            ax.scatter(float(r["fix_rate"]), float(r["preserve_rate"]), color=colors[r["model"]],
                       marker=markers.get(rate, "D"), s=40)
        for m in models:
            ax.scatter([], [], color=colors[m], label=m)
        for rate in sorted(sub["corruption_rate"].dropna().astype(int).unique()):
            ax.scatter([], [], color="grey", marker=markers.get(rate, "D"), label=f"{rate}% corrupted")
        ax.set_xlim(-2, 102)
        ax.set_ylim(-2, 102)
        ax.set_title(f"{ds}, {kind} corruption")
        ax.set_xlabel(LABELS["fix_rate"])
        ax.set_ylabel(LABELS["preserve_rate"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Selective-corruption repair: fix vs preserve", y=1.03)
    return _save(fig, Path(path))


PLOTS = [
    ("rouge1_vs_nfe.png", "ROUGE-1 vs NFE per backend", lambda c, p: metric_vs_nfe(c, "rouge1", p)),
    ("words_vs_nfe.png", "Output words vs NFE per backend", lambda c, p: metric_vs_nfe(c, "words", p)),
    ("repetition_vs_nfe.png", "Adjacent repetition vs NFE per backend", lambda c, p: metric_vs_nfe(c, "adjacent_rep", p)),
    ("rouge1_vs_words.png", "ROUGE-1 vs output length", quality_vs_length),
    ("pareto.png", "Quality / compute Pareto front", pareto_plot),
    ("repair.png", "Repair: fix vs preserve per backend and corruption rate", repair_plot),
]


def make_plots(cells: pd.DataFrame, out_dir: str | Path) -> list[tuple[str, Path]]:
    """Every plot there is data for: ``[(caption, path)]`` in a fixed order."""
    out = []
    for name, caption, fn in PLOTS:
        path = fn(cells, Path(out_dir) / name)
        if path is not None:
            out.append((caption, path))
    return out
