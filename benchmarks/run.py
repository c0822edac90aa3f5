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
- ``open_ended``: the open-ended tasks' evaluator (GenPPL pass, MAUVE, loading) as a share of
  an lm-eval cell's wall time on the tiny model, cold and warm (``open_ended_scoring.py``).
- ``adaptation``: tokens/s of one loss+backward step of the adaptation script's mdm, dsl and
  softmask objectives (:mod:`dslbench.training.objectives`), and the dsl / softmask throughput
  over mdm's as the median of paired per-repetition ratios.
- ``mdlm``: MDLM's cached ancestral sampler (``ddpm_cache``) against a re-implementation of the
  released loop on the same tiny MDLM-format DiT at batch 8: seconds, network calls and row
  evaluations side by side, token identity, speed-up (``mdlm_sampler.py``).
- ``memory``: peak memory growth of each workload: on CPU the kernel's peak resident set
  (``VmHWM`` reset through ``/proc/self/clear_refs``) minus the RSS at its start, measured in a
  child process whose large buffers are returned to the OS on free; on GPU
  ``torch.cuda.max_memory_allocated``.

Each figure family is its own file beside this one (``sampler_overhead.py``, which also gives
the batch scaling and times the few-step controls of ``few_step_controls.py``;
``summarization_canvas.py``, ``converter_share.py``, ``e2e_lm_eval.py``,
``adaptation_throughput.py``, ``memory.py``, ``diffusiongemma.py``), on the shared
``workload.py`` (sizes, checkpoints, backends) and ``timing.py`` (timers, JSON, table rows);
this file is the entry point: it runs the parts asked for and prints their tables.

On CPU the benchmark runs torch with one thread by default (``--threads``): on a shared machine
a two-thread OpenMP region stalls whenever either core is taken, which makes every ratio noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the figure modules beside this file, also when imported
import adaptation_throughput  # noqa: E402
import converter_share  # noqa: E402
import diffusiongemma  # noqa: E402
import e2e_lm_eval  # noqa: E402
import few_step_controls  # noqa: E402
import mdlm_sampler  # noqa: E402
import memory  # noqa: E402
import open_ended_scoring  # noqa: E402
import sampler_overhead  # noqa: E402
import summarization_canvas  # noqa: E402
from timing import write_json  # noqa: E402
from workload import BACKENDS, GPU_SIZES, SIZES, build_checkpoints, load_backend  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def table(res: dict) -> str:
    """The markdown report of a full run: every family's table, in the order of the figures."""
    s = res["sizes"]
    lines = [
        f"dslbench benchmark ({res['mode']}, {res['device']}, torch {res['torch']}, {res['threads']} threads)",
        f"model: d_model {s['d_model']}, {s['n_layers']} layers, {s['n_heads']} heads, mlp {s['mlp']}, vocab {res['vocab']}, "
        f"noise dim {s['noise_dim']}; prompt {s['prompt_len']} + gen {s['gen_length']} tokens, NFE {s['nfe']}",
        "",
    ]
    lines += sampler_overhead.table_lines(res) + summarization_canvas.table_lines(res)
    lines += [""] + converter_share.table_lines(res)
    lines += [""] + e2e_lm_eval.table_lines(res) + open_ended_scoring.table_lines(res)
    lines += [""] + adaptation_throughput.table_lines(res)
    lines += diffusiongemma.table_lines(res)
    lines += [""] + mdlm_sampler.table_lines(res)
    lines.append(f"\ntotal benchmark time {res['total_s']:.0f} s")
    return "\n".join(lines)


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
    ap.add_argument("--only", default=None, help="comma list of parts: sampler,converter,e2e,open_ended,adaptation,memory,diffusiongemma,mdlm")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1 on CPU)")
    args = ap.parse_args(argv)
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
    parts = set((args.only or "sampler,converter,e2e,open_ended,adaptation,memory,diffusiongemma,mdlm").split(","))
    t_start = time.perf_counter()
    res: dict = {"mode": mode, "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
                 "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
                 "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in size.items()}}
    with tempfile.TemporaryDirectory(prefix="dslbench-bench-") as tmp:
        workdir = Path(tmp)
        ckpts = build_checkpoints(size, workdir, device)
        if "sampler" in parts:
            backends = {n: load_backend(n, ckpts[n], size, device) for n in BACKENDS}
            backends.update(few_step_controls.load_controls(ckpts["mdm_llada"], size, device))
            res["vocab"] = backends["mdm_llada"].denoiser.vocab_size
            res["sampler"] = sampler_overhead.sampler_figures(backends, size, device)
            res["sampler_summarization"] = summarization_canvas.summarization_figures(backends, size, device)
            del backends
            print("sampler figures done", f"{time.perf_counter() - t_start:.0f}s", file=sys.stderr)
        if "converter" in parts:
            res["converter"] = converter_share.converter_figures(size, device)
            print("converter figures done", f"{time.perf_counter() - t_start:.0f}s", file=sys.stderr)
        if "e2e" in parts:
            res["e2e"] = e2e_lm_eval.e2e_figures(ckpts["dsl_llada"], size, device, workdir)
            print("e2e figures done", f"{time.perf_counter() - t_start:.0f}s", file=sys.stderr)
        if "open_ended" in parts:
            res["open_ended"] = open_ended_scoring.open_ended_figures(ckpts["mdm_llada"], size, device, workdir)
            print("open-ended figures done", f"{time.perf_counter() - t_start:.0f}s", file=sys.stderr)
        if "adaptation" in parts:
            res["adaptation"] = adaptation_throughput.adaptation_figures(ckpts["mdm_llada"], size, device)
            print("adaptation figures done", f"{time.perf_counter() - t_start:.0f}s", file=sys.stderr)
        if "memory" in parts:
            res["memory"] = memory.memory_figures(ckpts, size, device)
        if "diffusiongemma" in parts:
            res["sampler_diffusiongemma"] = diffusiongemma.diffusiongemma_figures(ckpts["mdm_llada"], size, device, workdir)
            for draw in ("all", "accepted"):
                key = "diffusiongemma" if draw == "all" else "diffusiongemma+accepted"
                res[f"sampler_overhead.{key}.b{size['overhead_batch']}"] = res["sampler_diffusiongemma"][draw]["overhead"]
        if "mdlm" in parts:
            res["mdlm"] = mdlm_sampler.mdlm_figures(mode, device, workdir)
            print("mdlm figures done", f"{time.perf_counter() - t_start:.0f}s", file=sys.stderr)
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
