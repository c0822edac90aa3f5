"""A report as a list of blocks, rendered to Markdown and to one self-contained HTML page.

Blocks: ``("h", level, text)`` (``("h", 2, text, anchor)``: a section, listed in the page's table
of contents), ``("p", text)``, ``("table", DataFrame, best flags or None)``, ``("img", caption, png
path)``, ``("figures", [(caption, png path)])`` (a grid of figures that reflows with the window) and
``("details", summary, text)`` (collapsed preformatted text). In HTML every image is embedded as a
``data:image/png;base64`` URI, the style sheet and the one small script (table sorting / filtering)
are inline: the page loads nothing else, from a file or an artifact store alike.
"""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

# decimals per column heading / name; everything else numeric gets 2
DECIMALS = {
    "length ratio": 3, "adjacent rep": 3, "seq-rep-4": 3, "degenerate": 3, "short-output rate": 3,
    "length_ratio": 3, "adjacent_rep": 3, "seq_rep_4": 3, "degenerate": 3, "short_output": 3,
    "sign p": 3, "Wilcoxon p": 3, "sign_p": 3, "wilcoxon_p": 3, "sign p (Holm)": 3, "Wilcoxon p (Holm)": 3,
    "sign_p_holm": 3, "wilcoxon_p_holm": 3, "words": 1, "measured NFE": 1,
    "MAUVE": 3,
}
INT_COLUMNS = {"nfe_budget", "NFE", "NFE budget", "corruption_rate", "corruption %", "n", "wins_a", "wins_b", "n_samples",
               "n_valid"}


def fmt_value(value: Any, column: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if column in INT_COLUMNS:
        try:
            return str(int(float(value)))
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) or hasattr(value, "dtype"):
        try:
            v = float(value)
        except (TypeError, ValueError):
            return str(value)
        return f"{v:.{DECIMALS.get(column, 2)}f}"
    return str(value)


def _cells(df: pd.DataFrame) -> list[list[str]]:
    return [[fmt_value(v, c) for c, v in zip(df.columns, row)] for row in df.itertuples(index=False, name=None)]


def markdown_table(df: pd.DataFrame, best: pd.DataFrame | None = None) -> str:
    if df.empty:
        return "_(no rows)_"
    cols = [str(c) for c in df.columns]
    rows = _cells(df)
    if best is not None:
        for i in range(len(rows)):
            for j, c in enumerate(df.columns):
                if c in best.columns and bool(best.iloc[i][c]) and rows[i][j]:
                    rows[i][j] = f"**{rows[i][j]}**"
    esc = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


# Tables longer than this get a filter box (every table with two rows or more sorts by its headers).
FILTER_ROWS = 8
# Tables longer than this scroll inside a box of about that many rows (whole on paper).
SCROLL_ROWS = 20
# Cells stay on one line (the table scrolls sideways instead) unless their text is longer than this.
LONG_CELL = 40


def _heading(text: str) -> str:
    """A column heading may wrap at its spaces, never inside ``ROUGE-1`` (the text itself unchanged)."""
    import re

    return re.sub(r"\S+-\S+", lambda m: f'<span class="nw">{m.group(0)}</span>', html.escape(text))


def html_table(df: pd.DataFrame, best: pd.DataFrame | None = None, interactive: bool = True) -> str:
    """``interactive``: sortable headers and, for a long table, a filter box (the page's script)."""
    if df.empty:
        return "<p><em>(no rows)</em></p>"
    rows = _cells(df)
    sortable = ' class="sortable"' if interactive and len(rows) > 1 else ""
    # text columns read left to right, numbers line up on the right
    text = [not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    # a long table scrolls inside its own box (header kept in view) instead of stretching the page
    out = ['<div class="tblbox">']
    if interactive and len(rows) > FILTER_ROWS:
        out.append(f'<input type="search" class="filter" placeholder="Filter {len(rows)} rows" '
                   'aria-label="Filter the rows of the table below">')
    out += ['<div class="tbl scroll">' if interactive and len(rows) > SCROLL_ROWS else '<div class="tbl">',
            f"<table{sortable}>",
            "<thead><tr>" + "".join(('<th class="t">' if t else "<th>") + f"{_heading(str(c))}</th>"
                                    for c, t in zip(df.columns, text)) + "</tr></thead>", "<tbody>"]
    for i, r in enumerate(rows):
        tds = []
        for j, c in enumerate(df.columns):
            value = html.escape(r[j])
            if best is not None and c in best.columns and bool(best.iloc[i][c]) and r[j]:
                tds.append(f'<td class="best"><b>{value}</b></td>')
            else:
                cls = ("t long" if len(r[j]) > LONG_CELL else "t") if text[j] else ""
                tds.append(f'<td class="{cls}">{value}</td>' if cls else f"<td>{value}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    out += ["</tbody>", "</table>", "</div>", "</div>"]
    return "\n".join(out)


def _toc(blocks: list[tuple]) -> list[tuple[str, str]]:
    """``[(anchor, heading)]`` of the level-2 headings that carry an anchor (the report's sections)."""
    return [(b[3], b[2]) for b in blocks if b[0] == "h" and b[1] == 2 and len(b) > 3]


def to_markdown(blocks: list[tuple], base_dir: Path) -> str:
    parts = []
    toc = _toc(blocks)
    for b in blocks:
        kind = b[0]
        if kind == "h":
            anchor = f'<a id="{b[3]}"></a>\n\n' if len(b) > 3 else ""
            parts.append(anchor + "#" * b[1] + " " + b[2])
            if b[1] == 1 and toc:
                parts.append("Contents: " + " · ".join(f"[{text}](#{anchor})" for anchor, text in toc))
        elif kind == "p":
            parts.append(b[1])
        elif kind == "table":
            parts.append(markdown_table(b[1], b[2]))
        elif kind == "img":
            parts.append(_markdown_image(b[1], b[2], base_dir))
        elif kind == "figures":
            parts += [_markdown_image(caption, path, base_dir) for caption, path in b[1]]
        elif kind == "details":
            parts.append(f"<details><summary>{b[1]}</summary>\n\n```\n{b[2]}\n```\n\n</details>")
        else:
            raise ValueError(f"unknown block {kind!r}")
    return "\n\n".join(parts) + "\n"


def _markdown_image(caption: str, path: Path, base_dir: Path) -> str:
    rel = os.path.relpath(path, base_dir).replace(os.sep, "/")
    return f"![{caption}]({rel})\n\n*{caption}*"


# The page: a fixed table of contents on the left (above the text on a narrow screen, gone on
# paper), figures in a grid that reflows with the window, two per row on paper.
CSS = """
body{font:14px/1.45 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fff}
main{max-width:1280px;margin:0 auto;padding:1em 2em 4em}
body.with-toc main{margin-left:14rem}
nav.toc{position:fixed;top:0;left:0;bottom:0;width:12rem;overflow-y:auto;padding:1.2em 1em;background:#f6f7f9;
border-right:1px solid #dde;font-size:13px}
nav.toc b{display:block;margin-bottom:.5em}
nav.toc ol{margin:0;padding-left:1.3em}
nav.toc li{margin:.3em 0}
nav.toc a{color:#1a4f8a;text-decoration:none}
nav.toc a:hover{text-decoration:underline}
h1{font-size:1.6em;margin:.3em 0 .5em}
h2{border-bottom:2px solid #e4e6ea;padding-bottom:.2em;margin-top:1.8em}
section{scroll-margin-top:.5em}
.tblbox{margin:.5em 0 1.5em}
.tbl{overflow-x:auto}
.tbl.scroll{max-height:36em;overflow-y:auto;border-bottom:1px solid #ccc}
.tblbox input.filter{display:block;margin:0 0 .4em;padding:3px 6px;width:16em;font:inherit;font-size:13px}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}
td.long{white-space:normal;min-width:18em}
th .nw{white-space:nowrap}
th{background:#f2f2f2;position:sticky;top:0;white-space:normal;vertical-align:bottom}
td:first-child,th:first-child,td.t,th.t{text-align:left}
td.best{background:#e3f4e3}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2";font-size:9px}
table.sortable th[aria-sort=descending]::after{content:" \\25BC";font-size:9px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,430px),1fr));gap:1em;margin:1em 0}
.grid figure.wide{grid-column:1/-1}
figure{margin:0;padding:.5em;border:1px solid #e3e3e3;border-radius:4px;background:#fff}
figure img{display:block;width:100%;height:auto;margin:0 auto}
.grid figure.wide img{max-width:1000px}
figcaption{font-size:13px;color:#333;margin-top:.4em}
details{margin:1em 0;border:1px solid #dde;border-radius:4px;padding:.4em .8em;background:#fafbfc}
details pre{white-space:pre-wrap;font-size:12px;margin:.5em 0}
summary{cursor:pointer;font-weight:600}
.published{color:#8a4b00;font-weight:bold}
.warn{background:#fff4e0;border-left:4px solid #e0a000;padding:0.4em 0.8em}
code{background:#f4f4f4;padding:0 3px}
@media (max-width:900px){nav.toc{position:static;width:auto;border:0;border-bottom:1px solid #dde}
body.with-toc main{margin-left:auto}}
@media print{nav.toc,.tblbox input.filter{display:none}
body.with-toc main{margin:0;max-width:none;padding:0}
.tbl.scroll{max-height:none;overflow:visible}
body{font-size:11px}table{font-size:9.5px}th{position:static}
.grid{grid-template-columns:1fr 1fr}
figure,tr,details{break-inside:avoid}h2,h3{break-after:avoid}}
"""

# Sorting and filtering of the tables, and <details> opened for printing: inline, no library.
SCRIPT = """
(function(){
function num(s){s=s.trim();return /^[-+]?(\\d|\\.\\d)/.test(s)?parseFloat(s):NaN}
function cmp(a,b){var x=num(a),y=num(b);
if(!isNaN(x)&&!isNaN(y))return x-y;if(!a.trim()!==!b.trim())return a.trim()?-1:1;
if(!isNaN(x)!==!isNaN(y))return isNaN(x)?1:-1;return a.localeCompare(b)}
document.querySelectorAll("table.sortable").forEach(function(t){
var ths=t.tHead.rows[0].cells,body=t.tBodies[0];
Array.prototype.forEach.call(ths,function(th,i){th.tabIndex=0;th.title="sort by this column";
function sort(){var up=th.getAttribute("aria-sort")!=="ascending";
Array.prototype.forEach.call(ths,function(h){h.removeAttribute("aria-sort")});
th.setAttribute("aria-sort",up?"ascending":"descending");
Array.prototype.slice.call(body.rows).map(function(r,k){return[r,k]}).sort(function(a,b){
return (up?1:-1)*cmp(a[0].cells[i].textContent,b[0].cells[i].textContent)||a[1]-b[1]})
.forEach(function(p){body.appendChild(p[0])})}
th.addEventListener("click",sort);
th.addEventListener("keydown",function(e){if(e.key==="Enter")sort()})})});
document.querySelectorAll(".tblbox input.filter").forEach(function(f){
var body=f.parentNode.querySelector("tbody");
f.addEventListener("input",function(){var q=f.value.toLowerCase();
Array.prototype.forEach.call(body.rows,function(r){
r.hidden=q!==""&&r.textContent.toLowerCase().indexOf(q)<0})})});
window.addEventListener("beforeprint",function(){
document.querySelectorAll("details").forEach(function(d){d.open=true})});
})();
"""


def _inline(text: str) -> str:
    """Escape, then render ``**bold**`` and ``code`` spans of our own paragraphs."""
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    return t


def _png_width(path: Path) -> int:
    data = Path(path).read_bytes()[:24]
    return int.from_bytes(data[16:20], "big") if data[:8] == b"\x89PNG\r\n\x1a\n" else 0


# a figure at least this wide (pixels) takes a whole row of the grid (the trade-off's three panels)
WIDE_FIGURE_PX = 760


def _html_figure(caption: str, path: Path, grid: bool = False) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    wide = ' class="wide"' if grid and _png_width(path) >= WIDE_FIGURE_PX else ""
    return (f'<figure{wide}><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def to_html(blocks: list[tuple], title: str, interactive: bool = True) -> str:
    """``interactive=False``: no script at all (tables neither sort nor filter)."""
    toc = _toc(blocks)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        '<body class="with-toc">' if toc else "<body>",
    ]
    if toc:
        parts.append('<nav class="toc" aria-label="Contents"><b>Contents</b><ol>'
                     + "".join(f'<li><a href="#{a}">{_inline(text)}</a></li>' for a, text in toc) + "</ol></nav>")
    parts.append("<main>")
    in_section = False
    for b in blocks:
        kind = b[0]
        if kind == "h":
            if b[1] <= 2 and in_section:
                parts.append("</section>")
                in_section = False
            if len(b) > 3:
                parts.append(f'<section id="{b[3]}">')
                in_section = True
            parts.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
        elif kind == "p":
            cls = ' class="warn"' if b[1].startswith("**Warning") else ""
            body = "<br>".join(_inline(line) for line in b[1].split("\n"))
            parts.append(f"<p{cls}>{body}</p>")
        elif kind == "table":
            parts.append(html_table(b[1], b[2], interactive))
        elif kind == "img":
            parts.append(_html_figure(b[1], b[2]))
        elif kind == "figures":
            parts.append('<div class="grid">' + "".join(_html_figure(c, p, grid=True) for c, p in b[1]) + "</div>")
        elif kind == "details":
            parts.append(f"<details><summary>{_inline(b[1])}</summary><pre>{html.escape(b[2])}</pre></details>")
        else:
            raise ValueError(f"unknown block {kind!r}")
    if in_section:
        parts.append("</section>")
    parts.append("</main>")
    if interactive and any(b[0] == "table" for b in blocks):
        parts.append(f"<script>{SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
