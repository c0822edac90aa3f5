"""A report as a list of blocks, rendered to Markdown and to one self-contained HTML page.

Blocks: ``("h", level, text)``, ``("p", text)``, ``("table", DataFrame, best flags or None)``,
``("img", caption, png path)``. In HTML every image is embedded as a ``data:image/png;base64``
URI and the style sheet is inline: the page loads nothing else.
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


def html_table(df: pd.DataFrame, best: pd.DataFrame | None = None) -> str:
    if df.empty:
        return "<p><em>(no rows)</em></p>"
    rows = _cells(df)
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns) + "</tr></thead>", "<tbody>"]
    for i, r in enumerate(rows):
        tds = []
        for j, c in enumerate(df.columns):
            text = html.escape(r[j])
            if best is not None and c in best.columns and bool(best.iloc[i][c]) and r[j]:
                tds.append(f'<td class="best"><b>{text}</b></td>')
            else:
                tds.append(f"<td>{text}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def to_markdown(blocks: list[tuple], base_dir: Path) -> str:
    parts = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            parts.append("#" * b[1] + " " + b[2])
        elif kind == "p":
            parts.append(b[1])
        elif kind == "table":
            parts.append(markdown_table(b[1], b[2]))
        elif kind == "img":
            rel = os.path.relpath(b[2], base_dir).replace(os.sep, "/")
            parts.append(f"![{b[1]}]({rel})")
        else:
            raise ValueError(f"unknown block {kind!r}")
    return "\n\n".join(parts) + "\n"


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}
td.best{background:#e3f4e3}
figure{margin:1em 0}
figure img{max-width:100%;border:1px solid #ddd}
.published{color:#8a4b00;font-weight:bold}
.warn{background:#fff4e0;border-left:4px solid #e0a000;padding:0.4em 0.8em}
code{background:#f4f4f4;padding:0 3px}
"""


def _inline(text: str) -> str:
    """Escape, then render ``**bold**`` and ``code`` spans of our own paragraphs."""
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    return t


def to_html(blocks: list[tuple], title: str) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style>",
        "</head><body>",
    ]
    for b in blocks:
        kind = b[0]
        if kind == "h":
            parts.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
        elif kind == "p":
            cls = ' class="warn"' if b[1].startswith("**Warning") else ""
            body = "<br>".join(_inline(line) for line in b[1].split("\n"))
            parts.append(f"<p{cls}>{body}</p>")
        elif kind == "table":
            parts.append(html_table(b[1], b[2]))
        elif kind == "img":
            data = base64.b64encode(Path(b[2]).read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(b[1])}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(b[1])}</figcaption></figure>")
        else:
            raise ValueError(f"unknown block {kind!r}")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
