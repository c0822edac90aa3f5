"""Open-ended generation (``dsl_gen_*`` tasks) in the report: the published table beside measured
cells of the same task and NFE, MAUVE on the prefix sets, the published figure's axes, paired tests.

The published open-ended figures (``baselines/published_open_ended_generation.csv``) are the
released prompts (``dsl_gen_<N>step``) only: they stand beside measured cells of that task and
that NFE, never beside another task.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from dslbench.report.open_ended_plot import DATASETS, published_key, vs_nfe_figure
from dslbench.report.tables import MEASURED, PUBLISHED, paired_view

SECTION = "Open-ended generation"
ANCHOR = "open-ended"  # the section's id in the report's table of contents
PUBLISHED_FILE = "published_open_ended_generation"
PUBLISHED_EVALUATOR = "gpt2-large"
# per-sample metrics paired between models (words is already among the report's paired metrics)
PAIRED_METRICS = ("genppl_nll", "rep")
PAIRED_SHOWN = ("genppl_nll", "words", "rep")
MISSING = "missing"  # a GenPPL with no non-empty output to score: not a number
COLUMNS = ["provenance", "model", "NFE", "GenPPL", "Rep %", "words", "n_valid", "empty %", "source"]
MAUVE_COLUMNS = ["dataset", "model", "NFE", "MAUVE", "GenPPL", "Rep %", "words", "n_valid", "empty %"]


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _open_ended(cells: pd.DataFrame, datasets: tuple[str, ...]) -> pd.DataFrame:
    oe = cells[(cells["family"] == "open_ended") & cells["dataset"].isin(datasets)]
    return oe.sort_values(["dataset", "nfe_budget", "model", "checkpoint"], kind="mergesort")


def _measured(r: pd.Series) -> dict:
    """One open-ended cell in the table's units (Rep and empty in %; GenPPL ``missing`` when undefined)."""
    genppl, n_valid = _num(r.get("genppl")), _num(r.get("n_valid"))
    none_valid = n_valid == 0  # words / Rep are over non-empty outputs: undefined, not 0
    return {"dataset": r["dataset"], "model": r["model"], "NFE": int(r["nfe_budget"]),
            "MAUVE": _num(r.get("mauve")), "GenPPL": genppl if math.isfinite(genppl) else MISSING,
            "Rep %": math.nan if none_valid else 100.0 * _num(r.get("rep")),
            "words": math.nan if none_valid else _num(r.get("words")), "n_valid": n_valid,
            "empty %": 100.0 * _num(r.get("empty"))}


def evaluators(cells: pd.DataFrame) -> list[str]:
    """The GenPPL evaluators named by the open-ended cells' records."""
    oe = cells[cells["family"] == "open_ended"]
    if "ppl_model" not in oe.columns:
        return []
    return sorted({n for v in oe["ppl_model"] for n in str(v).split("|") if n})


def _is_published_evaluator(name: str) -> bool:
    return name.rstrip("/").split("/")[-1] == PUBLISHED_EVALUATOR


def beside_published(cells: pd.DataFrame, published: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Published rows and measured ``dsl_gen_<N>step`` cells, by NFE (published first at each NFE)."""
    rows = []
    pub = published.get(PUBLISHED_FILE)
    if pub is not None:
        for _, r in pub.iterrows():
            rows.append({"provenance": PUBLISHED, "model": r["model"], "NFE": int(r["nfe"]), "GenPPL": r.get("genppl"),
                         "Rep %": r.get("rep_pct"), "words": r.get("words"), "n_valid": None, "empty %": None,
                         "source": r["source"]})
    for _, r in _open_ended(cells, ("prompts",)).iterrows():
        rows.append({**_measured(r), "provenance": MEASURED,
                     "source": f"this report ({r['task']}, GenPPL under {r.get('ppl_model') or 'an unrecorded evaluator'})"})
    df = pd.DataFrame(rows, columns=COLUMNS)
    order = df["provenance"].map({PUBLISHED: 0}).fillna(1)
    return df.assign(_o=order).sort_values(["NFE", "_o"], kind="mergesort").drop(columns="_o").reset_index(drop=True)


def mauve_table(cells: pd.DataFrame) -> pd.DataFrame:
    """MAUVE beside GenPPL / Rep / words per prefix set, NFE and model (measured only)."""
    rows = [_measured(r) for _, r in _open_ended(cells, ("prefix", "synth")).iterrows()]
    return pd.DataFrame(rows, columns=MAUVE_COLUMNS)


def aggregation_note(cells: pd.DataFrame) -> str:
    names = evaluators(cells)
    under = ", ".join(f"`{n}`" for n in names) if names else "an evaluator the records do not name"
    text = ("Aggregation (as published): words and GenPPL over the non-empty outputs; Rep % pooled over "
            "adjacent word pairs (repeated adjacent words / all adjacent pairs of the non-empty outputs, x 100); "
            f"GenPPL = exp(mean per-text NLL) under {under}. n_valid = non-empty outputs; empty % = share of "
            f"empty outputs. GenPPL *{MISSING}*: no non-empty output to score (not a number); words and Rep % are then blank. Rows marked "
            f"**{PUBLISHED}** are copied from the publication (source column); empty cells are numbers it does not give.")
    other = [n for n in names if not _is_published_evaluator(n)]
    if other or not names:
        text += (f"\n\n**Warning:** GenPPL here is under {under}, not `{PUBLISHED_EVALUATOR}` as published: "
                 "these GenPPL figures are not comparable with the published ones (words and Rep % are).")
    return text


def make_plots(cells: pd.DataFrame, published: dict[str, pd.DataFrame], out_dir: str | Path,
               colours: dict | None = None) -> list[tuple[str, Path]]:
    """One figure per open-ended dataset present: ``[(caption, path)]``."""
    out = []
    for ds in DATASETS:
        pub = published.get(PUBLISHED_FILE) if ds == "prompts" else None
        path = vs_nfe_figure(_open_ended(cells, (ds,)), pub, ds, Path(out_dir) / f"open_ended_{ds}_vs_nfe.png", colours)
        if path is not None:
            hollow = "; hollow dashed lines are published" if pub is not None else ""
            out.append((f"Open-ended generation ({ds}) against NFE: look for GenPPL falling without Rep % rising "
                        f"or words collapsing{hollow}.", path))
    return out


def section(cells: pd.DataFrame, paired: pd.DataFrame, published: dict[str, pd.DataFrame],
            figures: list[tuple[str, Path]]) -> list[tuple]:
    """The report's open-ended section (a line saying so when there are neither runs nor published rows)."""
    has_runs = (cells["family"] == "open_ended").any()
    b: list[tuple] = [("h", 2, SECTION, ANCHOR)]
    if not has_runs and PUBLISHED_FILE not in published:
        return b + [("p", "No open-ended runs (tasks `dsl_gen_*`) in the input and no published open-ended figures.")]
    if not has_runs:
        b.append(("p", "No open-ended runs (tasks `dsl_gen_*`) in the input: the published figures alone."))
    b.append(("h", 3, "Released prompts (`dsl_gen_<N>step`): published beside measured"))
    b.append(("p", aggregation_note(cells)))
    b.append(("table", beside_published(cells, published), None))
    mt = mauve_table(cells)
    if not mt.empty:
        b.append(("h", 3, "WikiText / synthetic prefixes: MAUVE"))
        b.append(("p", "MAUVE (0-1, higher = closer to the references' distribution) of each cell's generations "
                  "against the prefixes' continuations, a whole-set figure; GenPPL / Rep % / words as above. "
                  "No published figures for these sets."))
        b.append(("table", mt, None))
    if figures:
        b.append(("h", 3, "Words, Rep % and GenPPL vs NFE"))
        b.append(("p", "One line per model; solid markers are measured here, hollow markers (dashed) are "
                  f"{PUBLISHED} (released prompts only). A measured model takes, on every plot of this report, the "
                  "colour of the published model of the same name (ignoring case and punctuation, so `LLaDA_EOS_Block` is "
                  "`LLaDA+EOS+Block`); a measured name with both DSL and SDE in it (`DSL-LLaDA-SDE`, its "
                  "published-accounting row) takes the colour of the published `DSL-SDE`, line styles "
                  "telling them apart."))
        b.append(("figures", list(figures)))
    shown = paired[(paired["family"] == "open_ended") & paired["metric"].isin(PAIRED_SHOWN)] if not paired.empty else paired
    if has_runs and not shown.empty:
        b.append(("h", 3, "Paired comparisons (open-ended, same documents)"))
        b.append(("p", "As in *Paired comparisons*: per document, over the documents both models have a value for. "
                  "`genppl_nll` = the text's mean token NLL under the evaluator (lower = more fluent to it; "
                  "GenPPL is exp of its mean), `words` and `rep` (the output's adjacent-repeat rate) over "
                  "documents where both outputs are non-empty. Holm over every comparison of `paired.csv`."))
        b.append(("table", paired_view(shown), None))
    return b


__all__ = ["SECTION", "PAIRED_METRICS", "beside_published", "mauve_table", "make_plots", "section", "published_key"]
