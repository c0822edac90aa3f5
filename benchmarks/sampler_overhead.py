"""Sampler overhead and batch scaling: wall time of one generation through each backend's own
``_generate_batch`` over the time it spent inside network evaluations, and samples/s per batch.

The denominator's forward time is measured *inside* the same generation: the seam's ``forward``
is wrapped with a timer (:class:`SeamTimer`), and the mean of the generation's own NFE calls
(same batch, same canvas length) is taken, so the ratio is the generation's wall time over the
time it spent inside network evaluations: ratio - 1 is exactly the share of time spent
elsewhere. (A median would charge a slow network call, e.g. one hit by load from another
process, to the sampler.) ``forward_ms_standalone`` is the same forward timed on its own, for
reference.

One DSL network evaluation is the converter (a learned layer of the DSL checkpoint, the input
map from noisy latents to backbone embeddings) followed by the backbone, so for ``dsl_llada``
each counted call's time includes the converter call that fed it. ``overhead_vs_backbone``
divides by the backbone alone instead (the same as ``overhead`` for the masked-diffusion
backends), so the converter's share can be read off both.
"""

from __future__ import annotations

import statistics
import time

import torch

from few_step_controls import CONTROL_VARIANTS
from timing import md_row, median, sync, timed
from workload import BACKENDS, prompts

SERIES = ("ratio", "ratio_backbone", "forward", "backbone", "forward_alone", "generate")


class SeamTimer:
    """While entered, every backend's denoiser ``forward`` (and DSL's ``convert``) is timed: each
    counted call records (network evaluation = the converter calls since the last counted call +
    the forward, backbone forward alone)."""

    def __init__(self, backends: dict, device: torch.device):
        self.backends, self.device = backends, device
        self.calls: list[tuple[float, float]] = []
        self.pending = 0.0  # converter time since the last counted call

    def __enter__(self):
        for be in self.backends.values():
            self._wrap(be.denoiser)
        return self

    def __exit__(self, *exc):
        for be in self.backends.values():
            den = be.denoiser
            den.forward = den._untimed_forward
            if hasattr(den, "_untimed_convert"):
                den.convert = den._untimed_convert
        return False

    def _wrap(self, den) -> None:
        inner, device = den.forward, self.device

        def forward(inputs_embeds, attention_mask, logits_from=0):
            sync(device)
            t0 = time.perf_counter()
            logits = inner(inputs_embeds, attention_mask, logits_from=logits_from)
            sync(device)
            t = time.perf_counter() - t0
            self.calls.append((t + self.pending, t))
            self.pending = 0.0
            return logits

        den.forward = forward
        den._untimed_forward = inner
        if hasattr(den, "convert"):
            convert = den.convert

            def timed_convert(z, beta_scale=1.0):
                sync(device)
                t0 = time.perf_counter()
                h = convert(z, beta_scale)
                sync(device)
                self.pending += time.perf_counter() - t0
                return h

            den.convert = timed_convert
            den._untimed_convert = convert

    def forward_once(self, be, b: int, P: int, G: int, logits_from: int | None = None) -> float:
        """One network evaluation timed on its own, asking for the logits the samplers read
        (the generated positions, ``logits_from=P``); ``logits_from=0``: the head over the whole
        canvas. Not counted in the backend's NFE."""
        logits_from = P if logits_from is None else logits_from
        den, device = be.denoiser, self.device
        canvas = torch.randint(16, den.vocab_size, (b, P + G), device=device)
        mask = torch.ones((b, P + G), dtype=torch.long, device=device)
        with torch.inference_mode():
            embeds = den.embed(canvas)
            if hasattr(den, "convert"):
                z = 7.0 * den.noise_embedding[canvas[:, P:]].float()

                def network():
                    h = den._untimed_convert(z, 2.0).to(embeds.dtype)
                    return den._untimed_forward(torch.cat([embeds[:, :P], h], dim=1), mask, logits_from=logits_from)
            else:
                def network():
                    return den._untimed_forward(embeds, mask, logits_from=logits_from)
            t = timed(network, device)
        den.nfe -= 1
        return t

    def generate_once(self, be, opts, b: int, P: int) -> tuple[float, float, float, int]:
        """(wall s, mean network evaluation s, mean backbone s, NFE) of one generation batch."""
        ctx = prompts(b, P, be.denoiser.vocab_size, seed=b)
        before = be.denoiser.nfe
        self.calls.clear()
        self.pending = 0.0
        t = timed(lambda: be._generate_batch(ctx, opts), self.device)
        n = be.denoiser.nfe - before
        assert len(self.calls) == n
        return t, statistics.fmean(c[0] for c in self.calls), statistics.fmean(c[1] for c in self.calls), n


def measure(backends: dict, size: dict, device: torch.device, P: int, batches, reps: int, while_timed=None):
    """Interleaved repetitions (every batch, every backend, per repetition) of a standalone
    forward and a timed generation. Returns ``(series, nfes, extra)``: per-(backend, batch)
    lists of each of :data:`SERIES`, the measured NFE, and ``while_timed(timer)``'s result
    (run after the repetitions, seam still timed)."""
    G = size["gen_length"]
    series = {s: {(n, b): [] for n in backends for b in batches} for s in SERIES}
    nfes: dict = {}
    opts = {n: be.request_options({"until": [], "gen_length": G, "nfe": size["nfe"]}) for n, be in backends.items()}
    with SeamTimer(backends, device) as timer:
        for name, be in backends.items():  # warm-up
            timer.forward_once(be, 2, P, G)
            timer.generate_once(be, opts[name], 2, P)
        for _ in range(reps):
            for b in batches:
                for name, be in backends.items():
                    key = (name, b)
                    series["forward_alone"][key].append(timer.forward_once(be, b, P, G))
                    t, f, f_backbone, n = timer.generate_once(be, opts[name], b, P)
                    nfes[key] = n
                    series["generate"][key].append(t)
                    series["forward"][key].append(f)
                    series["backbone"][key].append(f_backbone)
                    series["ratio"][key].append(t / (n * f))
                    series["ratio_backbone"][key].append(t / (n * f_backbone))
        extra = while_timed(timer) if while_timed else None
    return series, nfes, extra


def summarize(series: dict, nfes: dict, backends: dict, batches, scaling_batches) -> dict:
    """Medians per ``<backend>.b<batch>``; samples/s (``scaling``) at ``scaling_batches``."""
    out: dict = {"overhead": {}, "overhead_vs_backbone": {}, "scaling": {}, "forward_ms": {},
                 "forward_ms_standalone": {}, "generate_ms": {}, "nfe": {}}
    for name in backends:
        for b in batches:
            key, k = (name, b), f"{name}.b{b}"
            g = median(series["generate"][key])
            out["forward_ms"][k] = round(1e3 * median(series["forward"][key]), 2)
            out["forward_ms_standalone"][k] = round(1e3 * median(series["forward_alone"][key]), 2)
            out["generate_ms"][k] = round(1e3 * g, 2)
            out["nfe"][k] = nfes[key]
            out["overhead"][k] = round(median(series["ratio"][key]), 3)
            out["overhead_vs_backbone"][k] = round(median(series["ratio_backbone"][key]), 3)
            if b in scaling_batches:
                out["scaling"][k] = round(b / g, 2)
    return out


def sampler_figures(backends: dict, size: dict, device: torch.device) -> dict:
    """Overhead and samples/s at every batch, per backend, at the size's prompt and generation
    lengths, with the DSL breakdown."""
    batches = sorted(set(size["batches"]) | {size["overhead_batch"]})
    series, nfes, _ = measure(backends, size, device, size["prompt_len"], batches, size["reps"])
    out = summarize(series, nfes, backends, batches, size["batches"])
    forward_s = median(series["backbone"][("dsl_llada", size["overhead_batch"])])
    out["dsl_breakdown"] = dsl_breakdown(backends["dsl_llada"], size, device, forward_s)
    return out


def dsl_breakdown(be, size: dict, device: torch.device, forward_s: float) -> dict:
    """Where dsl_llada's time outside the backbone goes, per evaluation at the overhead batch:
    the converter and the top-k posterior mean, each as a fraction of one backbone forward."""
    from dslbench.diffusion.sde import DEFAULT_TOPK, posterior_mean

    den, b, G = be.denoiser, size["overhead_batch"], size["gen_length"]
    emb = den.noise_embedding.detach()
    with torch.inference_mode():
        z = torch.randn(b, G, emb.shape[1], device=device) * 3.0
        logits = torch.randn(b, G, den.vocab_size, device=device) * 3.0
        conv = median([timed(lambda: den.convert(z, 2.0), device) for _ in range(5)])
        buffers = {} if device.type == "cpu" else None  # as the sampler does within a generation
        post = median([timed(lambda: posterior_mean(logits, emb, DEFAULT_TOPK, buffers), device) for _ in range(5)])
        dense = median([timed(lambda: posterior_mean(logits, emb, None), device) for _ in range(5)])
    return {"converter_over_backbone": round(conv / forward_s, 4),
            "posterior_top512_over_backbone": round(post / forward_s, 4),
            "posterior_dense_over_backbone": round(dense / forward_s, 4),
            "topk": DEFAULT_TOPK, "vocab": den.vocab_size}


def table_lines(res: dict) -> list[str]:
    """The backends' table (and the few-step controls measured with them) + the DSL breakdown."""
    s, sm = res["sizes"], res["sampler"]
    ob = s["overhead_batch"]
    lines = [
        "| backend | overhead @b{0} | vs backbone only | fwd ms @b{0} | gen ms @b{0} | NFE | ".format(ob)
        + " | ".join(f"samples/s b{b}" for b in s["batches"]) + " | peak MiB gen |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(s["batches"]) + "---:|",
    ]

    def row(name: str) -> list[str]:
        k = f"{name}.b{ob}"
        return ([name, f"{sm['overhead'][k]:.3f}", f"{sm['overhead_vs_backbone'][k]:.3f}", f"{sm['forward_ms'][k]:.1f}",
                 f"{sm['generate_ms'][k]:.1f}", str(sm["nfe"][k])]
                + [f"{sm['scaling'][f'{name}.b{b}']:.2f}" for b in s["batches"]])

    for name in BACKENDS:
        lines.append(md_row(row(name) + [f"{res['memory'][f'generate.{name}.b{ob}']:.0f}"]))
    for name in CONTROL_VARIANTS:  # issue #17's controls (same checkpoint as mdm_llada; memory not measured)
        if f"{name}.b{ob}" in sm["overhead"]:
            lines.append(md_row(row(name) + ["-"]))
    br = sm.get("dsl_breakdown")
    if br:
        lines.append("(dsl_llada: one network evaluation = converter + backbone; 'vs backbone only' leaves the "
                     "converter out of the denominator.")
        lines.append(f" Per evaluation, as a share of one backbone forward: converter {100 * br['converter_over_backbone']:.1f}%, "
                     f"posterior mean over the top {br['topk']} of {br['vocab']} tokens {100 * br['posterior_top512_over_backbone']:.1f}% "
                     f"[over all tokens: {100 * br['posterior_dense_over_backbone']:.1f}%])")
    return lines
