"""lm-eval end to end: ``simple_evaluate`` (through ``harness.run.evaluate_cell``) on
``dsl_summ_synth_16step`` with ``dsl_llada``: samples/s and the share of wall time spent outside
the backend's ``generate_until`` (model load, lm-eval's set-up and metrics), cold and warm."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from timing import PeakMemory, mib, sync


def _timed(fn, spent: dict, key: str, after=None):
    """``fn`` with its wall time added to ``spent[key]`` (``after`` runs before the clock stops)."""

    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            if after is not None:
                after()
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0

    return wrapper


def e2e_figures(ckpt: Path, size: dict, device: torch.device, workdir: Path) -> dict:
    """lm-eval end to end on ``dsl_summ_synth_16step`` (``limit`` documents, batch 8)."""
    from dslbench.harness import dsl_backend
    from dslbench.harness.base import DiffusionBackend
    from dslbench.harness.run import evaluate_cell

    spent = {"generate_until": 0.0, "sample": 0.0}
    orig_gen = DiffusionBackend.generate_until
    orig_sample = dsl_backend.DSLLLaDA._sample
    orig_init = dsl_backend.DSLLLaDA.__init__
    DiffusionBackend.generate_until = _timed(orig_gen, spent, "generate_until")
    dsl_backend.DSLLLaDA._sample = _timed(orig_sample, spent, "sample", after=lambda: sync(device))
    dsl_backend.DSLLLaDA.__init__ = _timed(orig_init, spent, "load")
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


def table_lines(res: dict) -> list[str]:
    e = res["e2e"]
    lines = [f"lm-eval end to end, dsl_llada on {e['task']} ({e['samples']} docs, batch {e['batch_size']}):",
             "| run | samples/s | inside backend | outside backend | model load | lm-eval set-up + metrics | peak MiB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for attempt in ("cold", "warm"):
        r = e[attempt]
        lines.append(f"| {attempt} | {r['samples_per_s']:.2f} | {r['samples_per_s_inside_backend']:.2f} | "
                     f"{100 * r['share_outside_backend']:.1f}% | {100 * r['share_model_load']:.1f}% | "
                     f"{100 * r['share_lm_eval_rest']:.1f}% | {r['memory']:.0f} |")
    return lines
