"""Opening a report in a real headless Chromium (Playwright driving a system browser): the browser
test's page checks and the README's screenshot.

``python -m dslbench.report.browser REPORT.html OUT.png`` writes a screenshot of the report's top
(the table of contents, the headline and the first figures). Needs ``pip install playwright`` and
a Chromium (Debian: ``apt-get install chromium``; nothing is downloaded: Playwright drives that
binary, ``DSLBENCH_CHROMIUM`` names another).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from pathlib import Path

# No sandbox (CI containers run as root), no GPU, and nothing that reaches the network on its own:
# a request the page makes would be the page's own fault, and the test sees it.
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run"]
SCREENSHOT_VIEWPORT = {"width": 1360, "height": 1000}


def chromium_path() -> str | None:
    """The Chromium binary to drive: ``DSLBENCH_CHROMIUM``, else the first of the usual names on PATH."""
    named = os.environ.get("DSLBENCH_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def missing() -> str | None:
    """Why a browser cannot be started here (``None`` when it can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    if chromium_path() is None:
        return "no Chromium binary (apt-get install chromium, or set DSLBENCH_CHROMIUM)"
    return None


@contextlib.contextmanager
def open_page(html: Path, viewport: dict | None = None):
    """``(page, console_errors, requests)`` with ``html`` loaded from its file: URL; the lists fill as
    the page logs errors and asks for anything that is not the page itself or an inline data: URI."""
    from playwright.sync_api import sync_playwright

    url = Path(html).resolve().as_uri()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport=viewport or SCREENSHOT_VIEWPORT)
            errors: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url) if r.url != url and not r.url.startswith("data:") else None)
            page.goto(url, wait_until="load")
            yield page, errors, requests
        finally:
            browser.close()


def screenshot(html: Path, png: Path, viewport: dict | None = None) -> Path:
    """The top of the report as the reader first sees it (one viewport, not the whole page)."""
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    with open_page(html, viewport) as (page, errors, _):
        page.screenshot(path=str(png))
    if errors:
        raise RuntimeError(f"{html}: the page logged errors: {errors}")
    return png


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dslbench.report.browser",
                                 description="Screenshot of a report's top in headless Chromium.")
    ap.add_argument("html", type=Path, help="report.html")
    ap.add_argument("png", type=Path, help="where the PNG goes (e.g. results/report.png)")
    ap.add_argument("--width", type=int, default=SCREENSHOT_VIEWPORT["width"])
    ap.add_argument("--height", type=int, default=SCREENSHOT_VIEWPORT["height"])
    args = ap.parse_args(argv)
    if not args.html.is_file():
        print(f"{ap.prog}: error: html: no such file: {args.html}", file=sys.stderr)
        return 2
    why = missing()
    if why:
        print(f"{ap.prog}: error: cannot start a browser: {why}", file=sys.stderr)
        return 2
    out = screenshot(args.html, args.png, {"width": args.width, "height": args.height})
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
