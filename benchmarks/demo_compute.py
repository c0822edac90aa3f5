#!/usr/bin/env python
"""Training compute of the demo's rows: ``python benchmarks/demo_compute.py [--preset demo] [--reps 5]``.

What "equal compute" means for the demo's from-scratch DiffusionGemma row, counted rather than
assumed: one training step (loss + backward, the adaptation script's own objectives with the
demo's options, on the demo's first synthetic batches) of each stage, on randomly initialised
models of the preset's sizes (FLOPs do not depend on the weights):

- ``pretrain`` (mdm, head trained) and the three adaptations ``mdm`` / ``dsl`` / ``softmask`` on
  the tiny LLaDA-format backbone;
- ``uniform`` on the tiny DiffusionGemma of the same width and depth (its encoder reads prompt +
  response, its decoder the canvas, twice for the self-conditioned share).

Per step: FLOPs (:mod:`dslbench.training.flops`, torch's ``FlopCounterMode``) and the median wall
time. Per row: the FLOPs of its whole training (base pre-training + its adaptation; the
DiffusionGemma row's own steps) over the control's, and the DiffusionGemma steps whose FLOPs equal
the control's (the demo preset's ``diffusiongemma_steps``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helpers
from timing import median, timed  # noqa: E402


def step_seconds(cfg, objective: str, checkpoint: Path, reps: int, **options) -> float:
    """Median wall time of one loss + backward step on the demo's first micro-batches."""
    from dslbench.demo import demo_training_step

    module, data = demo_training_step(cfg, objective, checkpoint, **options)

    def step(k: int) -> None:
        b = data.micro_batch(k)
        module.zero_grad(set_to_none=True)
        module(b.input_ids, b.attention_mask, b.response_mask, torch.Generator().manual_seed(k)).loss.backward()

    step(0)  # warm-up
    return median([timed(lambda k=k: step(k), torch.device("cpu")) for k in range(reps)])


def main(argv=None) -> int:
    from transformers import PreTrainedTokenizerFast

    from dslbench.demo import DG_OPTIONS, PRESETS, PRETRAIN_OPTIONS, demo_step_flops, diffusiongemma_steps
    from dslbench.models.diffusiongemma import make_tiny_diffusiongemma
    from dslbench.models.tiny import make_tiny

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="demo", choices=list(PRESETS))
    ap.add_argument("--reps", type=int, default=5, help="micro-batches counted and timed per stage")
    args = ap.parse_args(argv)
    cfg = replace(PRESETS[args.preset])
    stages = {"pretrain": ("mdm", PRETRAIN_OPTIONS)}
    stages.update({o: (o, cfg.adapt_options.get(o, {})) for o in cfg.objectives})
    stages["uniform"] = ("uniform", DG_OPTIONS)
    cost = {}
    with tempfile.TemporaryDirectory() as tmp:
        llada, dg = Path(tmp) / "llada", Path(tmp) / "dg"
        make_tiny(llada, seed=cfg.seed, d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
                  mlp_hidden_size=cfg.mlp_hidden_size)
        make_tiny_diffusiongemma(dg, PreTrainedTokenizerFast.from_pretrained(str(llada)), seed=cfg.seed,
                                 hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, canvas_length=cfg.response_len)
        for name, (objective, options) in stages.items():
            ckpt = dg if objective == "uniform" else llada
            cost[name] = (demo_step_flops(cfg, objective, ckpt, args.reps, **options),
                          step_seconds(cfg, objective, ckpt, args.reps, **options))
    P, A, G = cfg.pretrain_steps, cfg.adapt_steps, diffusiongemma_steps(cfg)
    rows = {o: (f"{P} + {A}", P * cost["pretrain"][0] + A * cost[o][0]) for o in cfg.objectives}
    rows["uniform"] = (f"{G}", G * cost["uniform"][0])
    control = rows["mdm"][1]
    print(f"preset {args.preset}: d_model {cfg.d_model}, {cfg.n_layers} layers, batch {cfg.batch_size}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print("| stage | GFLOP / step | / pretrain | s / step | / pretrain | steps of the row | row GFLOP | / control |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (flops, secs) in cost.items():
        steps, total = rows.get(name, ("", None))
        tail = f"{steps} | {total / 1e9:.0f} | {total / control:.2f}" if total else " | | "
        print(f"| {name} | {flops / 1e9:.2f} | {flops / cost['pretrain'][0]:.2f} | {secs:.3f} | "
              f"{secs / cost['pretrain'][1]:.2f} | {tail} |")
    print(f"DiffusionGemma steps with the control's training FLOPs: {control / cost['uniform'][0]:.1f} "
          f"(the preset trains {G})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
