#!/usr/bin/env python
"""dslbench performance benchmark: ``python benchmarks/run.py [--quick] [--out PATH]``.

Every figure is measured side by side in one process on a randomly initialised LLaDA-format
model (sizes printed with the table; ``--quick`` uses smaller ones). Timings are medians over
interleaved repetitions, so that load from other processes on a shared machine hits the
numerator and the denominator of a ratio alike.

Figures (JSON keys under ``results/bench/<mode>.json``):

- ``sampler_overhead.<backend>.b<B>``: wall time of one generation through the backend's own
  ``_generate_batch`` (padding, sampler, decoding) / (measured NFE x mean time of one network
  evaluation in that same generation; for DSL the converter + the backbone), i.e. wall time /
  the time spent inside network evaluations. 1.0 = nothing but network forwards.
  ``sampler.overhead_vs_backbone`` leaves the DSL converter out of the denominator.
- ``converter``: the DSL converter's share of one forward at the published LLaDA-8B shapes
  (V = 126,464, d = 100, D = 4096, 32 layers), timed on CPU on a few tokens (the converter
  vs one LLaDA-8B layer x 32 + the output head) and counted in FLOPs; the same for the top-k
  sparse converter (:func:`sparse_convert`, top-k slots + a uniform tail) with its error.
- ``batch_scaling.<backend>.b<B>``: samples/s at batch 1, 2, 4, 8, 16.
- ``e2e``: lm-eval ``simple_evaluate`` on ``dsl_summ_synth_16step`` with ``dsl_llada``:
  samples/s and the share of wall time spent outside the backend's ``generate_until``.
- ``adaptation``: tokens/s of one loss+backward step of the adaptation script's mdm, dsl and
  softmask objectives (:mod:`dslbench.training.objectives`), and the dsl / softmask throughput
  over mdm's as the median of paired per-repetition ratios.
- ``memory``: peak memory growth of each workload: on CPU the kernel's peak resident set
  (``VmHWM`` reset through ``/proc/self/clear_refs``) minus the RSS at its start, measured in a
  child process whose large buffers are returned to the OS on free; on GPU
  ``torch.cuda.max_memory_allocated``.

On CPU the benchmark runs torch with one thread by default (``--threads``): on a shared machine
a two-thread OpenMP region stalls whenever either core is taken, which makes every ratio noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("mdm_llada", "softmask_llada", "dsl_llada")
# The few-step unmasking controls of issue #17, timed like the backends on mdm_llada's checkpoint
# (adaptive rules may stop before the budget: the overhead is per network evaluation).
CONTROL_VARIANTS = {
    "mdm_llada+entropy": {"remasking": "entropy"},
    "mdm_llada+margin": {"remasking": "margin"},
    "mdm_llada+threshold": {"parallel": "threshold", "threshold": 0.9},
    "mdm_llada+eb": {"parallel": "eb", "remasking": "entropy", "eb_gamma": 1.0},
}

SIZES = {
    # d_model, layers, heads, mlp hidden, prompt tokens, generated tokens, NFE, noise dim
    "quick": dict(d_model=128, n_layers=2, n_heads=4, mlp=352, prompt_len=32, gen_length=64, nfe=8,
                  noise_dim=100, batches=(1, 2, 4, 8, 16), overhead_batch=8, reps=3,
                  conv_tokens=4, e2e_limit=8, train_batch=8, train_len=128, train_reps=5, summ_prompt_len=192, summ_reps=2),
    "full": dict(d_model=256, n_layers=4, n_heads=4, mlp=688, prompt_len=32, gen_length=128, nfe=16,
                 noise_dim=100, batches=(1, 2, 4, 8, 16), overhead_batch=8, reps=5,
                 conv_tokens=16, e2e_limit=32, train_batch=8, train_len=256, train_reps=11, summ_prompt_len=512,
                 summ_reps=3),
}
# CI smoke sub-mode (tests/test_benchmarks.py): every code path, seconds; figures meaningless.
SIZES["smoke"] = dict(d_model=64, n_layers=2, n_heads=4, mlp=176, prompt_len=8, gen_length=16, nfe=4, noise_dim=16,
                      batches=(1, 2), overhead_batch=2, reps=1, conv_tokens=2, e2e_limit=2, train_batch=2,
                      train_len=32, train_reps=1, summ_prompt_len=24, summ_reps=1,
                      big=dict(vocab=4096, noise_dim=100, d_model=256, n_layers=32, n_heads=4, mlp=688))
GPU_SIZES = dict(d_model=1024, n_layers=8, n_heads=16, mlp=2816, conv_tokens=256, train_len=512)

SPARSE_SNRS = (1.0, 7.0, 30.0)  # low / knee / high SNR for the sparse converter's error

# Published LLaDA-8B shapes (DESIGN.md).
BIG = dict(vocab=126464, noise_dim=100, d_model=4096, n_layers=32, n_heads=32, mlp=12288)


# ------------------------------------------------------------------------------------------ utils
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median(xs):
    return statistics.median(xs) if xs else float("nan")


class PeakMemory:
    """Peak memory growth of a block (bytes): CUDA allocator peak, or on CPU the kernel's peak
    resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) minus the RSS at entry.

    CPU figures are exact only when freed buffers go back to the OS: the memory phase runs in a
    child process with glibc's mmap threshold fixed at 256 KiB (``MALLOC_MMAP_THRESHOLD_``), so
    every large tensor is its own mapping; the converter's buffers are far above any threshold.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        self.base = self._status("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.peak = self._status("VmHWM") - self.base
        return False


def mib(n: float) -> float:
    return round(n / 2**20, 1)


# ------------------------------------------------------------------------------------------ models
def build_checkpoints(size: dict, workdir: Path, device: torch.device) -> dict[str, Path]:
    """A random LLaDA-format checkpoint of the given size, its DSL twin and its soft-mask twin."""
    from dslbench.diffusion.dsl import DSLModules
    from dslbench.diffusion.softmask import SoftMaskParams, save_softmask
    from dslbench.models.dsl_checkpoint import save_dsl_checkpoint
    from dslbench.models.tiny import _default_corpus, build_tiny_llada, save_checkpoint
    from dslbench.models.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(_default_corpus(0), vocab_size=1024)
    model = build_tiny_llada(
        tokenizer, seed=0, d_model=size["d_model"], n_layers=size["n_layers"], n_heads=size["n_heads"],
        mlp_hidden_size=size["mlp"], max_sequence_length=2048,
    )
    base = save_checkpoint(model, tokenizer, workdir / "base")
    soft = save_checkpoint(model, tokenizer, workdir / "softmask")
    save_softmask(SoftMaskParams(scale=0.5, centre=-0.75, steepness=6.66), soft, k=3)
    vocab = model.config.vocab_size
    dsl = DSLModules(vocab, size["noise_dim"], size["d_model"], beta_init=2.0, noise_seed=0)
    dsl.init_from_backbone(model.get_input_embeddings().weight, model.config.mask_token_id)
    dslp = save_dsl_checkpoint(model, dsl, tokenizer, workdir / "dsl", {"beta_train": 2.0})
    return {"mdm_llada": base, "softmask_llada": soft, "dsl_llada": dslp}


def load_backend(name: str, ckpt: Path, size: dict, device: torch.device, batch: int = 8, extra: dict | None = None):
    from dslbench.harness.dsl_backend import DSLLLaDA
    from dslbench.harness.mdm_backend import MDMLLaDA
    from dslbench.harness.softmask_backend import SoftMaskLLaDA

    cls = {"mdm_llada": MDMLLaDA, "softmask_llada": SoftMaskLLaDA, "dsl_llada": DSLLLaDA}[name]
    return cls.create_from_arg_obj(
        {"pretrained": str(ckpt), "gen_length": size["gen_length"], "nfe": size["nfe"], "device": str(device), **(extra or {})},
        {"batch_size": batch},
    )


def prompts(batch: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(16, vocab, (batch, length), generator=g).tolist()


# ------------------------------------------------------------------------------------------ figures
def sampler_figures(backends: dict, size: dict, device: torch.device, shape: str = "main") -> dict:
    """Overhead and samples/s at every batch, per backend (interleaved repetitions).

    ``shape="main"``: the size's prompt and generation lengths at every batch (with the DSL
    breakdown); ``"summarization"``: a summarization-shaped canvas (``summ_prompt_len`` prompt
    tokens, as a source document, + the same generation length) at the overhead batch only.

    The denominator's forward time is measured *inside* the same generation: the seam's
    ``forward`` is wrapped with a timer, and the mean of the generation's own NFE calls (same
    batch, same canvas length) is taken, so the ratio is the generation's wall time over the
    time it spent inside network evaluations: ratio - 1 is exactly the share of time spent
    elsewhere. (A median would charge a slow network call, e.g. one hit by load from another
    process, to the sampler.) ``forward_ms_standalone`` is the same forward timed on its own,
    for reference.

    One DSL network evaluation is the converter (a learned layer of the DSL checkpoint, the
    input map from noisy latents to backbone embeddings) followed by the backbone, so for
    ``dsl_llada`` each counted call's time includes the converter call that fed it.
    ``overhead_vs_backbone`` divides by the backbone alone instead (the same as ``overhead`` for
    the masked-diffusion backends), so the converter's share can be read off both.
    """
    out: dict = {"overhead": {}, "overhead_vs_backbone": {}, "scaling": {}, "forward_ms": {},
                 "forward_ms_standalone": {}, "generate_ms": {}, "nfe": {}}
    main = shape == "main"
    P, G = (size["prompt_len"] if main else size["summ_prompt_len"]), size["gen_length"]
    batches = sorted(set(size["batches"]) | {size["overhead_batch"]}) if main else [size["overhead_batch"]]
    reps = size["reps"] if main else size["summ_reps"]
    ratios = {(n, b): [] for n in backends for b in batches}
    ratios_backbone = {(n, b): [] for n in backends for b in batches}
    fwd_in = {(n, b): [] for n in backends for b in batches}
    backbone_ms = {(n, b): [] for n in backends for b in batches}
    fwd_alone = {(n, b): [] for n in backends for b in batches}
    gen_times = {(n, b): [] for n in backends for b in batches}
    nfes = {}
    opts = {n: be.request_options({"until": [], "gen_length": G, "nfe": size["nfe"]}) for n, be in backends.items()}
    calls: list[tuple[float, float]] = []  # (network evaluation, backbone alone) per counted call
    pending = [0.0]  # converter time since the last counted call

    def wrap(den):
        inner = den.forward

        def forward(inputs_embeds, attention_mask, logits_from=0):
            sync(device)
            t0 = time.perf_counter()
            logits = inner(inputs_embeds, attention_mask, logits_from=logits_from)
            sync(device)
            t = time.perf_counter() - t0
            calls.append((t + pending[0], t))
            pending[0] = 0.0
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
                pending[0] += time.perf_counter() - t0
                return h

            den.convert = timed_convert
            den._untimed_convert = convert

    def forward_once(be, b, logits_from=P):
        """One network evaluation timed on its own, asking for the logits the samplers read
        (the generated positions); ``logits_from=0``: the head over the whole canvas."""
        den = be.denoiser
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

    def generate_once(name, be, b):
        ctx = prompts(b, P, be.denoiser.vocab_size, seed=b)
        before = be.denoiser.nfe
        calls.clear()
        pending[0] = 0.0
        t = timed(lambda: be._generate_batch(ctx, opts[name]), device)
        n = be.denoiser.nfe - before
        nfes[(name, b)] = n
        assert len(calls) == n
        return t, statistics.fmean(c[0] for c in calls), statistics.fmean(c[1] for c in calls), n

    for be in backends.values():
        wrap(be.denoiser)
    for name, be in backends.items():  # warm-up
        forward_once(be, 2)
        generate_once(name, be, 2)
    for rep in range(reps):
        for b in batches:
            for name, be in backends.items():
                fwd_alone[(name, b)].append(forward_once(be, b))
                t, f, f_backbone, n = generate_once(name, be, b)
                gen_times[(name, b)].append(t)
                fwd_in[(name, b)].append(f)
                backbone_ms[(name, b)].append(f_backbone)
                ratios[(name, b)].append(t / (n * f))
                ratios_backbone[(name, b)].append(t / (n * f_backbone))
    ob = size["overhead_batch"]
    if not main:
        # What skipping the output head on the prompt buys at this shape (a network-level saving:
        # the overhead ratios above are relative to the cheaper forward). The head is timed on its
        # own (the forward-to-forward difference is within this machine's noise at this size).
        mdm = backends["mdm_llada"]
        model = mdm.denoiser.model
        head = model.get_output_embeddings()
        weight = (head if head is not None else model.get_input_embeddings()).weight
        forward = median([forward_once(mdm, ob, 0) for _ in range(2 * reps + 1)])

        def head_s(rows: int) -> float:
            hidden = torch.randn(ob, rows, weight.shape[1], device=device, dtype=weight.dtype)
            with torch.inference_mode():
                return median([timed(lambda: F.linear(hidden, weight), device) for _ in range(9)])

        whole, generated = head_s(P + G), head_s(G)
        out["head_on_generated_only"] = {"forward_ms": round(1e3 * forward, 2),
                                         "head_ms_whole_canvas": round(1e3 * whole, 2),
                                         "head_ms_generated": round(1e3 * generated, 2),
                                         "saving": round((whole - generated) / forward, 4)}
    for be in backends.values():
        be.denoiser.forward = be.denoiser._untimed_forward
        if hasattr(be.denoiser, "_untimed_convert"):
            be.denoiser.convert = be.denoiser._untimed_convert
    if main:
        out["dsl_breakdown"] = dsl_breakdown(backends["dsl_llada"], size, device, median(backbone_ms[("dsl_llada", ob)]))
    else:
        out["prompt_len"], out["gen_length"], out["batch"] = P, G, ob
    for name, be in backends.items():
        for b in batches:
            g = median(gen_times[(name, b)])
            out["forward_ms"][f"{name}.b{b}"] = round(1e3 * median(fwd_in[(name, b)]), 2)
            out["forward_ms_standalone"][f"{name}.b{b}"] = round(1e3 * median(fwd_alone[(name, b)]), 2)
            out["generate_ms"][f"{name}.b{b}"] = round(1e3 * g, 2)
            out["nfe"][f"{name}.b{b}"] = nfes[(name, b)]
            out["overhead"][f"{name}.b{b}"] = round(median(ratios[(name, b)]), 3)
            out["overhead_vs_backbone"][f"{name}.b{b}"] = round(median(ratios_backbone[(name, b)]), 3)
            if main and b in size["batches"]:
                out["scaling"][f"{name}.b{b}"] = round(b / g, 2)
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


def flops_forward_per_token(d: int, layers: int, mlp: int, vocab: int, seq: int) -> dict:
    """Multiply-adds x 2 per token of one LLaDA forward (bidirectional attention over ``seq``)."""
    layer = 2 * (4 * d * d + 3 * d * mlp) + 2 * 2 * seq * d  # projections + QK^T and AV
    head = 2 * d * vocab
    return {"layer": layer, "backbone": layers * layer + head, "head": head}


def sparse_convert(dsl, z: torch.Tensor, beta_scale: float, k: int, wt: torch.Tensor | None = None,
                   tail_sum: torch.Tensor | None = None) -> torch.Tensor:
    """Top-k sparse converter: the ``k`` most probable slots exactly, every other slot at the
    average probability of the rest (a uniform tail, exact when the rest are near-uniform, as at
    low SNR). ``h = sum_topk p_j W_j + (1 - sum_topk p) * mean of the other columns + c``.

    Cost per token: ``z K^T`` (V d) + a top-k over V + k D, instead of (V+1) D for the dense one.
    """
    conv = dsl.converter
    E = dsl.noise_embed.weight
    if wt is None:  # W^T, [V+1, D], row-major so that a slot's column is one contiguous row
        wt = conv.backbone_embedding.weight.float().T.contiguous()
    if tail_sum is None:
        tail_sum = wt.sum(dim=0)
    scores = z.float() @ E.T
    scores = torch.cat([scores, torch.zeros_like(scores[..., :1])], dim=-1)
    logits = conv.beta.float() * beta_scale * scores + conv.logit_bias.float()
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    top, idx = logits.topk(k, dim=-1)
    p = torch.exp(top - lse)  # [..., k]
    cols = wt[idx]  # [..., k, D]
    head = torch.einsum("...k,...kd->...d", p, cols)
    rest = (1 - p.sum(-1, keepdim=True)).clamp_min(0)
    rest_mean = (tail_sum - cols.sum(-2)) / (wt.shape[0] - k)
    return head + rest * rest_mean + conv.backbone_embedding.bias.float()


def converter_figures(size: dict, device: torch.device) -> dict:
    """DSL converter vs one LLaDA-8B-shaped forward (32 layers + head), timed on a few tokens."""
    from dslbench.diffusion.dsl import DSLModules
    from dslbench.models.llada import LLaDABlock, rope_tables
    from dslbench.models.llada_config import llada_8b_config

    big = size.get("big", BIG)
    V, d, D = big["vocab"], big["noise_dim"], big["d_model"]
    T = size["conv_tokens"]
    seq = 1024  # attention cost counted at a 1024-token canvas in the FLOP figures
    out: dict = {"tokens_timed": T, "shapes": f"V={V} d={d} D={D}, {big['n_layers']} layers, mlp {big['mlp']}"}
    with torch.inference_mode():
        with PeakMemory(device) as pm_conv:
            dsl = DSLModules.__new__(DSLModules)
            torch.nn.Module.__init__(dsl)
            dsl.vocab_size, dsl.noise_dim, dsl.d_model = V, d, D
            dsl.noise_embed = torch.nn.Embedding(V, d, device=device)
            dsl.noise_embed.weight.copy_(torch.nn.functional.normalize(dsl.noise_embed.weight, dim=-1))
            from dslbench.diffusion.dsl import DSLConverter

            with torch.device(device):
                dsl.converter = DSLConverter(V, D)
            z = torch.randn(1, T, d, device=device) * 3.0
            conv_t = median([timed(lambda: dsl.convert(z, 2.0), device) for _ in range(3)])
        wt = dsl.converter.backbone_embedding.weight.T.contiguous()
        tail_sum = wt.sum(dim=0)
        topk = {}
        for k in (64, 512):
            t = median([timed(lambda: sparse_convert(dsl, z, 2.0, k, wt, tail_sum), device) for _ in range(3)])
            # approximation error at low / middle / high SNR (relative L2 of h)
            errs = {}
            E = dsl.noise_embed.weight
            for snr in SPARSE_SNRS:
                ids = torch.randint(0, V, (1, T), device=device)
                zz = snr * E[ids] + math.sqrt(snr) * torch.randn(1, T, d, device=device)
                dense = dsl.convert(zz, 2.0)
                approx = sparse_convert(dsl, zz, 2.0, k, wt, tail_sum)
                errs[f"snr{snr:g}"] = float((approx - dense).norm() / dense.norm())
            topk[k] = (t, errs)
        del dsl, tail_sum, wt
        cfg = llada_8b_config(init_device=None, d_model=D, n_heads=big["n_heads"], n_kv_heads=big["n_heads"],
                              mlp_hidden_size=big["mlp"], vocab_size=V, embedding_size=V)
        with PeakMemory(device) as pm_layer:
            with torch.device(device):
                block = LLaDABlock(cfg, 0).eval()
                head = torch.nn.Linear(D, V, bias=False)
            x = torch.randn(1, T, D, device=device)
            rope = rope_tables(T, cfg.head_dim, cfg.rope_theta, x.device)
            layer_t = median([timed(lambda: block(x, rope, None), device) for _ in range(3)])
            head_t = median([timed(lambda: head(x), device) for _ in range(3)])
        del block, head
        # The sampler's other per-token vocabulary work: the top-512 posterior mean of E_n rows.
        from dslbench.diffusion.sde import DEFAULT_TOPK, posterior_mean

        table = torch.nn.functional.normalize(torch.randn(V, d, device=device), dim=-1)
        logits = torch.randn(1, T, V, device=device) * 3.0
        buffers = {} if device.type == "cpu" else None
        post_t = median([timed(lambda: posterior_mean(logits, table, DEFAULT_TOPK, buffers), device) for _ in range(3)])
        del table, logits
    fwd_t = big["n_layers"] * layer_t + head_t
    out["timed_ms"] = {"converter": round(1e3 * conv_t, 2), "layer": round(1e3 * layer_t, 2),
                       "head": round(1e3 * head_t, 2), "forward_32_layers_plus_head": round(1e3 * fwd_t, 1)}
    out["share_timed"] = round(conv_t / (conv_t + fwd_t), 4)
    fl = flops_forward_per_token(D, big["n_layers"], big["mlp"], V, seq)
    conv_flops = 2 * V * d + 2 * (V + 1) * D
    out["share_flops"] = round(conv_flops / (conv_flops + fl["backbone"]), 4)
    for k, (t, errs) in topk.items():
        sparse_flops = 2 * V * d + 2 * k * D + 2 * D
        out[f"topk{k}"] = {
            "timed_ms": round(1e3 * t, 2),
            "share_timed": round(t / (t + fwd_t), 4),
            "share_flops": round(sparse_flops / (sparse_flops + fl["backbone"]), 5),
            "rel_error": {s: round(e, 4) for s, e in errs.items()},
        }
    # share of one DSL network evaluation (converter + backbone), timed and in FLOPs (a matmul
    # with E_n plus a few elementwise passes over V)
    post_flops = 2 * V * d + 8 * V
    out["posterior_top512"] = {"timed_ms": round(1e3 * post_t, 2),
                               "share_timed": round(post_t / (conv_t + fwd_t), 5),
                               "share_flops": round(post_flops / (conv_flops + fl["backbone"]), 5)}
    out["memory"] = {"converter": mib(pm_conv.peak), "layer_plus_head": mib(pm_layer.peak)}
    return out


def e2e_figures(ckpt: Path, size: dict, device: torch.device, workdir: Path) -> dict:
    """lm-eval end to end on ``dsl_summ_synth_16step`` (``limit`` documents, batch 8)."""
    from dslbench.harness import dsl_backend
    from dslbench.harness.base import DiffusionBackend
    from dslbench.harness.run import evaluate_cell

    spent = {"generate_until": 0.0, "sample": 0.0}
    orig_gen = DiffusionBackend.generate_until
    orig_sample = dsl_backend.DSLLLaDA._sample

    def gen(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return orig_gen(self, *a, **k)
        finally:
            spent["generate_until"] += time.perf_counter() - t0

    def sample(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return orig_sample(self, *a, **k)
        finally:
            sync(device)
            spent["sample"] += time.perf_counter() - t0

    orig_init = dsl_backend.DSLLLaDA.__init__

    def init(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return orig_init(self, *a, **k)
        finally:
            spent["load"] = spent.get("load", 0.0) + time.perf_counter() - t0

    DiffusionBackend.generate_until = gen
    dsl_backend.DSLLLaDA._sample = sample
    dsl_backend.DSLLLaDA.__init__ = init
    limit = size["e2e_limit"]
    runs = []
    try:
        for attempt in ("cold", "warm"):
            for key in spent:
                spent[key] = 0.0
            with PeakMemory(device) as pm:
                t0 = time.perf_counter()
                res = evaluate_cell(
                    "dsl_llada", {"pretrained": str(ckpt), "batch_size": 8, "device": str(device)},
                    ["dsl_summ_synth_16step"], workdir / f"e2e-{attempt}", limit=limit, force=True,
                )
                total = time.perf_counter() - t0
            runs.append((attempt, total, dict(spent), pm.peak, res))
    finally:
        DiffusionBackend.generate_until = orig_gen
        dsl_backend.DSLLLaDA._sample = orig_sample
        dsl_backend.DSLLLaDA.__init__ = orig_init
    out: dict = {"task": "dsl_summ_synth_16step", "batch_size": 8,
                 "note": "cold = first cell in the process (imports of lm-eval's metric stack included); warm = a second cell"}
    for attempt, total, sp, peak, res in runs:
        n = int(res.get("n-samples", {}).get("dsl_summ_synth_16step", {}).get("effective", limit))
        out["samples"] = n
        out[attempt] = {
            "wall_s": round(total, 2),
            "samples_per_s": round(n / total, 3),
            "samples_per_s_inside_backend": round(n / sp["generate_until"], 3),
            "share_outside_backend": round(1 - sp["generate_until"] / total, 3),
            "share_outside_sampler": round(1 - sp["sample"] / total, 3),
            "share_model_load": round(sp.get("load", 0.0) / total, 3),
            "share_lm_eval_rest": round(1 - (sp["generate_until"] + sp.get("load", 0.0)) / total, 3),
            "memory": mib(peak),
        }
    out.update({k: out["warm"][k] for k in ("samples_per_s", "share_outside_backend")})
    return out


def adaptation_api_steps(ckpt: Path, size: dict, device: torch.device):
    """The same three steps through the adaptation script's own objectives
    (:mod:`dslbench.training.objectives`: ``make_objective``, ``AdaptModule``), when present.
    softmask runs its two-pass step on every batch (``softmask_prob=1``)."""
    from dslbench.models.loading import load_llada
    from dslbench.training.objectives import AdaptModule, make_objective

    B, L = size["train_batch"], size["train_len"]
    P = L // 4
    modules = {}
    for name, options in (("mdm", {}), ("dsl", {"noise_dim": size["noise_dim"]}), ("softmask", {"softmask_prob": 1.0})):
        backbone, tokenizer, info = load_llada(ckpt, dtype="float32" if device.type == "cpu" else "bfloat16", device=str(device))
        objective = make_objective(name, **options)
        extras = objective.build(backbone, tokenizer, info)
        module = AdaptModule(backbone, extras, objective, info).to(device)
        objective.configure_trainable(module)
        module.train()
        modules[name] = module
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(16, modules["mdm"].vocab_size, (B, L), generator=g).to(device)
    attn = torch.ones((B, L), dtype=torch.long, device=device)
    resp = torch.zeros((B, L), dtype=torch.bool, device=device)
    resp[:, P:] = True

    def run(name):
        module = modules[name]
        module.zero_grad(set_to_none=True)
        return timed(lambda: module(ids, attn, resp, g).loss.backward(), device)

    return modules, run


def adaptation_figures(ckpt: Path, size: dict, device: torch.device) -> dict:
    """tokens/s per objective, and each objective's throughput over mdm's as the median of
    per-repetition ratios (the three steps of a repetition run back to back, so load from other
    processes hits both sides of a ratio alike; medians of separate timings do not pair them)."""
    objectives, run = adaptation_api_steps(ckpt, size, device)
    B, L = size["train_batch"], size["train_len"]
    times = {n: [] for n in objectives}
    for n in objectives:
        run(n)  # warm-up
    for _ in range(size["train_reps"]):
        for n in objectives:
            times[n].append(run(n))
    out: dict = {"batch": B, "seq_len": L, "prompt_len": L // 4, "tokens_per_step": B * L, "reps": size["train_reps"],
                 "note": "dslbench.training.objectives (the adaptation script's own objectives); loss+backward, no optimiser step"}
    for n in objectives:
        out[f"{n}_tokens_per_s"] = round(B * L / median(times[n]), 1)
    for n in ("dsl", "softmask"):
        out[f"{n}_over_mdm"] = round(median([m / t for m, t in zip(times["mdm"], times[n])]), 3)
    return out


def memory_figures(ckpts: dict, size: dict, device: torch.device) -> dict:
    """Peak memory of one generation per backend (overhead batch) and one step per objective.

    On CPU this runs in a child process with a fixed glibc mmap threshold (see PeakMemory)."""
    if device.type == "cpu" and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(256 * 1024)}
        spec = json.dumps({"ckpts": {k: str(v) for k, v in ckpts.items()}, "size": size})
        proc = subprocess.run([sys.executable, __file__, "--memory-child", spec], env=env,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
    out: dict = {}
    b, P = size["overhead_batch"], size["prompt_len"]
    for name in BACKENDS:
        be = load_backend(name, Path(ckpts[name]), size, device)
        opts = be.request_options({"until": [], "gen_length": size["gen_length"], "nfe": size["nfe"]})
        ctx = prompts(b, P, be.denoiser.vocab_size, seed=b)
        be._generate_batch(ctx, opts)
        with PeakMemory(device) as pm:
            be._generate_batch(ctx, opts)
        out[f"generate.{name}.b{b}"] = mib(pm.peak)
        del be
    try:
        objectives, run = adaptation_api_steps(Path(ckpts["mdm_llada"]), size, device)
    except ImportError:
        objectives, run = training_steps(Path(ckpts["mdm_llada"]), size, device)
    for n in objectives:
        run(n)
        with PeakMemory(device) as pm:
            run(n)
        out[f"train.{n}"] = mib(pm.peak)
    return out


# ------------------------------------------------------------------------------------------ table
def table(res: dict) -> str:
    s = res["sizes"]
    lines = [
        f"dslbench benchmark ({res['mode']}, {res['device']}, torch {res['torch']}, {res['threads']} threads)",
        f"model: d_model {s['d_model']}, {s['n_layers']} layers, {s['n_heads']} heads, mlp {s['mlp']}, vocab {res['vocab']}, "
        f"noise dim {s['noise_dim']}; prompt {s['prompt_len']} + gen {s['gen_length']} tokens, NFE {s['nfe']}",
        "",
        "| backend | overhead @b{0} | vs backbone only | fwd ms @b{0} | gen ms @b{0} | NFE | ".format(s["overhead_batch"])
        + " | ".join(f"samples/s b{b}" for b in s["batches"]) + " | peak MiB gen |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(s["batches"]) + "---:|",
    ]
    sm = res["sampler"]
    ob = s["overhead_batch"]
    for name in BACKENDS:
        row = [name, f"{sm['overhead'][f'{name}.b{ob}']:.3f}", f"{sm['overhead_vs_backbone'][f'{name}.b{ob}']:.3f}",
               f"{sm['forward_ms'][f'{name}.b{ob}']:.1f}",
               f"{sm['generate_ms'][f'{name}.b{ob}']:.1f}", str(sm["nfe"][f"{name}.b{ob}"])]
        row += [f"{sm['scaling'][f'{name}.b{b}']:.2f}" for b in s["batches"]]
        row.append(f"{res['memory'][f'generate.{name}.b{ob}']:.0f}")
        lines.append("| " + " | ".join(row) + " |")
    for name in CONTROL_VARIANTS:  # issue #17's controls (same checkpoint as mdm_llada; memory not measured)
        if f"{name}.b{ob}" not in sm["overhead"]:
            continue
        row = [name, f"{sm['overhead'][f'{name}.b{ob}']:.3f}", f"{sm['overhead_vs_backbone'][f'{name}.b{ob}']:.3f}",
               f"{sm['forward_ms'][f'{name}.b{ob}']:.1f}", f"{sm['generate_ms'][f'{name}.b{ob}']:.1f}",
               str(sm["nfe"][f"{name}.b{ob}"])]
        row += [f"{sm['scaling'][f'{name}.b{b}']:.2f}" for b in s["batches"]]
        lines.append("| " + " | ".join(row) + " | - |")
    br = sm.get("dsl_breakdown")
    if br:
        lines.append("(dsl_llada: one network evaluation = converter + backbone; 'vs backbone only' leaves the "
                     "converter out of the denominator.")
        lines.append(f" Per evaluation, as a share of one backbone forward: converter {100 * br['converter_over_backbone']:.1f}%, "
                     f"posterior mean over the top {br['topk']} of {br['vocab']} tokens {100 * br['posterior_top512_over_backbone']:.1f}% "
                     f"[over all tokens: {100 * br['posterior_dense_over_backbone']:.1f}%])")
    ss = res.get("sampler_summarization")
    if ss:
        sb = ss["batch"]
        per = ", ".join(f"{n} {ss['overhead'][f'{n}.b{sb}']:.3f}" for n in BACKENDS)
        lines.append(f"summarization-shaped canvas (prompt {ss['prompt_len']} + gen {ss['gen_length']} tokens, batch {sb}): "
                     f"overhead {per} (dsl_llada vs backbone only {ss['overhead_vs_backbone'][f'dsl_llada.b{sb}']:.3f})")
        h = ss.get("head_on_generated_only")
        if h:
            f8 = flops_forward_per_token(BIG["d_model"], BIG["n_layers"], BIG["mlp"], BIG["vocab"],
                                         ss["prompt_len"] + ss["gen_length"])
            skipped = ss["prompt_len"] * f8["head"] / ((ss["prompt_len"] + ss["gen_length"]) * f8["backbone"])
            lines.append(f" output head on the generated positions only (the samplers' logits_from): head "
                         f"{h['head_ms_whole_canvas']:.1f} -> {h['head_ms_generated']:.1f} ms, "
                         f"{-100 * h['saving']:+.1f}% of a {h['forward_ms']:.0f} ms forward "
                         f"(at LLaDA-8B shapes {-100 * skipped:+.1f}% of a forward's FLOPs)")
    c = res["converter"]
    lines += [
        "",
        f"DSL converter at the published shapes ({c['shapes']}; timed on {c['tokens_timed']} tokens, FLOPs at a 1024-token canvas):",
        f"| converter | ms | share of forward (timed) | share (FLOPs) | rel. error of h @SNR {' / '.join(f'{x:g}' for x in SPARSE_SNRS)} |",
        "|---|---:|---:|---:|---|",
        f"| dense | {c['timed_ms']['converter']:.1f} | {100 * c['share_timed']:.2f}% | {100 * c['share_flops']:.2f}% | exact |",
    ]
    for k in (64, 512):
        t = c[f"topk{k}"]
        e = t["rel_error"]
        lines.append(f"| top-{k} + uniform tail | {t['timed_ms']:.1f} | {100 * t['share_timed']:.2f}% | "
                     f"{100 * t['share_flops']:.3f}% | {' / '.join(f'{v:.4f}' for v in e.values())} |")
    pm = c["posterior_top512"]
    lines.append(f"| (sampler) top-512 posterior mean | {pm['timed_ms']:.1f} | {100 * pm['share_timed']:.2f}% | "
                 f"{100 * pm['share_flops']:.3f}% | - |")
    lines.append(f"(one LLaDA-8B layer {c['timed_ms']['layer']:.1f} ms, head {c['timed_ms']['head']:.1f} ms, "
                 f"32 layers + head {c['timed_ms']['forward_32_layers_plus_head']:.0f} ms; peak MiB converter "
                 f"{c['memory']['converter']:.0f}, layer+head {c['memory']['layer_plus_head']:.0f})")
    e = res["e2e"]
    lines += ["", f"lm-eval end to end, dsl_llada on {e['task']} ({e['samples']} docs, batch {e['batch_size']}):",
              "| run | samples/s | inside backend | outside backend | model load | lm-eval set-up + metrics | peak MiB |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for attempt in ("cold", "warm"):
        r = e[attempt]
        lines.append(f"| {attempt} | {r['samples_per_s']:.2f} | {r['samples_per_s_inside_backend']:.2f} | "
                     f"{100 * r['share_outside_backend']:.1f}% | {100 * r['share_model_load']:.1f}% | "
                     f"{100 * r['share_lm_eval_rest']:.1f}% | {r['memory']:.0f} |")
    a = res["adaptation"]
    lines += [
        "",
        f"adaptation, loss+backward (batch {a['batch']} x {a['seq_len']} tokens, prompt {a['prompt_len']}; {a['note'].split(';')[0]}):",
        "| objective | tokens/s | / mdm | peak MiB |",
        "|---|---:|---:|---:|",
        f"| mdm | {a['mdm_tokens_per_s']:.0f} | 1.000 | {res['memory']['train.mdm']:.0f} |",
        f"| dsl | {a['dsl_tokens_per_s']:.0f} | {a['dsl_over_mdm']:.3f} | {res['memory']['train.dsl']:.0f} |",
        f"| softmask (two passes) | {a['softmask_tokens_per_s']:.0f} | {a['softmask_over_mdm']:.3f} | {res['memory']['train.softmask']:.0f} |",
    ]
    g = res.get("sampler_diffusiongemma")
    if g:
        lines += ["", f"diffusiongemma (transformers' generate, stopping=none; tiny DiffusionGemma of the same width and depth, "
                      f"canvas {g['canvas_length']}): overhead @b{g['batch']} {g['overhead']:.3f} per network evaluation "
                      f"({g['nfe']} decoder evaluations at {g['decoder_ms_per_nfe']:.1f} ms + {g['encoder_passes']} encoder "
                      f"pass(es) at {g['encoder_ms_per_pass']:.1f} ms; vs decoder only {g['overhead_vs_decoder_only']:.3f})"]
    lines.append(f"\ntotal benchmark time {res['total_s']:.0f} s")
    return "\n".join(lines)


def write_json(res: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def flat_overheads(res: dict) -> dict:
    out = {f"sampler_overhead.{k}": v for k, v in res["sampler"]["overhead"].items()}
    out.update({f"sampler_overhead_summarization.{k}": v for k, v in res["sampler_summarization"]["overhead"].items()})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (under 3 minutes on 2 CPU cores)")
    ap.add_argument("--smoke", action="store_true", help="tiny CI sub-mode: every code path in seconds")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda")
    ap.add_argument("--out", default=None, help="JSON path (default results/bench/<mode>.json)")
    ap.add_argument("--only", default=None, help="comma list of parts: sampler,converter,e2e,adaptation,memory")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1 on CPU)")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child is not None:
        torch.set_num_threads(args.threads or 1)
        spec = json.loads(args.memory_child)
        print(json.dumps(memory_figures(spec["ckpts"], spec["size"], torch.device("cpu"))))
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import logging

    logging.disable(logging.WARNING)
    device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) else
                          ("cpu" if args.device == "auto" else args.device))
    mode = "smoke" if args.smoke else ("quick" if args.quick else "full")
    size = dict(SIZES[mode])
    if device.type == "cuda" and mode == "full":
        size.update(GPU_SIZES)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    elif args.threads:
        torch.set_num_threads(args.threads)
    parts = set((args.only or "sampler,converter,e2e,adaptation,memory,diffusiongemma").split(","))
    t_start = time.perf_counter()
    res: dict = {"mode": mode, "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
                 "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
                 "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in size.items()}}
    with tempfile.TemporaryDirectory(prefix="dslbench-bench-") as tmp:
        workdir = Path(tmp)
        ckpts = build_checkpoints(size, workdir, device)
        if "sampler" in parts:
            backends = {n: load_backend(n, ckpts[n], size, device) for n in BACKENDS}
            backends.update({v: load_backend("mdm_llada", ckpts["mdm_llada"], size, device, extra=a)
                             for v, a in CONTROL_VARIANTS.items()})
            res["vocab"] = backends["mdm_llada"].denoiser.vocab_size
            res["sampler"] = sampler_figures(backends, size, device)
            res["sampler_summarization"] = sampler_figures(backends, size, device, shape="summarization")
            del backends
            print("sampler figures done", f"{time.perf_counter() - t_start:.0f}s", file=sys.stderr)
        if "converter" in parts:
            res["converter"] = converter_figures(size, device)
            print("converter figures done", f"{time.perf_counter() - t_start:.0f}s", file=sys.stderr)
        if "e2e" in parts:
            res["e2e"] = e2e_figures(ckpts["dsl_llada"], size, device, workdir)
            print("e2e figures done", f"{time.perf_counter() - t_start:.0f}s", file=sys.stderr)
        if "adaptation" in parts:
            res["adaptation"] = adaptation_figures(ckpts["mdm_llada"], size, device)
            print("adaptation figures done", f"{time.perf_counter() - t_start:.0f}s", file=sys.stderr)
        if "memory" in parts:
            res["memory"] = memory_figures(ckpts, size, device)
        if "diffusiongemma" in parts:
            from diffusiongemma import diffusiongemma_figures  # benchmarks/diffusiongemma.py

            res["sampler_diffusiongemma"] = diffusiongemma_figures(ckpts["mdm_llada"], size, device, workdir, sync, timed, prompts)
            res[f"sampler_overhead.diffusiongemma.b{size['overhead_batch']}"] = res["sampler_diffusiongemma"]["overhead"]
    res["total_s"] = round(time.perf_counter() - t_start, 1)
    if "sampler" in res:
        res.update(flat_overheads(res))
    out = Path(args.out) if args.out else ROOT / "results" / "bench" / f"{mode}.json"
    write_json(res, out)
    if parts >= {"sampler", "converter", "e2e", "adaptation", "memory"}:
        print(table(res))
    else:
        print(json.dumps(res, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
