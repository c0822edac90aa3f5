"""Choose the demo's few-step unmasking control (issue #17) on documents the demo never scores.

    python benchmarks/sweep_controls.py --ckpt OUT/models/mdm-<hash> [--docs 32] [--out sweep.csv]

Runs every candidate (orders, threshold values, EB budgets) of ``mdm_llada`` on the control
checkpoint at NFE 8 and 16, on synthetic documents of the ``validation`` draw (the demo's tasks
score the seed-42 ``test`` draw, training reads its own draw), and ranks the candidates by their
mean ROUGE-1 over the two budgets. Measured NFE per sample is reported beside it: adaptive rules
may stop before the budget. Prints a table and writes it as CSV with ``--out``.
"""

from __future__ import annotations

import argparse
import itertools

import pandas as pd

from dslbench.data.prompts import SYNTH_INSTRUCTION, summarization_prompt
from dslbench.data.synth import make_summarization_examples
from dslbench.harness.mdm_backend import MDMLLaDA
from dslbench.metrics.sample_stats import split_stats
from dslbench.metrics.rouge import rouge

# name -> mdm_llada args (the fixed low-confidence schedule is the reference)
CANDIDATES = {
    "low_confidence (LLaDA)": {},
    "entropy order": {"remasking": "entropy"},
    "margin order": {"remasking": "margin"},
    **{f"threshold {t}": {"parallel": "threshold", "threshold": t} for t in (0.5, 0.7, 0.9)},
    **{f"EB entropy gamma={g}": {"parallel": "eb", "remasking": "entropy", "eb_gamma": g} for g in (0.1, 1.0, 3.0)},
    **{f"EB margin gamma={g}": {"parallel": "eb", "remasking": "margin", "eb_gamma": g} for g in (1.0,)},
}
BUDGETS = (8, 16)


class _Req:
    def __init__(self, context: str, gen_kwargs: dict) -> None:
        self.args = (context, gen_kwargs)


def sweep(ckpt: str, docs: int = 32, seed: int = 0) -> pd.DataFrame:
    rows = make_summarization_examples(docs, seed=42, split="validation")
    backend = MDMLLaDA.create_from_arg_string(f"pretrained={ckpt},seed={seed},batch_size=8")
    prompts = [summarization_prompt(SYNTH_INSTRUCTION, r["document"]) for r in rows]
    out = []
    for (name, args), nfe in itertools.product(CANDIDATES.items(), BUDGETS):
        gk = {"until": [], "nfe": nfe, "gen_length": 64, "return_stats": True, **args}
        results = backend.generate_until([_Req(p, gk) for p in prompts], disable_tqdm=True)
        scores, calls = [], []
        for text_stats, row in zip(results, rows):
            text, stats = split_stats(text_stats)
            scores.append(rouge(text, row["summary"])["rouge1"])
            calls.append(stats["nfe"])
        out.append({"control": name, "nfe_budget": nfe, "rouge1": sum(scores) / len(scores),
                    "measured_nfe": sum(calls) / len(calls)})
    table = pd.DataFrame(out)
    mean = table.groupby("control", sort=False)["rouge1"].mean().rename("rouge1_mean_8_16")
    return table.merge(mean, on="control").sort_values(["rouge1_mean_8_16", "nfe_budget"], ascending=[False, True])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", required=True, help="the control checkpoint (the demo's OUT/models/mdm-<hash>)")
    ap.add_argument("--docs", type=int, default=32)
    ap.add_argument("--out", default=None, help="write the table as CSV here")
    a = ap.parse_args(argv)
    table = sweep(a.ckpt, a.docs)
    with pd.option_context("display.width", 200, "display.max_rows", None):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if a.out:
        table.to_csv(a.out, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
