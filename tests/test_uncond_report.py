"""Unconditional generation (``dsl_uncond_<T>step``) in ``dslbench report``: the section's table of
MAUVE / GenPPL / entropy against T, published rows beside measured ones only from a source file,
the plain statement that no published figure is at hand, and the figure."""

from __future__ import annotations

import math

import pandas as pd

from dslbench.report import uncond
from dslbench.report.build import build_report
from dslbench.report.tables import MEASURED, PUBLISHED
from tests.test_report import PNG_MAGIC, write_fake_run


def _samples(nfe: int, mauve: float, entropy: float) -> list[dict]:
    return [{"genppl": 50.0 + i, "entropy": entropy, "words": 10.0 + i, "rep": 0.1, "mauve": mauve, "nfe": float(nfe),
             "_key": f"sample {i}"} for i in range(3)]


def _runs(tmp_path):
    for model, base in (("mdm", 0.2), ("dsl", 0.5)):
        per_task = {f"dsl_uncond_{t}step": _samples(t, base + t / 4096, 4.0 + t / 1024) for t in (128, 1024)}
        write_fake_run(tmp_path / "runs", "mdm_llada", f"pretrained=/ckpt/{model}", per_task, model_dir=model)
    return tmp_path / "runs"


def test_section_in_the_built_report_says_no_published_figure_is_at_hand(tmp_path):
    build_report([_runs(tmp_path)], tmp_path / "report", baselines=tmp_path / "no-baselines", n_boot=10)
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"## {uncond.SECTION}" in text and uncond.NO_PUBLISHED in text
    assert (tmp_path / "report" / "plots" / "uncond_vs_T.png").read_bytes().startswith(PNG_MAGIC)


def test_table_rows_are_the_measured_cells_and_published_rows_carry_their_source():
    cells = pd.DataFrame([
        {"task": "dsl_uncond_128step", "model": "m", "nfe": 128.0, "mauve": 0.3, "genppl": 60.0, "entropy": 5.1,
         "words": 100.0, "rep": 0.02, "n_samples": 3},
        {"task": "dsl_gen_8step", "model": "m", "nfe": 8.0, "genppl": 9.0},  # another family: not here
    ])
    published = {uncond.PUBLISHED_FILE: pd.DataFrame([{"model": "X", "T": "128", "mauve": "0.4", "genppl": "",
                                                        "entropy": "5.6", "source": "a paper, Table 1"}])}
    table = uncond.beside_published(cells, published)
    assert list(table["provenance"]) == [PUBLISHED, MEASURED]
    pub, ours = table.iloc[0], table.iloc[1]
    assert pub["source"] == "a paper, Table 1" and math.isnan(pub["GenPPL"]) and pub["MAUVE"] == 0.4
    assert (ours["T"], ours["MAUVE"], ours["GenPPL"], ours["entropy"], ours["Rep %"]) == (128, 0.3, 60.0, 5.1, 2.0)


def test_no_runs_and_no_published_rows_is_no_section(tmp_path):
    assert uncond.section(pd.DataFrame([{"task": "dsl_gen_8step", "model": "m"}]), {}, tmp_path) == []
