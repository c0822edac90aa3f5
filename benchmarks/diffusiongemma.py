"""The ``diffusiongemma`` backend's sampler overhead (a tiny DiffusionGemma of the benchmark's
width and depth), for ``benchmarks/run.py``.

The wall time of one ``_generate_batch`` (padding, the entropy-bound sampling loop with its
temperature schedule, draws and stopping checks, decoding) over the time spent inside network
evaluations: the canvas decoder + the output head (one NFE each) and the prompt-encoder passes,
each timed by forward hooks on those modules. ``stopping=none`` so that every generation makes
exactly ``nfe`` decoder evaluations. Both ``draw`` modes in the same run: ``all`` (a token drawn
at every position each step, as transformers' ``generate`` does) and ``accepted``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from timing import sync, timed
from workload import prompts


def _hook_timer(modules, device):
    spent = [0.0]
    start: dict[int, float] = {}

    def pre(mod, *_):
        sync(device)
        start[id(mod)] = time.perf_counter()

    def post(mod, *_):
        sync(device)
        spent[0] += time.perf_counter() - start.pop(id(mod))

    handles = [h for m in modules for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    return spent, handles


def diffusiongemma_figures(tokenizer_dir: Path, size: dict, device: torch.device, workdir: Path) -> dict:
    from transformers import PreTrainedTokenizerFast  # not AutoTokenizer: no config.json lookup of a llada checkpoint

    from dslbench.harness.diffusiongemma_backend import DiffusionGemma
    from dslbench.models.diffusiongemma import make_tiny_diffusiongemma

    b, P, G, nfe = size["overhead_batch"], size["prompt_len"], size["gen_length"], size["nfe"]
    ckpt = make_tiny_diffusiongemma(workdir / "diffusiongemma", PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir)),
                                    seed=0, hidden_size=size["d_model"], num_hidden_layers=size["n_layers"],
                                    canvas_length=G)
    be = DiffusionGemma.create_from_arg_obj(
        {"pretrained": str(ckpt), "gen_length": G, "nfe": nfe, "stopping": "none", "device": str(device)},
        {"batch_size": b},
    )
    model = be.model
    ctx = prompts(b, P, be.info.vocab_size, seed=b)
    decoder, decoder_handles = _hook_timer([model], device)  # the model's forward: decoder, head, soft-capping
    encoder, encoder_handles = _hook_timer([model.model.encoder], device)
    res: dict = {"batch": b, "prompt_len": P, "gen_length": G, "canvas_length": be.info.canvas_length}
    try:
        for draw in ("all", "accepted"):
            opts = be.request_options({"until": [], "gen_length": G, "nfe": nfe, "stopping": "none", "draw": draw})
            ratios, ratios_decoder, gen_ms, dec_ms, enc_ms = [], [], [], [], []
            be._generate_batch(ctx, opts)  # warm-up
            for _ in range(size["reps"]):
                decoder[0] = encoder[0] = 0.0
                t = timed(lambda: be._generate_batch(ctx, opts), device)
                ratios.append(t / (decoder[0] + encoder[0]))
                ratios_decoder.append(t / decoder[0])
                gen_ms.append(1e3 * t)
                dec_ms.append(1e3 * decoder[0] / be.denoiser.nfe)
                enc_ms.append(1e3 * encoder[0] / max(1, be.denoiser.encoder_passes))
            res[draw] = {
                "overhead": round(statistics.median(ratios), 3),
                "overhead_vs_decoder_only": round(statistics.median(ratios_decoder), 3),
                "generate_ms": round(statistics.median(gen_ms), 2),
                "decoder_ms_per_nfe": round(statistics.median(dec_ms), 2),
                "encoder_ms_per_pass": round(statistics.median(enc_ms), 2),
            }
            res.update(nfe=be.denoiser.nfe, encoder_passes=be.denoiser.encoder_passes)
    finally:
        for h in decoder_handles + encoder_handles:
            h.remove()
    res["overhead"] = res["all"]["overhead"]
    return res


def table_lines(res: dict) -> list[str]:
    g = res.get("sampler_diffusiongemma")
    if not g or "all" not in g:
        return []
    lines = ["", f"diffusiongemma (entropy-bound loop, stopping=none; tiny DiffusionGemma of the same width and depth, "
                 f"canvas {g['canvas_length']}; {g['nfe']} decoder evaluations + {g['encoder_passes']} encoder pass(es)), "
                 f"overhead @b{g['batch']} per network evaluation:"]
    for draw, why in (("all", "a token drawn at every position, as generate"), ("accepted", "drawn where accepted")):
        d = g[draw]
        lines.append(f"  draw={draw:8s} {d['overhead']:.3f} (vs decoder only {d['overhead_vs_decoder_only']:.3f}; "
                     f"decoder {d['decoder_ms_per_nfe']:.1f} ms/NFE, encoder {d['encoder_ms_per_pass']:.1f} ms/pass; {why})")
    return lines
