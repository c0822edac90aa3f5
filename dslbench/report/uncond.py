"""Unconditional generation (``dsl_uncond_<T>step`` tasks) in the report: MAUVE, GenPPL and token
entropy against the step budget T, measured cells beside published figures where a source gives
them, and one figure with a panel per metric.

Published figures come from ``baselines/published_uncond.csv`` (columns ``model, T, mauve,
genppl, entropy, source``) when it exists. None ships: the sources at hand to this project (the
DSL-LLaDA package's figures, the kuleshov-group/remdm README and scripts, IBM's soft-masking
``language/README.md``) give no unconditional OpenWebText numbers under this protocol (the mdlm
README's semi-autoregressive Gen. PPL is another one), and the section says so instead.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from dslbench.report.plots import _colors, _grid, _save
from dslbench.report.tables import MEASURED, PUBLISHED

SECTION = "Unconditional generation"
PUBLISHED_FILE = "published_uncond"
TASK = re.compile(r"^dsl_uncond_(?P<steps>\d+)step$")
COLUMNS = ["provenance", "model", "checkpoint", "T", "NFE", "MAUVE", "GenPPL", "entropy", "words", "Rep %", "samples", "source"]
# (cells column, table column, panel title)
PANELS = [("mauve", "MAUVE", "MAUVE (higher = closer to the references)"),
          ("genppl", "GenPPL", "GenPPL (token-pooled, evaluator LM)"),
          ("entropy", "entropy", "token entropy per sample (nats)")]
NO_PUBLISHED = ("No published figures are shown: none under this protocol were found in the sources available to "
                "this project (the DSL-LLaDA package's figures, the kuleshov-group/remdm README and scripts, IBM's "
                "soft-masking `language/README.md`); the kuleshov-group/mdlm README's one Gen. PPL (semi-autoregressive, "
                "2,048 tokens, no T) is another protocol. Add `baselines/published_uncond.csv` "
                "(columns model, T, mauve, genppl, entropy, source) to set published rows beside these.")


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def uncond_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """The ``dsl_uncond_*`` cells with their T (``steps``), ordered by T then model."""
    if cells.empty or "task" not in cells.columns:
        return cells.iloc[0:0].assign(steps=pd.Series(dtype=int))
    steps = cells["task"].astype(str).str.extract(TASK)["steps"]
    out = cells[steps.notna()].assign(steps=steps[steps.notna()].astype(int))
    return out.sort_values(["steps", "model"], kind="mergesort")


def beside_published(cells: pd.DataFrame, published: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    pub = published.get(PUBLISHED_FILE)
    if pub is not None:
        for _, r in pub.iterrows():
            rows.append({"provenance": PUBLISHED, "model": r["model"], "T": int(r["T"]), "NFE": None,
                         "MAUVE": _num(r.get("mauve")), "GenPPL": _num(r.get("genppl")),
                         "entropy": _num(r.get("entropy")), "source": r["source"]})
    for _, r in uncond_cells(cells).iterrows():
        rows.append({"provenance": MEASURED, "model": r["model"], "checkpoint": r.get("checkpoint"), "T": int(r["steps"]), "NFE": _num(r.get("nfe")),
                     "MAUVE": _num(r.get("mauve")), "GenPPL": _num(r.get("genppl")), "entropy": _num(r.get("entropy")),
                     "words": _num(r.get("words")), "Rep %": 100.0 * _num(r.get("rep")),
                     "samples": r.get("n_samples"), "source": f"this report ({r['task']})"})
    df = pd.DataFrame(rows, columns=COLUMNS)
    order = df["provenance"].map({PUBLISHED: 0}).fillna(1)
    return df.assign(_o=order).sort_values(["T", "_o"], kind="mergesort").drop(columns="_o").reset_index(drop=True)


def figure(table: pd.DataFrame, path: Path) -> Path | None:
    """MAUVE / GenPPL / entropy against T, one line per model (published: hollow, dashed)."""
    if table.empty:
        return None
    ckpt = table["checkpoint"].fillna("").astype(str)
    table = table.assign(label=table["model"].astype(str).where(ckpt == "", table["model"].astype(str) + " (" + ckpt + ")"))
    colors = _colors(sorted(table["label"].unique()))
    fig, axes = _grid(len(PANELS))
    for ax, (_, col, title) in zip(axes, PANELS):
        for (prov, model), line in table.groupby(["provenance", "label"], sort=True):
            line = line.sort_values("T")
            published = prov == PUBLISHED
            ax.plot(line["T"].astype(float), pd.to_numeric(line[col], errors="coerce"), marker="o",
                    ls="--" if published else "-", mfc="none" if published else None, color=colors[model],
                    label=f"{model} (published)" if published else model)
        ax.set_xscale("log", base=2)
        ax.set_title(title)
        ax.set_xlabel("T (sampling steps)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Unconditional generation vs T", y=1.03)
    return _save(fig, Path(path))


def section(cells: pd.DataFrame, published: dict[str, pd.DataFrame], plots_dir: str | Path) -> list[tuple]:
    """The report's unconditional section (nothing when there are neither runs nor published rows)."""
    has_runs = not uncond_cells(cells).empty
    if not has_runs and PUBLISHED_FILE not in published:
        return []
    table = beside_published(cells, published)
    b: list[tuple] = [("h", 2, SECTION)]
    b.append(("p", "N samples of L tokens from an empty prompt per cell (`dsl_uncond_<T>step`, T = the step budget; "
              "NFE = the denoiser calls measured per sample), scored as kuleshov-group/remdm does: MAUVE against "
              "the held-out references of `$DSLBENCH_DATA_DIR/owt_references.jsonl`, GenPPL = exp(total NLL / "
              "total scored tokens) under the evaluator named in each sample's record (`ppl_model`), entropy = the "
              "mean of each sample's token entropy; words and Rep % as in the open-ended tasks. Whole-set figures "
              "depend on N: compare cells of the same N (samples column)."))
    if not has_runs:
        b.append(("p", "No unconditional runs (tasks `dsl_uncond_*`) in the input: the published figures alone."))
    if PUBLISHED_FILE not in published:
        b.append(("p", NO_PUBLISHED))
    b.append(("table", table, None))
    path = figure(table, Path(plots_dir) / "uncond_vs_T.png")
    if path is not None:
        b.append(("img", "Unconditional generation: MAUVE, GenPPL and entropy vs T", path))
    return b


__all__ = ["SECTION", "NO_PUBLISHED", "beside_published", "figure", "section", "uncond_cells"]
