"""The report in a real headless Chromium (Playwright driving the system browser): no console
errors, nothing requested from anywhere, every table-of-contents link lands on a visible section,
every image decoded, a click on a sortable header reorders the rows, the filter hides rows, and the
print layout drops the contents column.

Skips with the reason when Playwright or Chromium is missing here; CI sets
``DSLBENCH_REQUIRE_BROWSER=1``, which turns that skip into a failure."""

from __future__ import annotations

import os
import random

import pytest

from dslbench.report import browser
from dslbench.report.build import build_report
from tests.test_open_ended_report import write_oe_run
from tests.test_report import summ_samples, write_fake_run

WHY = browser.missing()
if WHY and os.environ.get("DSLBENCH_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"DSLBENCH_REQUIRE_BROWSER=1 but {WHY}")
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"no headless browser: {WHY}")


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    """Three summarization backends on two datasets and four budgets, two open-ended models."""
    root = tmp_path_factory.mktemp("browser")
    rng = random.Random(0)
    dirs = []
    for k, (name, backend) in enumerate([("dsl", "dsl_llada"), ("base", "mdm_llada"), ("soft", "softmask_llada")]):
        tasks = {f"dsl_summ_{ds}_{nfe}step": summ_samples([rng.uniform(0, 10 + nfe / 4 + 3 * k) for _ in range(6)],
                                                          [rng.uniform(5, 10 + nfe + 5 * k) for _ in range(6)])
                 for ds in ("xsum", "cnndm") for nfe in (4, 8, 16, 32)}
        write_fake_run(root / name, backend, {"pretrained": f"/ckpt/{name}"}, tasks)
        dirs.append(root / name)
    for name in ("LLaDA", "DSL-LLaDA-SDE"):
        write_oe_run(root / "oe", name, {f"dsl_gen_{n}step": ["a b c d", "the the cat", "x y z w", "q"] for n in (8, 16)})
    dirs.append(root / "oe")
    build_report(dirs, root / "out", n_boot=20, config={"demo": {"seed": 1}})
    return root / "out" / "report.html"


def test_the_report_in_a_headless_browser(report_html):
    with browser.open_page(report_html, {"width": 1280, "height": 800}) as (page, errors, requests):
        # every image decoded (a broken data: URI has naturalWidth 0)
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        assert widths and all(w > 0 for w in widths), widths

        # every contents link points at a section that exists and is shown once reached
        links = page.eval_on_selector_all("nav.toc a", "as => as.map(a => a.getAttribute('href'))")
        assert len(links) == 9 and all(h.startswith("#") for h in links)
        for href in links:
            page.click(f'nav.toc a[href="{href}"]')
            box = page.eval_on_selector(href, "s => {const r = s.getBoundingClientRect();"
                                              " return [r.top, r.height, getComputedStyle(s).display]}")
            assert box[2] != "none" and box[1] > 0, href
            assert -2 <= box[0] <= 20 or page.evaluate("window.innerHeight + window.scrollY >= document.body.scrollHeight - 2"), \
                f"{href}: the section starts at {box[0]} px, not at the top of the window"

        # sorting: the paired table by its 'A - B' column, up then down
        table = "#paired table.sortable"
        col = page.eval_on_selector_all(f"{table} th", "ths => ths.map(t => t.textContent)").index("A - B")
        before = _column(page, table, col)
        page.click(f"{table} th:nth-child({col + 1})")
        up = _column(page, table, col)
        assert up == sorted(before) and up != before
        page.click(f"{table} th:nth-child({col + 1})")
        assert _column(page, table, col) == sorted(before, reverse=True)

        # filtering: only the rows with the text stay visible
        page.fill("#paired input.filter", "cnndm")
        shown = page.eval_on_selector_all(f"{table} tbody tr", "rs => rs.filter(r => !r.hidden).map(r => r.textContent)")
        assert shown and all("cnndm" in r for r in shown) and len(shown) < len(before)

        # the configuration is collapsed until asked for
        assert not page.is_visible("#configuration details pre")
        page.click("#configuration summary")
        assert page.is_visible("#configuration details pre")
        # on paper: no contents column, figures two to a row
        page.emulate_media(media="print")
        assert page.eval_on_selector("nav.toc", "n => getComputedStyle(n).display") == "none"
        columns = page.eval_on_selector(".grid", "g => getComputedStyle(g).gridTemplateColumns.split(' ').length")
        assert columns == 2
    assert errors == [], errors
    assert requests == [], f"the page asked for {requests}: it must load nothing"


def _column(page, table: str, col: int) -> list[float]:
    return page.eval_on_selector_all(f"{table} tbody tr", f"rs => rs.map(r => parseFloat(r.cells[{col}].textContent))")
