"""Denoising trace: how one output evolves step by step, per backend (``dslbench trace``).

A trace runs one prompt through a backend exactly as ``generate_until`` would (same loading,
model args, prompt encoding, seed, sampler call; the backend's own ``_generate_batch``), with two
read-only taps:

- the sampler call the backend makes (``mdm_generate`` in :mod:`dslbench.harness.mdm_backend`,
  ``dsl_generate`` in :mod:`dslbench.harness.dsl_backend`) is wrapped for the duration of the
  trace so that it also receives a ``trace`` callback (both samplers offer one; it changes
  neither tokens nor NFE) and hands back its full output;
- the denoiser seam's ``on_forward`` hooks record the logits of every counted call.

What one row (= one sampler step) holds:

masked diffusion / soft-mask (``mdm_llada``, ``softmask_llada``)
    the generated span after the step (still-masked positions shown as a placeholder), the
    positions committed at the step, and for every committed token its *confidence*: the softmax
    probability (float64, over the step's (CFG-guided) logits, EOS at -inf under
    ``logits_eos_inf``) of the token at the step it was committed; for soft-mask also the
    ``lambda`` each still-masked position was fed at the step (computed from the previous step's
    logits with the backend's own scalars). One row per step; NFE = steps (2 x with CFG).
DSL (``dsl_llada``)
    one row per SL step: the argmax of the backbone's posterior at the step's first evaluation
    (at SNR ``s_i``) with its probability, and the token nearest to the continuous state after
    the step (``argmax_j E_n[j] . y``); plus one row for the final argmax pass, which is the
    output. The calls per row are 2 (Heun), 1 (one-call step) and 1 (final pass).

Where the length / repetition trade-off comes from shows up in the per-row counts: at few-step
budgets masked diffusion commits many positions in one step from one set of logits, and the
same token often wins at several of them (``dup`` = committed positions whose token another
position committed at the same step also got), or EOS wins early (the text is cut there).

Outputs (atomic): ``trace.html`` (self-contained: inline CSS, PNGs as data URIs, no links),
``trace_<i>_<backend>.png`` (a heat-map per backend), ``trace.json`` (the rows).
"""

from __future__ import annotations

import contextlib
import functools
import html
import io
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

BACKENDS = ("mdm_llada", "softmask_llada", "dsl_llada")
MASK_GLYPH = "\u00b7"  # placeholder shown for a still-masked position


class TraceArgumentError(ValueError):
    """A bad argument of ``dslbench trace``; the message names the argument."""


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class TraceRow:
    step: int  # row index (the DSL final pass is the last row)
    kind: str  # "mdm", "heun", "euler" or "final"
    nfe: int  # denoiser calls made up to and including this row
    tokens: list[int]  # the generated span as this row shows it
    masked: list[bool]  # still masked after the step (masked diffusion); all False for DSL
    score: list[float | None]  # confidence per position (None where masked)
    new: list[bool]  # committed at this step (MDM) / argmax changed since the previous row (DSL)
    remasked: list[bool] = field(default_factory=list)  # sent back to the mask (ReMDM)
    lam: list[float | None] | None = None  # soft-mask lambda fed at this step (masked positions)
    proposal: list[int | None] | None = None  # MDM: argmax proposal at still-masked positions
    proposal_prob: list[float | None] | None = None
    nearest: list[int] | None = None  # DSL: token nearest to the state after the step
    snr: float | None = None  # DSL: SNR of the row's (first) evaluation
    snr_next: float | None = None  # DSL: SNR the step moves to

    @property
    def committed_count(self) -> int:
        return sum(self.new) if self.kind == "mdm" else 0


@dataclass
class BackendTrace:
    backend: str
    model_args: str
    rows: list[TraceRow]
    final_tokens: list[int]  # the sampler's output span
    text: str  # what the backend's generate_until returns for this prompt
    nfe: int  # measured denoiser calls
    steps: int
    nfe_budget: int
    gen_length: int
    mask_id: int
    eos_ids: tuple[int, ...]
    token_text: dict[int, str]  # display string of every token id that appears
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return "dsl" if self.backend == "dsl_llada" else "mdm"


# ---------------------------------------------------------------------------------------------
# Arguments and loading


def check_request(backends: list[str], model_args: list[str], nfe: int, gen_length: int | None, prompt: str) -> list[tuple[str, str]]:
    """Validate ``dslbench trace`` arguments; return the (backend, model args) pairs."""
    if not backends:
        raise TraceArgumentError(f"--backend is required; allowed: {', '.join(BACKENDS)}")
    for name in backends:
        if name not in BACKENDS:
            raise TraceArgumentError(f"--backend {name!r} is not supported; allowed: {', '.join(BACKENDS)}")
    if not model_args:
        raise TraceArgumentError("--model-args is required (pretrained=DIR[,k=v...])")
    if len(model_args) == 1:
        model_args = model_args * len(backends)
    if len(model_args) != len(backends):
        raise TraceArgumentError(
            f"--model-args was given {len(model_args)} times for {len(backends)} backends; give it once "
            "(shared by every backend) or once per --backend, in the same order"
        )
    for args in model_args:
        if "pretrained=" not in args:
            raise TraceArgumentError(f"--model-args {args!r} lacks pretrained=DIR (a checkpoint directory or hub id)")
    if nfe is None or int(nfe) < 1:
        raise TraceArgumentError(f"--nfe must be an integer >= 1, got {nfe}")
    if gen_length is not None and int(gen_length) < 1:
        raise TraceArgumentError(f"--gen-length must be an integer >= 1, got {gen_length}")
    if not prompt or not prompt.strip():
        raise TraceArgumentError("--prompt must be a non-empty text")
    return list(zip(backends, model_args))


def backend_class(name: str):
    if name == "mdm_llada":
        from dslbench.harness.mdm_backend import MDMLLaDA

        return MDMLLaDA
    if name == "softmask_llada":
        from dslbench.harness.softmask_backend import SoftMaskLLaDA

        return SoftMaskLLaDA
    if name == "dsl_llada":
        from dslbench.harness.dsl_backend import DSLLLaDA

        return DSLLLaDA
    raise TraceArgumentError(f"--backend {name!r} is not supported; allowed: {', '.join(BACKENDS)}")


def load_backend(name: str, model_args: str):
    """The backend as lm-eval would build it from ``--model_args`` (batch size 1)."""
    return backend_class(name).create_from_arg_string(model_args, {"batch_size": 1})


# ---------------------------------------------------------------------------------------------
# Taps


@contextlib.contextmanager
def _wrapped(module: Any, attr: str, wrapper: Callable[[Callable], Callable]) -> Iterator[None]:
    original = getattr(module, attr)
    setattr(module, attr, wrapper(original))
    try:
        yield
    finally:
        setattr(module, attr, original)


@contextlib.contextmanager
def _forward_tap(denoiser: Any, sink: Callable[[torch.Tensor], None]) -> Iterator[None]:
    hooks = getattr(denoiser, "on_forward", None)
    if hooks is None:
        raise TypeError(f"{type(denoiser).__name__} has no on_forward hooks; the trace cannot read its logits")
    hooks.append(sink)
    try:
        yield
    finally:
        hooks.remove(sink)


def _sampler_target(name: str) -> tuple[Any, str]:
    if name == "dsl_llada":
        import dslbench.harness.dsl_backend as module

        return module, "dsl_generate"
    import dslbench.harness.mdm_backend as module

    return module, "mdm_generate"


class _Collector:
    """Receives the seam's logits and the sampler's step callbacks; builds the rows."""

    def __init__(self, backend: Any, opts: dict, gen_length: int) -> None:
        self.backend = backend
        self.opts = opts
        self.gen_length = gen_length
        self.pending: list[torch.Tensor] = []
        self.calls = 0
        self.rows: list[TraceRow] = []
        self.output: Any = None
        self.sampler_calls = 0
        self.prev_guided: torch.Tensor | None = None
        self.lam_fn: Callable[[torch.Tensor], torch.Tensor] | None = None

    # seam
    def on_logits(self, logits: torch.Tensor) -> None:
        self.calls += 1
        self.pending.append(logits[0, -self.gen_length:].detach().clone())

    def _take(self) -> list[torch.Tensor]:
        calls, self.pending = self.pending, []
        return calls

    # masked diffusion ---------------------------------------------------------------------
    def on_mdm_step(self, st: Any, cfg: float, logits_eos_inf: bool) -> None:
        calls = self._take()
        if not calls:
            raise RuntimeError("a sampler step made no denoiser call the trace could see")
        guided = calls[0]
        if cfg > 0 and len(calls) >= 2:
            guided = calls[1] + (cfg + 1) * (calls[0] - calls[1])
        lg = guided.to(torch.float64)
        if logits_eos_inf:
            lg = lg.clone()
            lg[..., self.backend.denoiser.eos_id] = float("-inf")
        probs = torch.softmax(lg, dim=-1)
        proposal_prob, proposal = probs.max(dim=-1)
        tokens = st.tokens[0].tolist()
        committed = st.committed[0].tolist()
        remasked = st.remasked[0].tolist()
        mask_id = self.backend.denoiser.mask_id
        prev = self.rows[-1] if self.rows else None
        prev_masked = prev.masked if prev else [True] * len(tokens)
        masked = [t == mask_id for t in tokens]
        score: list[float | None] = []
        for i, tok in enumerate(tokens):
            if masked[i]:
                score.append(None)
            elif committed[i]:
                score.append(float(probs[i, tok]))
            else:
                score.append(prev.score[i] if prev else None)
        lam = None
        if self.lam_fn is not None:
            lam = [None] * len(tokens)
            if self.prev_guided is not None:
                from dslbench.diffusion.softmask import entropy_from_logits

                with torch.no_grad():
                    values = self.lam_fn(entropy_from_logits(self.prev_guided.to(torch.float32))).tolist()
                lam = [float(values[i]) if prev_masked[i] else None for i in range(len(tokens))]
            else:
                lam = [0.0 if prev_masked[i] else None for i in range(len(tokens))]
        self.prev_guided = guided
        self.rows.append(
            TraceRow(
                step=st.step, kind="mdm", nfe=self.calls, tokens=tokens, masked=masked, score=score,
                new=[bool(c) for c in committed], remasked=[bool(r) for r in remasked], lam=lam,
                proposal=[int(proposal[i]) if masked[i] else None for i in range(len(tokens))],
                proposal_prob=[float(proposal_prob[i]) if masked[i] else None for i in range(len(tokens))],
            )
        )

    def wrap_mdm(self, original: Callable) -> Callable:
        @functools.wraps(original)
        def traced(denoiser, prompt_ids, prompt_mask=None, **kwargs):
            if kwargs.get("trace") is not None:
                raise RuntimeError("the backend already passes a trace callback")
            cfg = float(kwargs.get("cfg_scale", 0.0) or 0.0)
            eos_inf = bool(kwargs.get("logits_eos_inf", False))
            self.sampler_calls += 1
            out = original(denoiser, prompt_ids, prompt_mask,
                           trace=lambda st: self.on_mdm_step(st, cfg, eos_inf), **kwargs)
            self.output = out
            return out

        return traced

    # DSL ----------------------------------------------------------------------------------
    def _nearest(self, y: torch.Tensor) -> list[int]:
        emb = self.backend.denoiser.noise_embedding.detach().to(device=y.device, dtype=torch.float32)
        return (y[0].to(torch.float32) @ emb.T).argmax(dim=-1).tolist()

    def on_dsl_step(self, st: Any) -> None:
        calls = self._take()
        tokens = st.tokens[0].tolist()
        if st.probs is not None:
            probs = st.probs[0].tolist()
        else:  # an older sampler: read the step's first evaluation from the seam
            p = torch.softmax(calls[0].float(), dim=-1)
            probs = p.gather(-1, st.tokens[0][:, None].to(p.device)).squeeze(-1).tolist()
        self._dsl_row(st.step, st.kind, tokens, probs, self._nearest(st.y), float(st.snr), float(st.snr_next))

    def _dsl_row(self, step, kind, tokens, probs, nearest, snr, snr_next) -> None:
        prev = self.rows[-1].tokens if self.rows else None
        new = [prev is not None and t != p for t, p in zip(tokens, prev)] if prev else [False] * len(tokens)
        self.rows.append(
            TraceRow(step=step, kind=kind, nfe=self.calls, tokens=tokens, masked=[False] * len(tokens),
                     score=[float(p) for p in probs], new=new, remasked=[False] * len(tokens),
                     nearest=nearest, snr=snr, snr_next=snr_next)
        )

    def wrap_dsl(self, original: Callable) -> Callable:
        @functools.wraps(original)
        def traced(denoiser, prompt_ids, prompt_mask=None, **kwargs):
            if kwargs.get("trace") is not None:
                raise RuntimeError("the backend already passes a trace callback")
            self.sampler_calls += 1
            out = original(denoiser, prompt_ids, prompt_mask, trace=self.on_dsl_step, **kwargs)
            self._take()
            logits = out.logits[0].float()
            probs = torch.softmax(logits, dim=-1)
            tokens = out.tokens[0]
            top = probs.gather(-1, tokens[:, None].to(probs.device)).squeeze(-1)
            s_final = float(out.plan.grid[-1])
            self._dsl_row(len(self.rows), "final", tokens.tolist(), top.tolist(), self._nearest(out.y), s_final, s_final)
            self.output = out
            return out

        return traced


def _token_text(tokenizer: Any, ids: set[int], mask_id: int) -> dict[int, str]:
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    out = {}
    for i in sorted(ids):
        if i == mask_id:
            out[i] = MASK_GLYPH
        elif i in special:
            out[i] = str(tokenizer.convert_ids_to_tokens(i))
        else:
            out[i] = tokenizer.decode([i])
    return out


def trace_backend(
    name: str,
    model_args: str,
    prompt: str,
    *,
    nfe: int,
    gen_length: int | None = None,
    chat: bool = False,
    backend: Any = None,
) -> BackendTrace:
    """Trace one prompt through one backend (``backend``: an already loaded instance of it)."""
    if name not in BACKENDS:
        raise TraceArgumentError(f"--backend {name!r} is not supported; allowed: {', '.join(BACKENDS)}")
    lm = backend if backend is not None else load_backend(name, model_args)
    if getattr(lm, "NAME", name) != name:
        raise TraceArgumentError(f"backend instance {lm.NAME!r} given for --backend {name!r}")
    gen_kwargs: dict[str, Any] = {"nfe": int(nfe)}
    if gen_length is not None:
        gen_kwargs["gen_length"] = int(gen_length)
    opts = lm.request_options(gen_kwargs)
    context = lm.apply_chat_template([{"role": "user", "content": prompt}]) if chat else prompt
    ids = lm._encode_context(context)
    collector = _Collector(lm, opts, opts["gen_length"])
    settings: dict[str, Any] = {}
    if name == "softmask_llada":
        params, k = lm.softmask_params(opts)
        collector.lam_fn = params.lam
        settings.update({"k": k, **params.values(), "source": lm.softmask_source})
    module, attr = _sampler_target(name)
    wrapper = collector.wrap_dsl if name == "dsl_llada" else collector.wrap_mdm
    with _forward_tap(lm.denoiser, collector.on_logits), _wrapped(module, attr, wrapper):
        (text,) = lm._generate_batch([ids], opts, prompts=[context])
    if collector.sampler_calls != 1 or collector.output is None:
        raise RuntimeError(f"{name} did not decode through {module.__name__}.{attr}; the trace cannot follow it")
    out = collector.output
    final = out.tokens[0].tolist()
    if name == "dsl_llada":
        settings.update({
            "sampler": opts["sampler"], "accounting": opts["accounting"], "noise_scale": out.noise_scale,
            "heun_steps": out.plan.heun, "one_call_steps": out.plan.euler, "topk": opts["topk"],
        })
    else:
        settings.update({
            "block_length": opts["block_length"] or opts["gen_length"], "remasking": opts["remasking"],
            "temperature": opts["temperature"], "cfg": opts["cfg"], "logits_eos_inf": opts["logits_eos_inf"],
            "remdm": opts["remdm"],
        })
    settings["seed"] = lm.args["seed"]
    settings["response_cut"] = lm.args["response_cut"]
    seen = {t for row in collector.rows for t in row.tokens}
    seen |= {t for row in collector.rows for t in (row.nearest or [])}
    seen |= {t for row in collector.rows for t in (row.proposal or []) if t is not None}
    seen |= set(final) | {lm.denoiser.mask_id}
    return BackendTrace(
        backend=name, model_args=model_args, rows=collector.rows, final_tokens=final, text=text,
        nfe=int(out.nfe), steps=int(out.steps), nfe_budget=int(nfe), gen_length=opts["gen_length"],
        mask_id=lm.denoiser.mask_id, eos_ids=tuple(lm.denoiser.eos_ids),
        token_text=_token_text(lm.tokenizer, seen, lm.denoiser.mask_id), settings=settings,
    )


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
    page = to_html(blocks, title)
    for key, body in placeholders.items():
        marker = f"<p>{key}</p>"
        if page.count(marker) != 1:
            raise RuntimeError(f"placeholder {key} not found once in the rendered page")
        page = page.replace(marker, body)
    return page.replace("</head>", f"<style>{TRACE_CSS}</style>\n</head>", 1)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_trace(traces: list[BackendTrace], out_dir: str | Path, prompt: str) -> dict[str, Path]:
    """Write the PNG heat-maps, ``trace.html`` and ``trace.json`` atomically into ``out_dir``."""
    from dslbench.report.io import write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = [plot_heatmap(t, out / f"trace_{i + 1}_{_slug(t.backend)}.png") for i, t in enumerate(traces)]
    page = render_page(traces, prompt, images)
    html_path = write_text_atomic(page, out / "trace.html")
    payload = {
        "prompt": prompt,
        "backends": [
            {**{k: v for k, v in asdict(t).items() if k not in ("rows", "token_text")},
             "token_text": {str(k): v for k, v in t.token_text.items()},
             "rows": [asdict(r) for r in t.rows]}
            for t in traces
        ],
    }
    json_path = write_text_atomic(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", out / "trace.json")
    return {"html": html_path, "json": json_path, **{f"png{i + 1}": p for i, p in enumerate(images)}}


def run_trace(
    pairs: list[tuple[str, str]],
    prompt: str,
    *,
    nfe: int,
    gen_length: int | None = None,
    chat: bool = False,
    out_dir: str | Path = "results/trace",
) -> tuple[list[BackendTrace], dict[str, Path]]:
    traces = []
    for name, args in pairs:
        try:
            traces.append(trace_backend(name, args, prompt, nfe=nfe, gen_length=gen_length, chat=chat))
        except TraceArgumentError:
            raise
        except ValueError as err:  # a model arg, checkpoint or budget the backend refuses
            raise TraceArgumentError(f"--backend {name} --model-args {args!r}: {err}") from err
    return traces, write_trace(traces, out_dir, prompt)
