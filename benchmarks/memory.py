"""Peak memory growth of each workload: one generation per backend at the overhead batch and one
adaptation step per objective. On CPU the kernel's peak resident set (``VmHWM`` reset through
``/proc/self/clear_refs``) minus the RSS at its start, measured in a child process (this file run
as a script) whose large buffers are returned to the OS on free; on GPU
``torch.cuda.max_memory_allocated``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from adaptation_throughput import adaptation_steps
from timing import PeakMemory, mib
from workload import BACKENDS, load_backend, prompts


def memory_figures(ckpts: dict, size: dict, device: torch.device) -> dict:
    """Peak memory of one generation per backend (overhead batch) and one step per objective.

    On CPU this runs in a child process with a fixed glibc mmap threshold (see PeakMemory)."""
    if device.type == "cpu" and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(256 * 1024)}
        spec = json.dumps({"ckpts": {k: str(v) for k, v in ckpts.items()}, "size": size})
        proc = subprocess.run([sys.executable, __file__, spec], env=env,
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
    objectives, run = adaptation_steps(Path(ckpts["mdm_llada"]), size, device)
    for n in objectives:
        run(n)
        with PeakMemory(device) as pm:
            run(n)
        out[f"train.{n}"] = mib(pm.peak)
    return out


if __name__ == "__main__":  # the CPU child: python benchmarks/memory.py '{"ckpts": ..., "size": ...}'
    torch.set_num_threads(1)
    spec = json.loads(sys.argv[1])
    print(json.dumps(memory_figures(spec["ckpts"], spec["size"], torch.device("cpu"))))
