"""Denoising trace page: renders a recorded ``trace.json`` (``dslbench trace``).

The trace itself is recorded by :mod:`dslbench.runs.trace` (which runs the backends); this module
only reads its rows (:mod:`dslbench.runs.files`) and draws them.

Where the length / repetition trade-off comes from shows up in the per-row counts: at few-step
budgets masked diffusion commits many positions in one step from one set of logits, and the
same token often wins at several of them (``dup`` = committed positions whose token another
position committed at the same step also got), or EOS wins early (the text is cut there).

Outputs (atomic): ``trace.html`` (self-contained: inline CSS, PNGs as data URIs, no links) and
``trace_<i>_<backend>.png`` (a heat-map per backend), next to the ``trace.json`` they come from.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from pathlib import Path
from typing import Any

from dslbench.runs.files import MASK_GLYPH, BackendTrace, TraceRow, read_trace_json


# ---------------------------------------------------------------------------------------------
# Per-row figures


def duplicate_commits(tokens: list[int], new: list[bool]) -> int:
    """Positions whose token was also committed at another position in the same step."""
    counts = Counter(t for t, n in zip(tokens, new) if n)
    return sum(c for c in counts.values() if c > 1)


def adjacent_repeats(tokens: list[int], masked: list[bool] | None = None) -> int:
    """Neighbouring visible positions holding the same token."""
    masked = masked or [False] * len(tokens)
    return sum(
        1 for i in range(1, len(tokens))
        if not masked[i] and not masked[i - 1] and tokens[i] == tokens[i - 1]
    )


def first_eos(tokens: list[int], eos_ids: tuple[int, ...]) -> int | None:
    for i, t in enumerate(tokens):
        if t in eos_ids:
            return i
    return None


def row_summary(trace: BackendTrace, row: TraceRow) -> dict[str, Any]:
    shown = [t for t, m in zip(row.tokens, row.masked) if not m]
    scores = [s for s in row.score if s is not None]
    out: dict[str, Any] = {"row": row.step, "kind": row.kind, "NFE": row.nfe}
    if trace.family == "dsl":
        out.update({
            "SNR": row.snr,
            "changed": sum(row.new),
            "adjacent repeats": adjacent_repeats(row.tokens),
            "EOS": sum(1 for t in row.tokens if t in trace.eos_ids),
            "mean prob": sum(scores) / len(scores) if scores else None,
            "nearest = argmax": (sum(1 for a, b in zip(row.tokens, row.nearest or []) if a == b) / len(row.tokens))
            if row.nearest else None,
        })
    else:
        new_scores = [s for s, n in zip(row.score, row.new) if n and s is not None]
        out.update({
            "committed": sum(row.new),
            "dup in step": duplicate_commits(row.tokens, row.new),
            "EOS committed": sum(1 for t, n in zip(row.tokens, row.new) if n and t in trace.eos_ids),
            "remasked": sum(row.remasked),
            "still masked": sum(row.masked),
            "adjacent repeats": adjacent_repeats(row.tokens, row.masked),
            "mean conf. of commits": sum(new_scores) / len(new_scores) if new_scores else None,
        })
        if row.lam is not None:
            lams = [v for v in row.lam if v is not None]
            out["mean lambda"] = sum(lams) / len(lams) if lams else None
    out["visible"] = len(shown)
    return out


def trace_summary(trace: BackendTrace) -> dict[str, Any]:
    from dslbench.metrics.repetition import adjacent_rep
    from dslbench.metrics.text import words

    w = words(trace.text)
    eos = first_eos(trace.final_tokens, trace.eos_ids)
    dup = sum(duplicate_commits(r.tokens, r.new) for r in trace.rows) if trace.family == "mdm" else None
    return {
        "backend": trace.backend,
        "measured NFE": trace.nfe,
        "NFE budget": trace.nfe_budget,
        "steps": trace.steps,
        "rows": len(trace.rows),
        "gen length": trace.gen_length,
        "first EOS at": eos if eos is not None else "",
        "words": len(w),
        "adjacent rep": adjacent_rep(w),
        "dup commits": "" if dup is None else dup,
        "text": trace.text,
    }


# ---------------------------------------------------------------------------------------------
# Heat-map (PNG)


def _matrix(trace: BackendTrace) -> tuple[list[list[float]], list[str]]:
    nan = float("nan")
    data = [[nan if s is None else float(s) for s in row.score] for row in trace.rows]
    labels = []
    for row in trace.rows:
        if trace.family == "dsl":
            labels.append(f"{'final' if row.kind == 'final' else row.step} s={row.snr:.3g}")
        else:
            labels.append(f"{row.step}")
    return data, labels


def plot_heatmap(trace: BackendTrace, path: str | Path) -> Path:
    """Rows = steps, columns = positions, colour = confidence; masked cells grey; dots = committed
    at the step (DSL: argmax changed); red crosses = same token committed at several positions
    in one step; EOS cells outlined."""
    import numpy as np

    from dslbench.report.plots import _plt, _save

    plt = _plt()
    data, labels = _matrix(trace)
    arr = np.ma.masked_invalid(np.array(data, dtype=float))
    n_rows, n_cols = arr.shape
    fig, ax = plt.subplots(figsize=(min(max(6.0, 0.13 * n_cols + 2.5), 30.0), min(max(3.0, 0.28 * n_rows + 2.0), 40.0)),
                           layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="#d9d9d9")
    im = ax.imshow(arr, aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    new_r, new_c, dup_r, dup_c, eos_r, eos_c = [], [], [], [], [], []
    for r, row in enumerate(trace.rows):
        counts = Counter(t for t, n in zip(row.tokens, row.new) if n)
        for c, (tok, n) in enumerate(zip(row.tokens, row.new)):
            if n:
                (dup_r if trace.family == "mdm" and counts[tok] > 1 else new_r).append(r)
                (dup_c if trace.family == "mdm" and counts[tok] > 1 else new_c).append(c)
            if tok in trace.eos_ids and not row.masked[c]:
                eos_r.append(r)
                eos_c.append(c)
    ax.scatter(new_c, new_r, s=9, c="white", edgecolors="black", linewidths=0.4, label="committed at this step" if trace.family == "mdm" else "argmax changed")
    if dup_r:
        ax.scatter(dup_c, dup_r, s=18, marker="x", c="red", linewidths=1.0, label="same token committed twice+ in the step")
    if eos_r:
        ax.scatter(eos_c, eos_r, s=30, marker="s", facecolors="none", edgecolors="orange", linewidths=0.8, label="EOS / EoT")
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("position in the generated span")
    ax.set_ylabel("step" if trace.family == "mdm" else "step (SNR)")
    what = "confidence of committed token" if trace.family == "mdm" else "posterior probability of the argmax"
    ax.set_title(f"{trace.backend}: {trace.nfe} NFE, {trace.steps} steps ({what})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01).set_label(what, fontsize=7)
    fig.legend(loc="outside lower center", ncol=3, fontsize=7, frameon=False)
    return _save(fig, Path(path))


# ---------------------------------------------------------------------------------------------
# HTML


TRACE_CSS = """
.trace-wrap{overflow-x:auto;max-width:100%;border:1px solid #ddd;margin:0.5em 0 1em}
table.trace{border-collapse:collapse;font-family:Menlo,Consolas,monospace;font-size:11px;margin:0}
table.trace th,table.trace td{border:1px solid #e4e4e4;padding:1px 3px;text-align:center;white-space:pre;min-width:1.6em}
table.trace th.rowh,table.trace td.rowh{text-align:left;background:#f7f7f7;position:sticky;left:0}
table.trace td.m{color:#999;background:#eeeeee}
table.trace td.n{font-weight:bold;outline:1.5px solid #222;outline-offset:-1.5px}
table.trace td.d{outline:2px solid #d00;outline-offset:-2px}
table.trace td.r{text-decoration:line-through;color:#7a2a9a}
table.trace td.e{font-style:italic;box-shadow:inset 0 -3px 0 #f0a000}
table.trace td.stat{background:#fafafa;color:#333;text-align:right}
.legend span{display:inline-block;padding:0 6px;margin-right:6px;border:1px solid #ccc;font-family:monospace;font-size:11px}
pre.final{white-space:pre-wrap;background:#f6f6f6;padding:0.5em;border:1px solid #ddd}
"""


def _conf_colour(c: float) -> str:
    """Red (0) -> yellow (0.5) -> green (1), light enough to read text on."""
    c = min(max(c, 0.0), 1.0)
    return f"hsl({int(round(120 * c))},70%,{int(round(82 - 10 * c))}%)"


def _lam_colour(lam: float, lam_max: float) -> str:
    a = 0.0 if lam_max <= 0 else min(lam / lam_max, 1.0)
    return f"rgba(70,120,220,{0.08 + 0.5 * a:.3f})"


def _printable(text: str) -> str:
    """Control characters (which byte-level tokenizers produce) as ``\\xNN`` escapes."""
    return "".join(c if c.isprintable() or c in "\n\t " else repr(c)[1:-1] for c in text)


def _show(text: str, limit: int = 8) -> str:
    text = _printable(text.replace("\n", "\u23ce").replace("\t", "\u21e5").replace(" ", "\u2423"))
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def token_table_html(trace: BackendTrace) -> str:
    tt = trace.token_text
    lam_max = max((v for row in trace.rows for v in (row.lam or []) if v is not None), default=0.0)
    stats = [row_summary(trace, row) for row in trace.rows]
    stat_cols = [k for k in stats[0] if k not in ("row", "kind", "visible")] if stats else []
    head = ['<th class="rowh">step</th>'] + [f"<th>{i}</th>" for i in range(trace.gen_length)]
    head += [f"<th>{html.escape(k)}</th>" for k in stat_cols]
    lines = ['<div class="trace-wrap"><table class="trace">', "<thead><tr>" + "".join(head) + "</tr></thead><tbody>"]
    for row, st in zip(trace.rows, stats):
        counts = Counter(t for t, n in zip(row.tokens, row.new) if n)
        row_text = "".join(MASK_GLYPH if m else tt.get(t, str(t)) for t, m in zip(row.tokens, row.masked))
        if trace.family == "dsl":
            label = "final" if row.kind == "final" else f"{row.step} ({row.kind})"
            label += f" s={row.snr:.3g}"
        else:
            label = f"{row.step}"
        cells = [f'<td class="rowh" title="{html.escape(_printable(row_text), quote=True)}">{html.escape(label)}</td>']
        for i, tok in enumerate(row.tokens):
            classes, tips, style = [], [f"pos {i}"], ""
            if row.masked[i]:
                classes.append("m")
                content = MASK_GLYPH
                if row.proposal and row.proposal[i] is not None:
                    tips.append(f"proposal {tt.get(row.proposal[i], row.proposal[i])!r} p={row.proposal_prob[i]:.3f}")
                if row.lam is not None and row.lam[i] is not None:
                    tips.append(f"lambda={row.lam[i]:.4f}")
                    style = f"background:{_lam_colour(row.lam[i], lam_max)}"
            else:
                content = _show(tt.get(tok, str(tok)))
                tips.append(f"token {tok} {tt.get(tok, '')!r}")
                if row.score[i] is not None:
                    tips.append(f"{'conf' if trace.family == 'mdm' else 'p'}={row.score[i]:.3f}")
                    style = f"background:{_conf_colour(row.score[i])}"
                if row.new[i]:
                    classes.append("n")
                    if trace.family == "mdm" and counts[tok] > 1:
                        classes.append("d")
                        tips.append(f"committed at {counts[tok]} positions in this step")
                if tok in trace.eos_ids:
                    classes.append("e")
                if row.lam is not None and row.lam[i] is not None:
                    tips.append(f"lambda fed at this step={row.lam[i]:.4f}")
            if row.remasked and row.remasked[i]:
                classes.append("r")
                tips.append("remasked")
            if row.nearest is not None:
                tips.append(f"nearest to state {tt.get(row.nearest[i], row.nearest[i])!r}")
            cls = f' class="{" ".join(classes)}"' if classes else ""
            sty = f' style="{style}"' if style else ""
            cells.append(f'<td{cls}{sty} title="{html.escape(_printable("; ".join(tips)), quote=True)}">{html.escape(content)}</td>')
        for k in stat_cols:
            v = st[k]
            txt = "" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))
            cells.append(f'<td class="stat">{html.escape(txt)}</td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def _legend(trace: BackendTrace) -> str:
    parts = [
        f'<span style="background:{_conf_colour(0.05)}">low conf.</span>',
        f'<span style="background:{_conf_colour(0.5)}">0.5</span>',
        f'<span style="background:{_conf_colour(0.95)}">high conf.</span>',
    ]
    if trace.family == "mdm":
        parts += [
            f'<span style="background:#eee;color:#999">{MASK_GLYPH} masked</span>',
            '<span style="font-weight:bold;outline:1.5px solid #222">committed at this step</span>',
            '<span style="outline:2px solid #d00">same token committed at several positions in one step</span>',
            '<span style="font-style:italic;box-shadow:inset 0 -3px 0 #f0a000">EOS / EoT</span>',
        ]
        if any(row.lam is not None for row in trace.rows):
            parts.append(f'<span style="background:{_lam_colour(1, 1)}">{MASK_GLYPH} soft-mask lambda (darker = larger)</span>')
    else:
        parts += [
            '<span style="font-weight:bold;outline:1.5px solid #222">argmax changed since the previous row</span>',
            '<span style="font-style:italic;box-shadow:inset 0 -3px 0 #f0a000">EOS / EoT</span>',
        ]
    return '<p class="legend">' + "".join(parts) + " (hover a cell for token id, probability, proposal / nearest token)</p>"


def _describe(trace: BackendTrace) -> str:
    s = trace.settings
    if trace.family == "dsl":
        what = (
            f"DSL stochastic localization: {s.get('heun_steps')} Heun step(s) (2 calls each), "
            f"{s.get('one_call_steps')} one-call step(s) and the final argmax pass; sampler {s.get('sampler')}, "
            f"accounting {s.get('accounting')}, noise scale {s.get('noise_scale')}. A row shows the argmax of the "
            "backbone's posterior at the row's SNR with its probability; hover for the token nearest to the "
            "continuous state after the step. The last row is the output."
        )
    else:
        what = (
            f"Masked diffusion: {trace.steps} step(s), block length {s.get('block_length')}, remasking "
            f"{s.get('remasking')}, temperature {s.get('temperature')}, cfg {s.get('cfg')}, "
            f"logits_eos_inf {s.get('logits_eos_inf')}, ReMDM {s.get('remdm')}. A row is the span after the step; "
            "a committed token keeps the confidence it had when it was committed."
        )
        if trace.backend == "softmask_llada":
            what += (
                f" Soft-mask k={s.get('k')}, scale={s.get('scale', 0):.4g}, centre={s.get('centre', 0):.4g}, "
                f"steepness={s.get('steepness', 0):.4g} (from {s.get('source')}); masked cells are tinted by the "
                "lambda they were fed at the step."
            )
    return what + f" Seed {s.get('seed')}; model args `{trace.model_args}`."


def render_page(traces: list[BackendTrace], prompt: str, images: list[Path], title: str = "Denoising trace") -> str:
    """The self-contained HTML page (``report.render`` blocks plus the token tables)."""
    import pandas as pd

    from dslbench.report.render import to_html

    blocks: list[tuple] = [("h", 1, title)]
    budget = ", ".join(sorted({str(t.nfe_budget) for t in traces}))
    blocks.append(("p", f"Prompt: {prompt}\nNFE budget: {budget}; generated length: "
                        f"{', '.join(sorted({str(t.gen_length) for t in traces}))}"))
    summary = pd.DataFrame([trace_summary(t) for t in traces])
    summary["text"] = summary["text"].map(_printable)
    blocks.append(("table", summary, None))
    blocks.append(("p", "Where the length / repetition trade-off comes from: with few steps, masked diffusion "
                        "commits many positions per step from one set of logits (`dup in step` counts positions "
                        "whose token was also committed elsewhere in the same step; an early EOS cuts the text); "
                        "DSL moves every position at once and commits only at the last row."))
    placeholders = {}
    for i, (trace, image) in enumerate(zip(traces, images)):
        blocks.append(("h", 2, f"{i + 1}. {trace.backend}: {trace.nfe} NFE, {trace.steps} steps"))
        blocks.append(("p", _describe(trace)))
        key = f"DSLBENCH-TRACE-TABLE-{i}"
        placeholders[key] = _legend(trace) + "\n" + token_table_html(trace)
        blocks.append(("p", key))
        blocks.append(("img", f"{trace.backend}: confidence per step and position", image))
        blocks.append(("p", f"Final text ({trace.nfe} NFE):"))
        key = f"DSLBENCH-TRACE-FINAL-{i}"
        placeholders[key] = f'<pre class="final">{html.escape(_printable(trace.text))}</pre>'
        blocks.append(("p", key))
    page = to_html(blocks, title, interactive=False)  # a page of a few rows: nothing to sort, no script
    for key, body in placeholders.items():
        marker = f"<p>{key}</p>"
        if page.count(marker) != 1:
            raise RuntimeError(f"placeholder {key} not found once in the rendered page")
        page = page.replace(marker, body)
    return page.replace("</head>", f"<style>{TRACE_CSS}</style>\n</head>", 1)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)

def write_trace(traces: list[BackendTrace], out_dir: str | Path, prompt: str) -> dict[str, Path]:
    """Write the PNG heat-maps and ``trace.html`` atomically into ``out_dir``."""
    from dslbench.report.io import write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = [plot_heatmap(t, out / f"trace_{i + 1}_{_slug(t.backend)}.png") for i, t in enumerate(traces)]
    page = render_page(traces, prompt, images)
    html_path = write_text_atomic(page, out / "trace.html")
    return {"html": html_path, **{f"png{i + 1}": p for i, p in enumerate(images)}}


def render_trace(trace_json: str | Path) -> tuple[list[BackendTrace], dict[str, Path]]:
    """Read a recorded ``trace.json`` and write its page and heat-maps beside it."""
    trace_json = Path(trace_json)
    traces, prompt = read_trace_json(trace_json)
    return traces, {**write_trace(traces, trace_json.parent, prompt), "json": trace_json}
