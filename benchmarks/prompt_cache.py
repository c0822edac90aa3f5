#!/usr/bin/env python
"""Prompt-cache benchmark: ``python benchmarks/prompt_cache.py [--quick | --smoke] [--out PATH]``.

The optional approximate prompt cache (model arg ``prompt_cache=true``,
:mod:`dslbench.diffusion.prompt_cache`) trades exactness for speed: after the first call of a
generation the prompt's keys / values are reused, so the prompt no longer sees the evolving
span. This script measures both sides, each cached run next to its uncached twin:

- ``speed``: wall time of one generation batch through the backend's own ``_generate_batch``
  (``mdm_llada``, ``dsl_llada``), cache off vs on, at a long and a shorter prompt, on a randomly
  initialised LLaDA-format model (timing does not depend on the weights). Repetitions are
  interleaved (off/on, then on/off), figures are medians; ``speedup`` = median off / median on,
  ``speedup_paired`` = the median of per-repetition ratios. NFE is read from the seam's counter.
- ``quality``: the same backends' trained tiny models (``dslbench demo`` / ``regress`` preset,
  built or reused under ``--models-dir``) on the synthetic summarization task's documents and
  generation settings (``dsl_summ_synth_16step``: NFE 16, 64 tokens): ROUGE-1/2/L of each
  variant, and ``agree`` = the share of generated-span tokens equal to the uncached output at
  the same position (``exact`` = share of identical outputs).

Results go to ``results/bench/prompt_cache[_<mode>].json`` (atomically); a markdown table is
printed. Torch runs on one thread on CPU, as in ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from timing import median, write_json  # noqa: E402  (the benchmarks' shared helpers)
from workload import build_checkpoints, prompts  # noqa: E402

MODES = {
    # speed model (d_model, layers, heads, mlp hidden, DSL noise dim), (prompt, gen) shapes, batch, NFE,
    # repetitions; quality: demo preset, documents, refresh variants besides 0
    "full": dict(d_model=256, n_layers=4, n_heads=4, mlp=688, noise_dim=100, shapes=((512, 128), (128, 128)),
                 batch=8, nfe=16, reps=5, preset="demo", docs=32, refresh=(4,)),
    "quick": dict(d_model=128, n_layers=2, n_heads=4, mlp=352, noise_dim=100, shapes=((512, 128), (128, 128)),
                  batch=8, nfe=16, reps=3, preset="regress", docs=16, refresh=(4,)),
    # CI smoke: every code path in seconds; figures meaningless
    "smoke": dict(d_model=32, n_layers=2, n_heads=4, mlp=64, noise_dim=16, shapes=((24, 8),),
                  batch=2, nfe=4, reps=1, preset="smoke", docs=2, refresh=(2,)),
}
SPEED_BACKENDS = ("mdm_llada", "dsl_llada")
# backend -> the demo model it is evaluated on
QUALITY_MODELS = {"mdm_llada": "mdm", "softmask_llada": "softmask", "dsl_llada": "dsl"}


def make_backend(name: str, ckpt: Path, batch: int, **args):
    from dslbench.harness.dsl_backend import DSLLLaDA
    from dslbench.harness.mdm_backend import MDMLLaDA
    from dslbench.harness.softmask_backend import SoftMaskLLaDA

    cls = {"mdm_llada": MDMLLaDA, "softmask_llada": SoftMaskLLaDA, "dsl_llada": DSLLLaDA}[name]
    return cls.create_from_arg_obj({"pretrained": str(ckpt), "device": "cpu", "batch_size": batch, **args})


def keep_tokens(backend) -> dict:
    """Make ``backend`` keep its last generated token ids (the backend returns text only)."""
    store: dict = {}
    sample = backend._sample

    def kept(*args, **kwargs):
        result = sample(*args, **kwargs)
        store["tokens"] = result.tokens.cpu()
        return result

    backend._sample = kept
    return store


def run_batch(backend, contexts: list[list[int]], gen_kwargs: dict):
    """One generation batch through the backend's own path: (seconds, [(text, stats)])."""
    from dslbench.metrics.sample_stats import split_stats

    opts = backend.request_options(gen_kwargs)
    t0 = time.perf_counter()
    texts = backend._generate_batch(contexts, opts)
    return time.perf_counter() - t0, [split_stats(t) for t in texts]


# ------------------------------------------------------------------------------------------ speed
def speed_figures(mode: dict, workdir: Path) -> dict:
    ckpts = build_checkpoints(mode, workdir, torch.device("cpu"))
    out = {}
    jobs = [(b, p, g) for b in SPEED_BACKENDS for p, g in mode["shapes"]]
    with tqdm(total=len(jobs) * mode["reps"] * 2, desc="speed", file=sys.stderr) as bar:
        for name, prompt_len, gen_len in jobs:
            variants = {flag: make_backend(name, ckpts[name], mode["batch"], prompt_cache=flag) for flag in (False, True)}
            vocab = variants[False].denoiser.vocab_size
            contexts = prompts(mode["batch"], prompt_len, vocab)
            gk = {"nfe": mode["nfe"], "gen_length": gen_len, "return_stats": True, "until": []}
            for backend in variants.values():  # warm-up, untimed
                run_batch(backend, contexts, gk)
            times: dict[bool, list[float]] = {False: [], True: []}
            stats = {}
            for rep in range(mode["reps"]):
                for flag in ((False, True) if rep % 2 == 0 else (True, False)):
                    seconds, rows = run_batch(variants[flag], contexts, gk)
                    times[flag].append(seconds)
                    stats[flag] = rows[0][1]
                    bar.update(1)
            ratios = [off / on for off, on in zip(times[False], times[True])]
            out[f"{name}.p{prompt_len}.g{gen_len}"] = {
                "backend": name, "prompt_len": prompt_len, "gen_length": gen_len, "batch": mode["batch"],
                "off_s": median(times[False]), "on_s": median(times[True]),
                "speedup": median(times[False]) / median(times[True]), "speedup_paired": median(ratios),
                "nfe_off": stats[False]["nfe"], "nfe_on": stats[True]["nfe"],
                "full_calls": stats[True]["prompt_cache_full_calls"], "cached_calls": stats[True]["prompt_cache_cached_calls"],
            }
    return out


# ------------------------------------------------------------------------------------------ quality
def quality_figures(mode: dict, models_dir: Path) -> dict:
    from dslbench.data.prompts import SYNTH_INSTRUCTION, summarization_prompt
    from dslbench.data.synth import make_summarization_examples
    from dslbench.demo import PRESETS, build_models
    from dslbench.metrics.rouge import rouge

    cfg = PRESETS[mode["preset"]]
    paths = build_models(cfg, models_dir, log=lambda msg: print(msg, file=sys.stderr))
    docs = make_summarization_examples(mode["docs"], seed=42, split="test")  # the task's test draw
    nfe = 16 if mode["preset"] != "smoke" else mode["nfe"]
    gk = {"nfe": nfe, "gen_length": cfg.response_len, "return_stats": True, "until": []}  # dsl_summ_synth_16step
    variants = {"off": {}, "on": {"prompt_cache": True}}
    variants.update({f"on_refresh{n}": {"prompt_cache": True, "prompt_cache_refresh": n} for n in mode["refresh"]})
    out = {}
    batch = mode["batch"]
    starts = range(0, len(docs), batch)
    with tqdm(total=len(QUALITY_MODELS) * len(starts) * len(variants), desc="quality", file=sys.stderr) as bar:
        for name, model_key in QUALITY_MODELS.items():
            backends = {v: make_backend(name, paths[model_key], batch, seed=cfg.seed, **a) for v, a in variants.items()}
            kept = {v: keep_tokens(b) for v, b in backends.items()}
            acc = {v: {"rouge1": [], "rouge2": [], "rougeL": [], "agree": [], "exact": [], "seconds": 0.0, "nfe": set()}
                   for v in variants}
            prompt_lens = []
            for start in starts:
                chunk = docs[start:start + batch]
                texts = [summarization_prompt(SYNTH_INSTRUCTION, d["document"]) for d in chunk]
                contexts = [backends["off"]._encode_context(t) for t in texts]
                prompt_lens += [len(c) for c in contexts]
                reference_tokens = None
                for v, backend in backends.items():
                    seconds, rows = run_batch(backend, contexts, gk)
                    tokens = kept[v]["tokens"]
                    reference_tokens = tokens if v == "off" else reference_tokens
                    a = acc[v]
                    a["seconds"] += seconds
                    for (text, stats), doc, row, ref_row in zip(rows, chunk, tokens, reference_tokens):
                        scores = rouge(text, doc["summary"])
                        for metric in ("rouge1", "rouge2", "rougeL"):
                            a[metric].append(scores[metric])
                        a["agree"].append(float((row == ref_row).float().mean()))
                        a["exact"].append(float(torch.equal(row, ref_row)))
                        a["nfe"].add(stats["nfe"])
                    bar.update(1)
            mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
            out[name] = {
                "model": paths[model_key].name, "docs": len(docs), "nfe": nfe, "gen_length": gk["gen_length"],
                "prompt_tokens_mean": mean(prompt_lens),
                **{v: {**{m: mean(a[m]) for m in ("rouge1", "rouge2", "rougeL", "agree", "exact")},
                       "seconds": a["seconds"], "nfe": sorted(a["nfe"])} for v, a in acc.items()},
            }
    return out


# ------------------------------------------------------------------------------------------ output
def table(res: dict) -> str:
    lines = ["### Speed: one generation batch, cache off vs on (medians, interleaved)", "",
             "| backend | prompt + gen | batch | NFE off / on | off s | on s | speed-up (paired) | full / cached calls |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["speed"].values():
        lines.append(
            f"| {r['backend']} | {r['prompt_len']} + {r['gen_length']} | {r['batch']} | {r['nfe_off']} / {r['nfe_on']} | "
            f"{r['off_s']:.3f} | {r['on_s']:.3f} | {r['speedup']:.2f}x ({r['speedup_paired']:.2f}x) | "
            f"{r['full_calls']} / {r['cached_calls']} |")
    lines += ["", "### Quality cost on trained tiny models (synthetic summarization, same documents and seeds)", "",
              "| backend | variant | ROUGE-1 | ROUGE-2 | ROUGE-L | tokens agreeing with uncached | identical outputs | seconds |",
              "|---|---|---|---|---|---|---|---|"]
    for name, q in res["quality"].items():
        for v in (k for k in q if isinstance(q[k], dict)):
            r = q[v]
            lines.append(f"| {name} | {v} | {r['rouge1']:.1f} | {r['rouge2']:.1f} | {r['rougeL']:.1f} | "
                         f"{100 * r['agree']:.1f}% | {100 * r['exact']:.0f}% | {r['seconds']:.2f} |")
    q0 = next(iter(res["quality"].values()), None)
    if q0:
        lines.append(f"\n{q0['docs']} documents, NFE {q0['nfe']}, {q0['gen_length']} generated tokens, "
                     f"prompts of {q0['prompt_tokens_mean']:.0f} tokens on average; total {res['total_s']:.0f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller speed model, regress-preset models (about 2 minutes)")
    ap.add_argument("--smoke", action="store_true", help="tiny CI sub-mode: every code path in seconds")
    ap.add_argument("--out", default=None, help="JSON path (default results/bench/prompt_cache[_<mode>].json)")
    ap.add_argument("--models-dir", default=None, help="where the trained tiny models are built / reused "
                    "(default results/<preset>/models, shared with dslbench demo / regress)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args(argv)
    for key in ("TOKENIZERS_PARALLELISM", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(key, "false" if key == "TOKENIZERS_PARALLELISM" else "1")
    import logging

    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    name = "smoke" if args.smoke else ("quick" if args.quick else "full")
    mode = MODES[name]
    t0 = time.perf_counter()
    res: dict = {"mode": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "sizes": {k: v for k, v in mode.items()}}
    with tempfile.TemporaryDirectory(prefix="dslbench-pcache-") as tmp:
        res["speed"] = speed_figures(mode, Path(tmp))
        models_dir = Path(args.models_dir) if args.models_dir else (
            Path(tmp) / "models" if name == "smoke" else ROOT / "results" / mode["preset"] / "models")
        res["quality"] = quality_figures(mode, models_dir)
    res["total_s"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out) if args.out else ROOT / "results" / "bench" / (
        "prompt_cache.json" if name == "full" else f"prompt_cache_{name}.json")
    write_json(res, out)
    print(table(res))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
