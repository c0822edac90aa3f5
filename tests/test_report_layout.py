"""The report page's layout, read from its HTML (no pixels): the table of contents names every
section in a fixed order and links to it, long tables are sortable and filterable, the
configuration sits collapsed in <details>, figures in the grid; the same page from
``dslbench report`` and ``dslbench leaderboard`` (the demo's: tests/test_demo_regress.py)."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from dslbench.cli import main, run_leaderboard
from dslbench.report import uncond
from dslbench.report.build import SECTIONS, build_report
from dslbench.report.render import FILTER_ROWS
from tests.test_leaderboard_runner import StubEvaluate, _cfg
from tests.test_report import summ_samples, write_fake_run


class _Page(HTMLParser):
    """What the layout tests look at: contents links, sections (with their first heading), tables
    (classes, rows, a filter box before them), <details> and figures in grids."""

    def __init__(self, text: str):
        super().__init__()
        self.toc: list[str] = []
        self.sections: list[dict] = []
        self.tables: list[dict] = []
        self.details: list[dict] = []
        self.grid_figures = 0
        self.scripts = 0
        self._stack: list[str] = []
        self._in = {"nav": False, "details": False, "grid": 0, "intro": False}
        self._pending_filter = False
        self.first_p = None
        self._text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag == "nav" and "toc" in cls:
            self._in["nav"] = True
        elif tag == "a" and self._in["nav"]:
            self.toc.append(a["href"])
        elif tag == "section":
            self.sections.append({"id": a.get("id"), "h2": None, "tables": [], "details": []})
        elif tag == "h2" and self.sections:
            self._text = []
        elif tag == "input" and "filter" in cls:
            self._pending_filter = True
        elif tag == "table":
            t = {"classes": cls, "rows": 0, "filter": self._pending_filter}
            self._pending_filter = False
            self.tables.append(t)
            if self.sections:
                self.sections[-1]["tables"].append(t)
        elif tag == "tr" and self.tables and "tbody" in self._stack:
            self.tables[-1]["rows"] += 1
        elif tag == "details":
            d = {"open": "open" in a, "text": ""}
            self.details.append(d)
            if self.sections:
                self.sections[-1]["details"].append(d)
            self._in["details"] = True
        elif tag == "div" and "grid" in cls:
            self._in["grid"] += 1
        elif tag == "figure" and self._in["grid"]:
            self.grid_figures += 1
        elif tag == "script":
            self.scripts += 1
        elif tag == "p" and self.first_p is None:
            self._in["intro"] = True
            self._text = []
        self._stack.append(tag)

    def handle_endtag(self, tag):
        if tag == "nav":
            self._in["nav"] = False
        elif tag == "h2" and self.sections and self.sections[-1]["h2"] is None:
            self.sections[-1]["h2"] = "".join(self._text)
        elif tag == "details":
            self._in["details"] = False
        elif tag == "div" and self._in["grid"] and self._stack.count("div") == 1:
            self._in["grid"] -= 1
        elif tag == "p" and self._in["intro"]:
            self.first_p = "".join(self._text)
            self._in["intro"] = False
        while self._stack and self._stack.pop() != tag:
            pass

    def handle_data(self, data):
        self._text.append(data)
        if self._in["details"] and self.details and "pre" in self._stack:
            self.details[-1]["text"] += data


def assert_report_layout(html: str) -> _Page:
    """The layout every report page has, whatever command wrote it."""
    page = _Page(html)
    anchors = list(SECTIONS)
    if any(s["id"] == uncond.ANCHOR for s in page.sections):  # only where there are unconditional cells
        anchors.insert(anchors.index("open-ended") + 1, uncond.ANCHOR)
    assert page.toc == [f"#{a}" for a in anchors], page.toc
    assert [s["id"] for s in page.sections] == anchors
    for s in page.sections:
        assert s["h2"], f"section {s['id']} has no heading"
        if SECTIONS.get(s["id"]):
            assert s["h2"] == SECTIONS[s["id"]]
    for t in page.tables:
        assert ("sortable" in t["classes"]) == (t["rows"] > 1), t
        assert t["filter"] == (t["rows"] > FILTER_ROWS), t
    config = page.sections[-1]
    assert len(config["details"]) == 1 and not config["details"][0]["open"]
    json.loads(config["details"][0]["text"])  # the configuration, whole, as JSON
    assert "{" not in (page.first_p or ""), "no raw configuration in the opening paragraph"
    assert page.scripts == 1
    return page


@pytest.fixture()
def many_runs(tmp_path):
    """Three backends, six documents, four budgets: a paired table (3 pairs x 3 metrics) longer than
    the filter threshold."""
    dirs = []
    for k, backend in enumerate(("dsl_llada", "mdm_llada", "softmask_llada")):
        tasks = {f"dsl_summ_xsum_{nfe}step": summ_samples([1.0 + k + i + nfe / 8 for i in range(6)]) for nfe in (4, 8, 16, 32)}
        write_fake_run(tmp_path / backend, backend, {"pretrained": f"/ckpt/{backend}"}, tasks)
        dirs.append(tmp_path / backend)
    return dirs


def test_report_page_layout(many_runs, tmp_path):
    build_report(many_runs, tmp_path / "r", n_boot=20, config={"demo": {"seed": 3, "budgets": [4, 8]}})
    page = assert_report_layout((tmp_path / "r" / "report.html").read_text())
    by_id = {s["id"]: s for s in page.sections}
    assert json.loads(by_id["configuration"]["details"][0]["text"])["runs"] == {"demo": {"seed": 3, "budgets": [4, 8]}}
    paired = by_id["paired"]["tables"][0]
    assert paired["rows"] > FILTER_ROWS and paired["filter"] and "sortable" in paired["classes"]
    assert page.grid_figures >= 3  # trade-off, ROUGE-1 vs words, Pareto
    md = (tmp_path / "r" / "report.md").read_text()
    assert all(f'<a id="{a}"></a>' in md and f"(#{a})" in md for a in SECTIONS)
    assert "<details><summary>Configuration (JSON)</summary>" in md


def test_the_same_page_from_the_cli_and_the_leaderboard(many_runs, tmp_path):
    assert main(["report", *map(str, many_runs), "--out", str(tmp_path / "cli"), "--n-boot", "20"]) == 0
    assert_report_layout((tmp_path / "cli" / "report.html").read_text())
    out = tmp_path / "lb"
    run_leaderboard(_cfg(tmp_path), out=out, evaluate=StubEvaluate(), log=lambda s: None, n_boot=20)
    page = assert_report_layout((out / "report.html").read_text())
    repair = {s["id"]: s for s in page.sections}["repair"]
    assert repair["tables"], "the leaderboard's repair cells are in the repair section"


def test_one_colour_per_model_on_every_plot(tmp_path, monkeypatch):
    """The trade-off, Pareto, repair and open-ended figures draw a model in the one colour of the
    report's map (a measured row of a published model in that model's colour), legends below."""
    import matplotlib.colors as mcolors
    import pandas as pd

    from dslbench.report import open_ended_plot, plots
    from dslbench.report.palette import colour_of, model_colours

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    monkeypatch.setattr(open_ended_plot, "_save", lambda fig, path: figures.append(fig) or path)
    summ = pd.DataFrame([{"family": "summarization", "dataset": ds, "model": m, "nfe_budget": n, "nfe": n,
                          "rouge1": 1.0 + n + k, "words": 5.0 + k, "adjacent_rep": 0.1 * k}
                         for k, m in enumerate(["LLaDA", "Soft-mask", "DSL-LLaDA-SDE"]) for ds in ("xsum", "cnndm")
                         for n in (4, 16)])
    rep = pd.DataFrame([{"family": "repair", "dataset": "synth", "corruption": "random", "corruption_rate": 10,
                         "model": m, "fix_rate": 10.0 * k, "preserve_rate": 90.0, "repair_protocol": "published"}
                        for k, m in enumerate(["Soft-mask", "LLaDA"])])
    oe = pd.DataFrame([{"family": "open_ended", "dataset": "prompts", "model": "DSL-LLaDA-SDE", "nfe_budget": n,
                        "words": 10.0, "rep": 0.1, "genppl": 5.0, "n_valid": 4} for n in (8, 16)])
    published = {"published_repair": pd.DataFrame([{"model": "DSL beta=2", "corruption_rate": "0.1",
                                                    "random_fix_pct": "64.8", "preserve_pct": "99.0"}]),
                 "published_open_ended_generation": pd.DataFrame([{"model": "DSL-SDE", "nfe": "8", "words": "174",
                                                                   "rep_pct": "8.3", "genppl": "12.9"}])}
    cells = pd.concat([summ, rep, oe], ignore_index=True)
    colours = model_colours(cells, published)
    assert list(colours) == ["DSL-SDE", "LLaDA", "Soft-mask", "DSL beta=2"]  # measured first, then published only
    assert len(set(colours.values())) == len(colours)
    plots.make_plots(cells, tmp_path, colours, published)
    open_ended_plot.vs_nfe_figure(oe, published["published_open_ended_generation"], "prompts", tmp_path / "x.png", colours)
    assert len(figures) == 5  # trade-off, ROUGE-1 vs words, Pareto, repair, open-ended
    seen = set()
    for fig in figures:
        assert fig.legends and all(ax.get_legend() is None for ax in fig.axes)  # one legend, outside the panels
        for ax in fig.axes:
            for artist in list(ax.get_lines()) + list(ax.collections):
                label = artist.get_label().removesuffix(" (published)")
                if label.startswith("_") or label in ("Pareto front", "reference words") or label.endswith("corrupted"):
                    continue
                drawn = artist.get_color() if hasattr(artist, "get_color") and not hasattr(artist, "get_offsets") \
                    else (artist.get_facecolor() if len(artist.get_facecolor()) and artist.get_facecolor()[0][3] > 0
                          else artist.get_edgecolor())[0]
                assert mcolors.to_hex(drawn) == colour_of(colours, label), (label, drawn)
                seen.add(label)
    assert {"LLaDA", "Soft-mask", "DSL-LLaDA-SDE", "DSL-SDE", "DSL beta=2"} <= seen
