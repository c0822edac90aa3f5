"""Sampler overhead on a summarization-shaped canvas (``summ_prompt_len`` prompt tokens, as a
source document, + the generation length) at the overhead batch, measured as in
``sampler_overhead``, and what computing the output head on the generated positions only (the
samplers' ``logits_from``) saves at that shape."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from converter_share import flops_forward_per_token
from sampler_overhead import measure, summarize
from timing import median, timed
from workload import BACKENDS, BIG


def summarization_figures(backends: dict, size: dict, device: torch.device) -> dict:
    ob, P, G, reps = size["overhead_batch"], size["summ_prompt_len"], size["gen_length"], size["summ_reps"]

    def head(timer):
        return head_on_generated_only(timer, backends["mdm_llada"], ob, P, G, reps, device)

    series, nfes, head_figure = measure(backends, size, device, P, [ob], reps, while_timed=head)
    out = summarize(series, nfes, backends, [ob], ())
    out["head_on_generated_only"] = head_figure
    out["prompt_len"], out["gen_length"], out["batch"] = P, G, ob
    return out


def head_on_generated_only(timer, mdm, b: int, P: int, G: int, reps: int, device: torch.device) -> dict:
    """What skipping the output head on the prompt buys at this shape (a network-level saving:
    the overhead ratios are relative to the cheaper forward). The head is timed on its own (the
    forward-to-forward difference is within a shared machine's noise at this size)."""
    model = mdm.denoiser.model
    head = model.get_output_embeddings()
    weight = (head if head is not None else model.get_input_embeddings()).weight
    forward = median([timer.forward_once(mdm, b, P, G, logits_from=0) for _ in range(2 * reps + 1)])

    def head_s(rows: int) -> float:
        hidden = torch.randn(b, rows, weight.shape[1], device=device, dtype=weight.dtype)
        with torch.inference_mode():
            return median([timed(lambda: F.linear(hidden, weight), device) for _ in range(9)])

    whole, generated = head_s(P + G), head_s(G)
    return {"forward_ms": round(1e3 * forward, 2), "head_ms_whole_canvas": round(1e3 * whole, 2),
            "head_ms_generated": round(1e3 * generated, 2), "saving": round((whole - generated) / forward, 4)}


def table_lines(res: dict) -> list[str]:
    ss = res.get("sampler_summarization")
    if not ss:
        return []
    sb = ss["batch"]
    per = ", ".join(f"{n} {ss['overhead'][f'{n}.b{sb}']:.3f}" for n in BACKENDS)
    lines = [f"summarization-shaped canvas (prompt {ss['prompt_len']} + gen {ss['gen_length']} tokens, batch {sb}): "
             f"overhead {per} (dsl_llada vs backbone only {ss['overhead_vs_backbone'][f'dsl_llada.b{sb}']:.3f})"]
    h = ss.get("head_on_generated_only")
    if h:
        f8 = flops_forward_per_token(BIG["d_model"], BIG["n_layers"], BIG["mlp"], BIG["vocab"],
                                     ss["prompt_len"] + ss["gen_length"])
        skipped = ss["prompt_len"] * f8["head"] / ((ss["prompt_len"] + ss["gen_length"]) * f8["backbone"])
        lines.append(f" output head on the generated positions only (the samplers' logits_from): head "
                     f"{h['head_ms_whole_canvas']:.1f} -> {h['head_ms_generated']:.1f} ms, "
                     f"{-100 * h['saving']:+.1f}% of a {h['forward_ms']:.0f} ms forward "
                     f"(at LLaDA-8B shapes {-100 * skipped:+.1f}% of a forward's FLOPs)")
    return lines
