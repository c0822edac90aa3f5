"""``dslbench report``: lm-eval output directories -> leaderboard CSV, samples table, plots, report.

``build_report(run_dirs, out)`` writes into ``out`` (every file atomically):

==========================  ===============================================================
``leaderboard.csv``         one row per model x checkpoint x task (budget in the task name),
                            every metric; stable column order, 4 decimals, sorted
``samples.parquet``         one row per logged sample (or ``samples.csv``)
``paired.csv``              paired comparisons between models on the same documents
``pareto.csv``              the ROUGE-1 / measured-NFE Pareto front per dataset
``plots/*.png``             trade-off plots (see ``plots.PLOTS``; open-ended: ``open_ended.make_plots``)
``report.md``               the report; images referenced from ``plots/``
``report.html``             the same report, self-contained (images as data URIs)
==========================  ===============================================================

The report is written as a unit: every file goes into a staging folder inside ``out`` first and
is renamed into place only once all of them are written, so a failure (a full disk, a plot that
cannot be drawn) leaves the previous report as it was, never new CSVs beside an old report.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from dslbench.report import open_ended, tables, uncond
from dslbench.report.io import write_bytes_atomic, write_csv_atomic, write_parquet_atomic, write_text_atomic
from dslbench.report.load import ID_COLUMNS, TIMING_METRICS, Loaded, ReportWarning, load_runs
from dslbench.report.plots import make_plots
from dslbench.report.render import to_html, to_markdown
from dslbench.report.stats import paired_comparisons

STAGE_PREFIX = ".report-staging-"
PAIRED_METRICS = ("rouge1", "words", "adjacent_rep", "fix_rate", "preserve_rate") + open_ended.PAIRED_METRICS


@dataclass
class Report:
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    loaded: Loaded | None = None
    warnings: list[str] = field(default_factory=list)
    empty_cells: list[str] = field(default_factory=list)  # cells with more than half their outputs empty
    truncated_cells: list[str] = field(default_factory=list)  # cells with some prompts cut to fit max_length


def _baselines_default() -> Path:
    from dslbench.paths import baselines_dir

    return baselines_dir()


def build_report(
    run_dirs: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    *,
    strict: bool = False,
    headline_nfe: int = tables.HEADLINE_NFE,
    baselines: str | os.PathLike | None = None,
    samples_format: str = "parquet",
    n_boot: int = 2000,
    seed: int = 0,
    title: str = "dslbench report",
    leaderboard_path: str | os.PathLike | None = None,
    note: str = "",
) -> Report:
    """Load the runs and write every output; returns where they went (and any warnings)."""
    if samples_format not in ("parquet", "csv"):
        raise ValueError(f"samples_format={samples_format!r}: choose parquet or csv")
    run_dirs = [Path(p) for p in run_dirs]
    out = Path(out)
    loaded = load_runs(run_dirs, strict=strict)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_stages(out)
    stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-", dir=out))
    try:
        staged = _write_report(loaded, run_dirs, stage, headline_nfe=headline_nfe, baselines=baselines,
                               samples_format=samples_format, n_boot=n_boot, seed=seed, title=title, note=note)
        rep = Report(out=out, loaded=loaded, warnings=list(loaded.warnings))
        rep.empty_cells = tables.empty_cell_warnings(loaded.cells)
        rep.truncated_cells = tables.truncated_cell_warnings(loaded.cells)
        for msg in rep.empty_cells + rep.truncated_cells:
            rep.warnings.append(msg)
            warnings.warn(msg, ReportWarning, stacklevel=2)
        rep.files = _commit(staged, stage, out, Path(leaderboard_path) if leaderboard_path else None)
    except OSError as err:
        raise _unstaged(err, stage, out) from err
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return rep


def _unstaged(err: OSError, stage: Path, out: Path) -> OSError:
    """The error naming the report file (``out/...``) rather than its staging copy."""
    try:
        rel = Path(os.fsdecode(err.filename)).relative_to(stage)
    except (TypeError, ValueError):
        return err
    return type(err)(err.errno, err.strerror or str(err), str(out / rel))


def _remove_stale_stages(out: Path) -> None:
    """Staging folders left by a killed report (their process is gone)."""
    for old in out.glob(f"{STAGE_PREFIX}*"):
        pid = old.name[len(STAGE_PREFIX):].partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _replace(src: Path, dst: Path) -> None:
    """Rename ``src`` over ``dst`` (a folder replaces the old folder); across file systems, copy."""
    if src.is_dir():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        if dst.exists():
            os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.replace(src, dst)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        write_bytes_atomic(src.read_bytes(), dst)


def _commit(staged: dict[str, Path], stage: Path, out: Path, leaderboard_path: Path | None) -> dict[str, Path]:
    """Move the staged report into ``out``: plots first, the pages last (renames only)."""
    final = {}
    for key, path in staged.items():
        final[key] = leaderboard_path if key == "leaderboard" and leaderboard_path else out / path.relative_to(stage)
    plots = stage / "plots"
    if plots.is_dir():
        _replace(plots, out / "plots")
    elif (out / "plots").is_dir():
        shutil.rmtree(out / "plots")  # the new report has no plots: the old ones are not part of it
    pages = ("report.md", "report.html")
    for key in sorted(staged, key=lambda k: k in pages):
        if not key.startswith("plot:"):
            final[key].parent.mkdir(parents=True, exist_ok=True)
            _replace(staged[key], final[key])
    return final


def _write_report(loaded: Loaded, run_dirs: list[Path], out: Path, *, headline_nfe, baselines, samples_format,
                  n_boot, seed, title, note) -> dict[str, Path]:
    """Every file of the report, written under ``out`` (the staging folder)."""
    cells, samples = loaded.cells, loaded.samples
    files: dict[str, Path] = {}

    # Wall-clock figures change from run to run: they live in timings.csv, so that a regenerated
    # leaderboard.csv is byte-identical for the same seed on the same machine.
    timing = [c for c in cells.columns if c in TIMING_METRICS]
    files["leaderboard"] = write_csv_atomic(cells.drop(columns=timing), out / "leaderboard.csv")
    files["timings"] = write_csv_atomic(cells[[c for c in ID_COLUMNS if c in cells.columns] + timing], out / "timings.csv")
    if samples_format == "parquet":
        files["samples"] = write_parquet_atomic(samples, out / "samples.parquet")
    else:
        files["samples"] = write_csv_atomic(samples, out / "samples.csv", float_format="%.6g")
    paired = paired_comparisons(samples, PAIRED_METRICS, n_boot=n_boot, seed=seed)
    files["paired"] = write_csv_atomic(paired, out / "paired.csv", float_format="%.6g")
    pareto = tables.pareto_table(cells)
    files["pareto"] = write_csv_atomic(pareto, out / "pareto.csv")
    published = tables.load_published(baselines if baselines is not None else _baselines_default())
    plots = make_plots(cells, out / "plots")
    oe_plots = open_ended.make_plots(cells, published, out / "plots")
    for caption, path in plots + oe_plots:
        files[f"plot:{path.name}"] = path

    blocks = report_blocks(cells, samples, paired, pareto, plots, published, loaded, run_dirs,
                           headline_nfe=headline_nfe, title=title, note=note, n_boot=n_boot, seed=seed,
                           open_ended_blocks=open_ended.section(cells, paired, published, oe_plots)
                           + uncond.section(cells, published, out / "plots"))
    files["report.md"] = write_text_atomic(to_markdown(blocks, out), out / "report.md")
    files["report.html"] = write_text_atomic(to_html(blocks, title), out / "report.html")
    return files


def _legend() -> str:
    return ("**Bold** = best per dataset: highest ROUGE, lowest repetition / degenerate / short-output "
            "rate / empty %, length ratio closest to 1; words and measured NFE have no better direction. "
            "Adjacent rep and the rates are means of per-sample values over all outputs, empty ones included "
            "(an empty output counts 0 repetition): read them with the empty % column. "
            "Truncated % is the share of prompts cut in the middle to fit the backend's max_length. ")


def report_blocks(cells, samples, paired, pareto, plots, published, loaded, run_dirs, *, headline_nfe,
                  title, note, n_boot, seed, open_ended_blocks: list[tuple] = ()) -> list[tuple]:
    b: list[tuple] = [("h", 1, title)]
    models = sorted(cells["model"].unique())
    ckpts = sorted(c for c in cells["checkpoint"].unique() if c)
    where = ", ".join(f"`{p}`" for p in run_dirs) if len(run_dirs) <= 4 else f"{len(run_dirs)} directories"
    intro = (f"{len(loaded.runs)} lm-eval run(s) from {where}: "
             f"{len(models)} model(s) ({', '.join(f'`{m}`' for m in models)}), checkpoint(s) "
             f"{', '.join(f'`{c}`' for c in ckpts) or '-'}, {cells['task'].nunique()} task(s), "
             f"{len(samples)} logged samples. NFE is measured at the denoiser, per sample.")
    b.append(("p", intro))
    if note:
        b.append(("p", note))
    if loaded.warnings:
        b.append(("p", "**Warning: partial input.** This report covers what was readable:\n"
                  + "\n".join(f"- {w}" for w in loaded.warnings)))
    empty = tables.empty_cell_warnings(cells)
    if empty:
        b.append(("p", "**Warning: mostly empty outputs.** More than half of these cells' outputs are empty:\n"
                  + "\n".join(f"- {w}" for w in empty)))
    truncated = tables.truncated_cell_warnings(cells)
    if truncated:
        b.append(("p", "**Warning: truncated prompts.** These cells cut some prompts in the middle to fit "
                  "`max_length` (see `prompt_tokens_dropped` in their samples):\n"
                  + "\n".join(f"- {w}" for w in truncated)))

    # headline
    values, best, budget = tables.headline_table(cells, headline_nfe)
    b.append(("h", 2, f"Headline: summarization at NFE {budget if budget is not None else headline_nfe}"))
    if budget is None:
        b.append(("p", "No summarization results in the input."))
    else:
        if budget != headline_nfe:
            b.append(("p", f"**Warning:** no run at NFE {headline_nfe}; the closest budget run, {budget}, is shown."))
        b.append(("p", _legend()))
        b.append(("table", values, best))

    # trade-off plots
    summ_plots = [(c, p) for c, p in plots if p.name != "repair.png"]
    if summ_plots:
        b.append(("h", 2, "Length / repetition / ROUGE trade-off"))
        for caption, path in summ_plots:
            b.append(("img", caption, path))
        b.append(("h", 3, "Pareto front (ROUGE-1 vs measured NFE)"))
        b.append(("p", "Points no other model/budget beats on both quality and compute."))
        b.append(("table", pareto, None))

    # repair
    rvalues, rbest = tables.repair_table(cells)
    if not rvalues.empty:
        b.append(("h", 2, "Selective-corruption repair"))
        b.append(("p", "Fix = % of corrupted positions restored; preserve = % of clean positions kept; "
                  "means over passages of each passage's rate, as the published table is computed "
                  "(*pooled* = ratio of sums over all positions). The repair protocol says what produced a "
                  "row: *published* = one forward pass on the corrupted token ids and an argmax at every "
                  "position, the protocol of the published table; any other is a dslbench variant. "
                  "**Bold** = best per corruption kind and rate."))
        b.append(("table", rvalues.rename(columns={"corruption_rate": "corruption %"}), rbest))
        for caption, path in plots:
            if path.name == "repair.png":
                b.append(("img", caption, path))

    b += list(open_ended_blocks)

    # paired comparisons
    b.append(("h", 2, "Paired comparisons (same documents)"))
    if paired.empty:
        b.append(("p", "Needs at least two models with logged samples on the same task."))
    else:
        b.append(("p", f"Mean difference A - B over the documents both models were scored on, a paired "
                  f"bootstrap 95% interval ({n_boot} resamples, seed {seed}), the exact sign test and the "
                  "Wilcoxon signed-rank test (normal approximation), each p also Holm-adjusted over all "
                  f"{len(paired)} comparisons of `paired.csv` (one family per test: the report runs them "
                  "all at once). The verdict reads the interval: a gap "
                  "whose interval contains 0 is not distinguishable from noise at this sample size. "
                  "Shown: ROUGE-1 / words / adjacent repetition at the headline budget and repair rates "
                  f"(open-ended generation: in *{open_ended.SECTION}*); every budget is in `paired.csv`."))
        shown = paired[((paired["family"] == "summarization") & (paired["nfe_budget"] == budget)
                        & paired["metric"].isin(["rouge1", "words", "adjacent_rep"]))
                       | (paired["family"] == "repair")]
        b.append(("table", tables.paired_view(shown), None))

    # published
    b.append(("h", 2, "Published figures (published, not reproduced)"))
    if not published:
        b.append(("p", "No `baselines/published_*.csv` found."))
    else:
        b.append(("p", "Rows marked **published, not reproduced** are copied from the published material "
                  "(`baselines/`, each with its source); dslbench did not run them. Empty cells are numbers "
                  "the publication does not give. Rows marked *measured here* come from the runs above."))
        rb = tables.repair_beside_published(cells, published)
        b.append(("h", 3, "Corruption repair"))
        b.append(("table", rb, None))
        if "published_open_ended_generation" in published:
            b.append(("h", 3, "Open-ended generation"))
            b.append(("p", f"Beside measured runs of the same task and NFE: see *{open_ended.SECTION}*."))
        if "published_summarization_headline" in published:
            b.append(("h", 3, "Summarization headline (published, not reproduced)"))
            b.append(("table", published["published_summarization_headline"], None))
        for name, df in published.items():
            if name not in ("published_repair", "published_open_ended_generation", "published_summarization_headline"):
                b.append(("h", 3, f"{name} (published, not reproduced)"))
                b.append(("table", df, None))

    b.append(("h", 2, "Files"))
    b.append(("p", "`leaderboard.csv` (every metric per model x checkpoint x task), `samples.parquet` / "
              "`samples.csv` (per-sample rows), `paired.csv`, `pareto.csv`, `plots/*.png`."))
    return b
