"""Adaptation throughput: tokens/s of one loss+backward step of the adaptation script's mdm, dsl
and softmask objectives (:mod:`dslbench.training.objectives`), and the dsl / softmask throughput
over mdm's as the median of paired per-repetition ratios."""

from __future__ import annotations

from pathlib import Path

import torch

from timing import median, timed


def adaptation_steps(ckpt: Path, size: dict, device: torch.device):
    """``(modules, run)``: the three objectives' modules through the adaptation script's own
    objectives (:mod:`dslbench.training.objectives`: ``make_objective``, ``AdaptModule``), and
    ``run(name)`` = seconds of one loss+backward step. softmask runs its two-pass step on every
    batch (``softmask_prob=1``)."""
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
    objectives, run = adaptation_steps(ckpt, size, device)
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


def table_lines(res: dict) -> list[str]:
    a, m = res["adaptation"], res["memory"]
    return [
        f"adaptation, loss+backward (batch {a['batch']} x {a['seq_len']} tokens, prompt {a['prompt_len']}; {a['note'].split(';')[0]}):",
        "| objective | tokens/s | / mdm | peak MiB |",
        "|---|---:|---:|---:|",
        f"| mdm | {a['mdm_tokens_per_s']:.0f} | 1.000 | {m['train.mdm']:.0f} |",
        f"| dsl | {a['dsl_tokens_per_s']:.0f} | {a['dsl_over_mdm']:.3f} | {m['train.dsl']:.0f} |",
        f"| softmask (two passes) | {a['softmask_tokens_per_s']:.0f} | {a['softmask_over_mdm']:.3f} | {m['train.softmask']:.0f} |",
    ]
