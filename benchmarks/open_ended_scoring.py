"""The open-ended tasks' evaluator cost: lm-eval ``simple_evaluate`` (through
``harness.run.evaluate_cell``) of ``dsl_gen_synth_16step`` (64 tokens, MAUVE) and
``dsl_gen_16step`` (the released prompts, 256 tokens) with ``mdm_llada`` on the benchmark's tiny
model, scored by the tiny GPT-2 evaluator (``make-tiny --family gpt2``).

Per cell: wall time, and the share spent in the evaluator: loading it, the filter's batched
GenPPL pass and the MAUVE aggregation (features + mauve-text). ``cold`` is the first cell of the
process (the evaluator is loaded), ``warm`` a second one (loaded once per process, reused). Also
the batched scoring pass against one text at a time on the same texts (``batching_speedup``).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from e2e_lm_eval import _timed

TASKS = ("dsl_gen_synth_16step", "dsl_gen_16step")


def open_ended_figures(ckpt: Path, size: dict, device: torch.device, workdir: Path) -> dict:
    from dslbench.harness.run import evaluate_cell
    from dslbench.metrics import evaluator as ev
    from dslbench.models.tiny_evaluator import make_tiny_gpt2

    scorer = make_tiny_gpt2(workdir / "evaluator-gpt2", seed=0)
    spent: dict = {}
    # lm-eval executes the tasks' gen_utils.py afresh for each YAML, so the evaluator's own entry
    # points are timed (the filter's pass is Evaluator.score; the MAUVE aggregation released_mauve)
    patches = [(ev.Evaluator, "score", "genppl"), (ev, "released_mauve", "mauve"), (ev, "load_evaluator", "load")]
    originals = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, key in patches:
        setattr(obj, name, _timed(getattr(obj, name), spent, key))
    ev._cache.clear()
    limit = size["open_ended_limit"]
    out: dict = {"limit": limit, "batch_size": 8, "evaluator": "tiny GPT-2 (make-tiny --family gpt2)"}
    try:
        for task in TASKS:
            for attempt in ("cold", "warm"):
                if attempt == "cold":
                    ev._cache.clear()
                spent.clear()
                t0 = time.perf_counter()
                evaluate_cell("mdm_llada", {"pretrained": str(ckpt), "batch_size": 8, "device": str(device)},
                              [task], workdir / f"gen-{task}-{attempt}", limit=limit, force=True,
                              metadata={"ppl_model": str(scorer)})
                total = time.perf_counter() - t0
                scoring = sum(spent.values())
                out.setdefault(task, {})[attempt] = {
                    "wall_s": round(total, 2),
                    "evaluator_s": round(scoring, 3),
                    "evaluator_share": round(scoring / total, 3),
                    **{f"{k}_s": round(v, 3) for k, v in sorted(spent.items())},
                }
    finally:
        for obj, name, fn in originals:
            setattr(obj, name, fn)
    out["batching_speedup"] = _batching_speedup(ev.load_evaluator(str(scorer), device=device), limit)
    out["evaluator_share"] = max(out[t]["warm"]["evaluator_share"] for t in TASKS)
    return out


def _batching_speedup(evaluator, n: int) -> float:
    from dslbench.data.open_ended import synth_prefixes

    texts = [r["continuation"] for r in synth_prefixes(max(n, 16), seed=7)]
    best = {}
    for _ in range(3):  # interleaved repetitions, best of each
        for bs in (1, 16):
            t0 = time.perf_counter()
            evaluator.score(texts, batch_size=bs)
            best[bs] = min(best.get(bs, float("inf")), time.perf_counter() - t0)
    return round(best[1] / best[16], 2)


def table_lines(res: dict) -> list[str]:
    if "open_ended" not in res:
        return []
    r = res["open_ended"]
    lines = ["", f"open-ended scoring ({r['evaluator']}, limit {r['limit']}, batch {r['batch_size']}): "
                 "evaluator share of a cell's wall time (goal <= 0.10 warm)",
             "| task | cold wall s | cold share | warm wall s | warm share |", "|---|---|---|---|---|"]
    for task in TASKS:
        c, w = r[task]["cold"], r[task]["warm"]
        lines.append(f"| {task} | {c['wall_s']} | {c['evaluator_share']} | {w['wall_s']} | {w['evaluator_share']} |")
    lines.append(f"batched GenPPL scoring (16 a batch) vs one text at a time: {r['batching_speedup']}x faster")
    return lines
