"""Trade-off plots (matplotlib, Agg, PNG). Each function writes one file atomically and returns
its path, or ``None`` when the data has nothing to draw. PNGs carry no software/date metadata,
so the same inputs give the same bytes.

Every plot of a report takes the report's one model -> colour map (:mod:`dslbench.report.palette`),
draws small panels (one per dataset, or per dataset and metric) and puts its legend below the
panels, outside the data; published points are hollow, measured points solid."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd

from dslbench.report.io import write_bytes_atomic
from dslbench.report.palette import colour_of, line_styles, model_colours
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
TRADEOFF_METRICS = ("rouge1", "words", "adjacent_rep")
PANEL_SIZE = (3.3, 2.6)  # inches per panel: small multiples, several side by side in the page's grid


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


def _grid(n: int, ncols: int | None = None):
    plt = _plt()
    ncols = ncols or min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows), squeeze=False,
                             layout="constrained")
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def legend_below(fig, axes) -> None:
    """One legend for the whole figure, under the panels (never on top of a line); each label once."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if not seen:
        return
    # as many columns as the figure's width holds at the longest label (about 0.055 inch a character at 8 pt)
    width, height = fig.get_size_inches()
    longest = max(len(label) for label in seen)
    ncol = max(1, min(len(seen), 4, int(width / (0.055 * longest + 0.45))))
    # the figure grows by the legend's height, so that a long legend never squeezes the panels
    fig.set_size_inches(width, height + 0.19 * math.ceil(len(seen) / ncol) + 0.1)
    fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)


def _style(ax, title: str, xlabel: str, ylabel: str, log2x: bool = True) -> None:
    if log2x:  # budgets double: equal steps on the axis, labelled with the budgets themselves
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def nfe_lines(ax, rows: pd.DataFrame, y: str, colours: dict, *, scale: float = 1.0, x: str = "nfe_budget") -> None:
    """Measured rows: one solid line per model of ``y`` against ``x``, joined in budget order
    (points with no value left out)."""
    models = sorted(rows["model"].unique())
    styles = line_styles(models)
    for m in models:
        line = rows[rows["model"] == m].sort_values("nfe_budget")
        vals = scale * pd.to_numeric(line[y], errors="coerce") if y in line.columns else line[x] * math.nan
        if "n_valid" in line.columns:  # no non-empty output: nothing to average, no point
            vals = vals.where(pd.to_numeric(line["n_valid"], errors="coerce") != 0)
        ax.plot(line[x].astype(float), vals.astype(float), marker="o", ms=4, ls=styles[m], color=colour_of(colours, m),
                label=m)


def published_lines(ax, rows: pd.DataFrame | None, y: str, colours: dict, x: str = "nfe") -> None:
    """Published rows: one dashed line of hollow markers per model."""
    if rows is None or rows.empty or y not in rows.columns:
        return
    for name in sorted(rows["model"].unique()):
        pts = rows[rows["model"] == name].assign(_x=lambda d: pd.to_numeric(d[x])).sort_values("_x")
        ax.plot(pts["_x"].astype(float), pd.to_numeric(pts[y], errors="coerce"), marker="o", ms=5, ls="--", lw=1,
                mfc="none", color=colour_of(colours, name), label=f"{name} (published)")


def _summ(cells: pd.DataFrame) -> pd.DataFrame:
    return cells[(cells["family"] == "summarization") & cells["nfe_budget"].notna()]


def tradeoff_plot(cells: pd.DataFrame, path: str | Path, colours: dict | None = None,
                  published: pd.DataFrame | None = None) -> Path | None:
    """The length / repetition / quality trade-off as one figure: a row per dataset, a panel per
    metric (ROUGE-1, words, adjacent repetition) against the NFE budget, a line per model;
    ``published`` rows (``dataset, model, nfe`` and metric columns) are drawn hollow."""
    df = _summ(cells)
    metrics = [m for m in TRADEOFF_METRICS if m in df.columns and df[m].notna().any()]
    if df.empty or not metrics:
        return None
    colours = colours or model_colours(cells)
    datasets = sorted(df["dataset"].unique())
    fig, axes = _grid(len(datasets) * len(metrics), ncols=len(metrics))
    for i, ds in enumerate(datasets):
        pub = published[published["dataset"] == ds] if published is not None else None
        for j, metric in enumerate(metrics):
            ax = axes[i * len(metrics) + j]
            nfe_lines(ax, df[df["dataset"] == ds], metric, colours)
            published_lines(ax, pub, metric, colours)
            _style(ax, f"{ds}: {LABELS[metric].split(' (')[0]}", LABELS["nfe_budget"], LABELS[metric])
    legend_below(fig, axes)
    return _save(fig, Path(path))


def quality_vs_length(cells: pd.DataFrame, path: str | Path, colours: dict | None = None, quality: str = "rouge1",
                      length: str = "words") -> Path | None:
    """ROUGE-1 against output words, one point per model and budget (labelled with the NFE)."""
    df = _summ(cells)
    if df.empty or quality not in df.columns or length not in df.columns:
        return None
    colours = colours or model_colours(cells)
    datasets = sorted(df["dataset"].unique())
    fig, axes = _grid(len(datasets))
    for ax, ds in zip(axes, datasets):
        sub = df[df["dataset"] == ds]
        nfe_lines(ax, sub.assign(_len=sub[length].astype(float)), quality, colours, x="_len")
        for line in ax.get_lines():
            line.set_linestyle(":")  # the order of the points is the budget's, not a trend along x
        for _, r in sub.iterrows():
            ax.annotate(str(int(r["nfe_budget"])), (float(r[length]), float(r[quality])), fontsize=6,
                        xytext=(2, 2), textcoords="offset points")
        if "ref_words" in sub.columns and sub["ref_words"].notna().any():
            ax.axvline(float(sub["ref_words"].mean()), color="grey", ls="--", lw=0.8, label="reference words")
        _style(ax, ds, LABELS.get(length, length), LABELS.get(quality, quality), log2x=False)
    legend_below(fig, axes)
    return _save(fig, Path(path))


def pareto_plot(cells: pd.DataFrame, path: str | Path, colours: dict | None = None, cost: str = "nfe",
                quality: str = "rouge1") -> Path | None:
    """All (model, budget) points per dataset at their measured NFE; the Pareto front as a step line."""
    df = _summ(cells)
    if df.empty or cost not in df.columns or quality not in df.columns or df[cost].isna().all():
        return None
    colours = colours or model_colours(cells)
    datasets = sorted(df["dataset"].unique())
    fig, axes = _grid(len(datasets))
    for ax, ds in zip(axes, datasets):
        sub = df[df["dataset"] == ds]
        front = pareto_front(sub, cost, quality)
        for m in sorted(sub["model"].unique()):
            pts = sub[sub["model"] == m]
            ax.scatter(pts[cost].astype(float), pts[quality].astype(float), label=m, color=colour_of(colours, m), s=22)
        on = sub[front].sort_values(cost)
        if not on.empty:
            ax.step(on[cost].astype(float), on[quality].astype(float), where="post", color="black", lw=1, label="Pareto front")
            ax.scatter(on[cost].astype(float), on[quality].astype(float), facecolors="none", edgecolors="black", s=70)
        _style(ax, ds, LABELS.get(cost, cost), LABELS.get(quality, quality))
    legend_below(fig, axes)
    return _save(fig, Path(path))


REPAIR_MARKERS = {10: "o", 30: "s", 50: "^"}


def _published_repair_points(ax, published: pd.DataFrame | None, kind: str, colours: dict) -> None:
    """The published fix / preserve figures of this corruption kind, hollow (their passages and model
    size are the publication's: the caption says so)."""
    fix = f"{kind}_fix_pct"
    if published is None or fix not in published.columns:
        return
    for _, r in published.iterrows():
        x, y = pd.to_numeric(r[fix], errors="coerce"), pd.to_numeric(r.get("preserve_pct"), errors="coerce")
        if pd.isna(x) or pd.isna(y):
            continue
        rate = int(round(100 * float(r["corruption_rate"])))
        ax.scatter(float(x), float(y), marker=REPAIR_MARKERS.get(rate, "D"), s=48, facecolors="none", linewidths=1.3,
                   edgecolors=colour_of(colours, r["model"]), label=f"{r['model']} (published)")


def repair_plot(cells: pd.DataFrame, path: str | Path, colours: dict | None = None,
                published: pd.DataFrame | None = None) -> Path | None:
    """Fix rate vs preserve rate: colour = model, marker = corruption rate, one panel per corruption
    kind and passage source; ``published`` (``published_repair.csv``) rows hollow in the panels of
    their corruption kind."""
    df = cells[cells["family"] == "repair"]
    if df.empty or "fix_rate" not in df.columns or "preserve_rate" not in df.columns:
        return None
    colours = colours or model_colours(cells)
    panels = sorted({(r["dataset"], r["corruption"]) for _, r in df.iterrows()})
    protocol = df["repair_protocol"] if "repair_protocol" in df.columns else pd.Series("published", index=df.index)
    # a variant is named in the legend, never shown unlabelled
    label = {i: m if p == "published" else f"{m} [variant {p or 'unrecorded'}]"
             for i, m, p in zip(df.index, df["model"], protocol)}
    fig, axes = _grid(len(panels))
    for ax, (ds, kind) in zip(axes, panels):
        sub = df[(df["dataset"] == ds) & (df["corruption"] == kind)]
        for i, r in sub.sort_values(["model", "corruption_rate"]).iterrows():
            rate = int(r["corruption_rate"])
            ax.scatter(float(r["fix_rate"]), float(r["preserve_rate"]), color=colour_of(colours, r["model"]),
                       marker=REPAIR_MARKERS.get(rate, "D"), s=40, label=label[i])
        _published_repair_points(ax, published, kind, colours)
        for rate in sorted(sub["corruption_rate"].dropna().astype(int).unique()):
            ax.scatter([], [], color="grey", marker=REPAIR_MARKERS.get(rate, "D"), label=f"{rate}% corrupted")
        ax.set_xlim(-2, 102)
        ax.set_ylim(-2, 102)
        _style(ax, f"{ds}, {kind} corruption", LABELS["fix_rate"], LABELS["preserve_rate"], log2x=False)
    legend_below(fig, axes)
    return _save(fig, Path(path))


# (file, one-line caption saying what to look for, function(cells, path, colours, published tables))
PLOTS = [
    ("tradeoff.png", "Length / repetition / quality trade-off against NFE: a better model climbs in ROUGE-1 "
     "without its words running away or its repetition rising.",
     lambda c, p, col, pub: tradeoff_plot(c, p, col)),
    ("rouge1_vs_words.png", "ROUGE-1 against output length (points labelled with the NFE budget): up is better; "
     "far right of the reference line means padding, not summarising.",
     lambda c, p, col, pub: quality_vs_length(c, p, col)),
    ("pareto.png", "Quality / compute Pareto front at the measured NFE: the circled points on the black step line "
     "are the ones no other model/budget beats on both ROUGE-1 and compute.",
     lambda c, p, col, pub: pareto_plot(c, p, col)),
    ("repair.png", "Repair, fix against preserve: top right is best (fixes corrupted tokens, keeps clean ones); "
     "hollow points are published 8B figures on WikiText-103, not these passages.",
     lambda c, p, col, pub: repair_plot(c, p, col, pub.get("published_repair"))),
]


def make_plots(cells: pd.DataFrame, out_dir: str | Path, colours: dict | None = None,
               published: dict[str, pd.DataFrame] | None = None) -> list[tuple[str, Path]]:
    """Every plot there is data for: ``[(caption, path)]`` in a fixed order."""
    published = published or {}
    colours = colours or model_colours(cells, published)
    out = []
    for name, caption, fn in PLOTS:
        path = fn(cells, Path(out_dir) / name, colours, published)
        if path is not None:
            out.append((caption, path))
    return out
