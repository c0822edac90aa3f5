"""MDLM's cached ancestral sampler: dslbench's against a re-implementation of the released loop.

Both run on the same tiny MDLM-format DiT (``make_tiny --family mdlm``, the same weights and the
same network module), batch 8, unconditional (an all-mask canvas of ``length``), the same
generator seed: the released loop is ``tests/mdlm_reference.py``'s ``ReleasedSampler`` (full
``[B, L, V]`` tensors, the batch-level cache of kuleshov-group/remdm ``_ddpm_caching_update``),
dslbench's is :func:`dslbench.diffusion.mdlm_sampler.mdlm_generate` with ``cache=batch`` (the
release's calls, the same tokens) and ``cache=row`` (only rows that changed run). Reported side
by side: median seconds over interleaved repetitions, network calls (``calls``) and row
evaluations per sample (``rows``: the calls each row went through), whether the tokens equal
the release's, and the speed-up (released seconds / dslbench seconds). The network's own time
is timed by hooks on the model in every run: both samplers call the same module, and with the
exact cache the same number of times, so the whole-run speed-up is bounded by the network's
share; *outside the network* compares the seconds each sampler spends elsewhere.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from timing import sync

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BATCH = 8
# (canvas length, step counts T): T = L, and T = 4L where the cache matters (the ReMDM scripts
# sample 1024 tokens in up to 4096 steps)
SHAPES = {"smoke": (16, (16,)), "quick": (128, (128, 512)), "full": (256, (256, 1024))}
NUCLEUS = (1.0, 0.9)  # MDLM's default and the ReMDM scripts' top-p


def mdlm_figures(mode: str, device: torch.device, workdir: Path, reps: int | None = None) -> dict:
    from dslbench.diffusion.denoiser import ModelDenoiser
    from dslbench.diffusion.mdlm_sampler import mdlm_generate
    from dslbench.models.loading import load_model
    from dslbench.models.tiny import make_tiny
    from tests.mdlm_reference import ReleasedSampler

    length, step_counts = SHAPES[mode]
    reps = reps or (1 if mode == "smoke" else 3)
    path = make_tiny(workdir / "tiny-mdlm", seed=0, family="mdlm")
    model, _, info = load_model(str(path), dtype="float32", device=str(device))
    empty = torch.zeros((BATCH, 0), dtype=torch.long, device=device)

    def generator():
        return torch.Generator(device=device).manual_seed(1)

    def released(steps, p):
        ref = ReleasedSampler(lambda ids: model(input_ids=ids).logits, info.mask_id, nucleus_p=p, generator=generator())
        tokens = ref.sample(BATCH, length, steps, device=device)
        return tokens, ref.calls, float(ref.calls)

    def ours(steps, p, cache):
        seam = ModelDenoiser(model, mask_id=info.mask_id, eos_id=info.eos_id, eos_ids=info.eos_ids,
                             vocab_size=info.vocab_size)
        out = mdlm_generate(seam, empty, gen_length=length, steps=steps, nucleus_p=p, cache=cache, generator=generator())
        return out.tokens, out.nfe, sum(out.row_nfe) / BATCH

    runs = {"released": released, "batch": lambda s, p: ours(s, p, "batch"), "row": lambda s, p: ours(s, p, "row")}
    network = [0.0]  # seconds inside the model's forward calls, since the last reset

    def before(*_):
        sync(device)
        network.append(time.perf_counter())

    def after(*_):
        sync(device)
        network[0] += time.perf_counter() - network.pop()

    hooks = [model.register_forward_pre_hook(before), model.register_forward_hook(after)]
    cases = {}
    with torch.no_grad():
        for steps in step_counts:
            for p in NUCLEUS:
                seconds: dict[str, list[float]] = {name: [] for name in runs}
                inside: dict[str, list[float]] = {name: [] for name in runs}
                result = {}
                for _ in range(reps):  # interleaved: load from other processes hits all three alike
                    for name, run in runs.items():
                        sync(device)
                        network[0] = 0.0
                        start = time.perf_counter()
                        result[name] = run(steps, p)
                        sync(device)
                        seconds[name].append(time.perf_counter() - start)
                        inside[name].append(network[0])
                med = {name: statistics.median(v) for name, v in seconds.items()}
                # per repetition, then the median: the time each sampler spends outside the network
                outside = {name: statistics.median(t - n for t, n in zip(seconds[name], inside[name])) for name in runs}
                cases[f"T{steps}.p{p}"] = {
                    "steps": steps, "nucleus_p": p,
                    **{f"seconds.{n}": round(v, 4) for n, v in med.items()},
                    **{f"calls.{n}": result[n][1] for n in runs},
                    **{f"rows.{n}": round(result[n][2], 1) for n in runs},
                    "same_tokens.batch": bool(torch.equal(result["batch"][0], result["released"][0])),
                    "same_tokens.row": bool(torch.equal(result["row"][0], result["released"][0])),
                    "speedup.batch": round(med["released"] / med["batch"], 2),
                    "speedup.row": round(med["released"] / med["row"], 2),
                    **{f"network_seconds.{n}": round(statistics.median(v), 4) for n, v in inside.items()},
                    "speedup_outside.batch": round(outside["released"] / outside["batch"], 2),
                    "speedup_outside.row": round(outside["released"] / outside["row"], 2),
                }
    for hook in hooks:
        hook.remove()
    return {"batch": BATCH, "length": length, "vocab": info.vocab_size, "reps": reps,
            "model": {k: getattr(model.config, k) for k in ("hidden_dim", "n_blocks", "n_heads", "cond_dim")},
            "cases": cases}


def table_lines(res: dict) -> list[str]:
    if "mdlm" not in res:
        return []
    r = res["mdlm"]
    m = r["model"]
    lines = [
        f"MDLM ddpm_cache sampler vs the released loop (tiny DiT hidden {m['hidden_dim']}, {m['n_blocks']} blocks, "
        f"vocab {r['vocab']}; batch {r['batch']}, length {r['length']}, unconditional; median of {r['reps']})",
        "",
        "| T | top-p | released s (network) | calls | dslbench batch s (network) | calls | same tokens | speed-up | outside network "
        "| dslbench row s (network) | rows/sample | same tokens | speed-up | outside network |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in r["cases"].values():
        lines.append(
            f"| {c['steps']} | {c['nucleus_p']} | {c['seconds.released']:.2f} ({c['network_seconds.released']:.2f}) | "
            f"{c['calls.released']} | {c['seconds.batch']:.2f} ({c['network_seconds.batch']:.2f}) | {c['calls.batch']} | "
            f"{c['same_tokens.batch']} | {c['speedup.batch']:.2f}x | {c['speedup_outside.batch']:.2f}x | "
            f"{c['seconds.row']:.2f} ({c['network_seconds.row']:.2f}) | {c['rows.row']:.1f} | {c['same_tokens.row']} | "
            f"{c['speedup.row']:.2f}x | {c['speedup_outside.row']:.2f}x |"
        )
    return lines
