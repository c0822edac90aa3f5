"""Denoising trace recorder: how one output evolves step by step, per backend (``dslbench trace``).

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

Output (atomic): ``trace.json`` (the rows, schema in :mod:`dslbench.runs.files`); the page and
heat-maps are rendered from it by :mod:`dslbench.report.trace`.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from dslbench.runs.files import MASK_GLYPH, BackendTrace, TraceRow, write_trace_json

BACKENDS = ("mdm_llada", "softmask_llada", "dsl_llada")


class TraceArgumentError(ValueError):
    """A bad argument of ``dslbench trace``; the message names the argument."""


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


def record_trace(
    pairs: list[tuple[str, str]],
    prompt: str,
    *,
    nfe: int,
    gen_length: int | None = None,
    chat: bool = False,
    out_dir: str | Path = "results/trace",
) -> tuple[list[BackendTrace], Path]:
    """Trace the prompt through every (backend, model args) pair; write ``OUT/trace.json``."""
    traces = []
    for name, args in pairs:
        try:
            traces.append(trace_backend(name, args, prompt, nfe=nfe, gen_length=gen_length, chat=chat))
        except TraceArgumentError:
            raise
        except ValueError as err:  # a model arg, checkpoint or budget the backend refuses
            raise TraceArgumentError(f"--backend {name} --model-args {args!r}: {err}") from err
    return traces, write_trace_json(traces, out_dir, prompt)
