"""The DSL converter's share of one forward at the published LLaDA-8B shapes (V = 126,464,
d = 100, D = 4096, 32 layers), timed on CPU on a few tokens (the converter vs one LLaDA-8B layer
x 32 + the output head) and counted in FLOPs; the same for the top-k sparse converter
(:func:`sparse_convert`, top-k slots + a uniform tail) with its error, and for the sampler's
top-512 posterior mean."""

from __future__ import annotations

import math

import torch

from timing import PeakMemory, median, mib, timed
from workload import BIG

SPARSE_SNRS = (1.0, 7.0, 30.0)  # low / knee / high SNR for the sparse converter's error


def flops_forward_per_token(d: int, layers: int, mlp: int, vocab: int, seq: int) -> dict:
    """Multiply-adds x 2 per token of one LLaDA forward (bidirectional attention over ``seq``)."""
    layer = 2 * (4 * d * d + 3 * d * mlp) + 2 * 2 * seq * d  # projections + QK^T and AV
    head = 2 * d * vocab
    return {"layer": layer, "backbone": layers * layer + head, "head": head}


def sparse_convert(dsl, z: torch.Tensor, beta_scale: float, k: int, wt: torch.Tensor | None = None,
                   tail_sum: torch.Tensor | None = None) -> torch.Tensor:
    """Top-k sparse converter: the ``k`` most probable slots exactly, every other slot at the
    average probability of the rest (a uniform tail, exact when the rest are near-uniform, as at
    low SNR). ``h = sum_topk p_j W_j + (1 - sum_topk p) * mean of the other columns + c``.

    Cost per token: ``z K^T`` (V d) + a top-k over V + k D, instead of (V+1) D for the dense one.
    """
    conv = dsl.converter
    E = dsl.noise_embed.weight
    if wt is None:  # W^T, [V+1, D], row-major so that a slot's column is one contiguous row
        wt = conv.backbone_embedding.weight.float().T.contiguous()
    if tail_sum is None:
        tail_sum = wt.sum(dim=0)
    scores = z.float() @ E.T
    scores = torch.cat([scores, torch.zeros_like(scores[..., :1])], dim=-1)
    logits = conv.beta.float() * beta_scale * scores + conv.logit_bias.float()
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    top, idx = logits.topk(k, dim=-1)
    p = torch.exp(top - lse)  # [..., k]
    cols = wt[idx]  # [..., k, D]
    head = torch.einsum("...k,...kd->...d", p, cols)
    rest = (1 - p.sum(-1, keepdim=True)).clamp_min(0)
    rest_mean = (tail_sum - cols.sum(-2)) / (wt.shape[0] - k)
    return head + rest * rest_mean + conv.backbone_embedding.bias.float()


def converter_figures(size: dict, device: torch.device) -> dict:
    """DSL converter vs one LLaDA-8B-shaped forward (32 layers + head), timed on a few tokens."""
    from dslbench.diffusion.dsl import DSLConverter, DSLModules
    from dslbench.models.llada import LLaDABlock, rope_tables
    from dslbench.diffusion.sde import DEFAULT_TOPK, posterior_mean
    from dslbench.models.llada_config import llada_8b_config

    big = size.get("big", BIG)
    V, d, D = big["vocab"], big["noise_dim"], big["d_model"]
    T = size["conv_tokens"]
    seq = 1024  # attention cost counted at a 1024-token canvas in the FLOP figures
    out: dict = {"tokens_timed": T, "shapes": f"V={V} d={d} D={D}, {big['n_layers']} layers, mlp {big['mlp']}"}
    with torch.inference_mode():
        with PeakMemory(device) as pm_conv:
            dsl = DSLModules.__new__(DSLModules)
            torch.nn.Module.__init__(dsl)
            dsl.vocab_size, dsl.noise_dim, dsl.d_model = V, d, D
            dsl.noise_embed = torch.nn.Embedding(V, d, device=device)
            dsl.noise_embed.weight.copy_(torch.nn.functional.normalize(dsl.noise_embed.weight, dim=-1))
            with torch.device(device):
                dsl.converter = DSLConverter(V, D)
            z = torch.randn(1, T, d, device=device) * 3.0
            conv_t = median([timed(lambda: dsl.convert(z, 2.0), device) for _ in range(3)])
        wt = dsl.converter.backbone_embedding.weight.T.contiguous()
        tail_sum = wt.sum(dim=0)
        topk = {}
        for k in (64, 512):
            t = median([timed(lambda: sparse_convert(dsl, z, 2.0, k, wt, tail_sum), device) for _ in range(3)])
            # approximation error at low / middle / high SNR (relative L2 of h)
            errs = {}
            E = dsl.noise_embed.weight
            for snr in SPARSE_SNRS:
                ids = torch.randint(0, V, (1, T), device=device)
                zz = snr * E[ids] + math.sqrt(snr) * torch.randn(1, T, d, device=device)
                dense = dsl.convert(zz, 2.0)
                approx = sparse_convert(dsl, zz, 2.0, k, wt, tail_sum)
                errs[f"snr{snr:g}"] = float((approx - dense).norm() / dense.norm())
            topk[k] = (t, errs)
        del dsl, tail_sum, wt
        cfg = llada_8b_config(init_device=None, d_model=D, n_heads=big["n_heads"], n_kv_heads=big["n_heads"],
                              mlp_hidden_size=big["mlp"], vocab_size=V, embedding_size=V)
        with PeakMemory(device) as pm_layer:
            with torch.device(device):
                block = LLaDABlock(cfg, 0).eval()
                head = torch.nn.Linear(D, V, bias=False)
            x = torch.randn(1, T, D, device=device)
            rope = rope_tables(T, cfg.head_dim, cfg.rope_theta, x.device)
            layer_t = median([timed(lambda: block(x, rope, None), device) for _ in range(3)])
            head_t = median([timed(lambda: head(x), device) for _ in range(3)])
        del block, head
        # The sampler's other per-token vocabulary work: the top-512 posterior mean of E_n rows.
        table = torch.nn.functional.normalize(torch.randn(V, d, device=device), dim=-1)
        logits = torch.randn(1, T, V, device=device) * 3.0
        buffers = {} if device.type == "cpu" else None
        post_t = median([timed(lambda: posterior_mean(logits, table, DEFAULT_TOPK, buffers), device) for _ in range(3)])
        del table, logits
    fwd_t = big["n_layers"] * layer_t + head_t
    out["timed_ms"] = {"converter": round(1e3 * conv_t, 2), "layer": round(1e3 * layer_t, 2),
                       "head": round(1e3 * head_t, 2), "forward_32_layers_plus_head": round(1e3 * fwd_t, 1)}
    out["share_timed"] = round(conv_t / (conv_t + fwd_t), 4)
    fl = flops_forward_per_token(D, big["n_layers"], big["mlp"], V, seq)
    conv_flops = 2 * V * d + 2 * (V + 1) * D
    out["share_flops"] = round(conv_flops / (conv_flops + fl["backbone"]), 4)
    for k, (t, errs) in topk.items():
        sparse_flops = 2 * V * d + 2 * k * D + 2 * D
        out[f"topk{k}"] = {
            "timed_ms": round(1e3 * t, 2),
            "share_timed": round(t / (t + fwd_t), 4),
            "share_flops": round(sparse_flops / (sparse_flops + fl["backbone"]), 5),
            "rel_error": {s: round(e, 4) for s, e in errs.items()},
        }
    # share of one DSL network evaluation (converter + backbone), timed and in FLOPs (a matmul
    # with E_n plus a few elementwise passes over V)
    post_flops = 2 * V * d + 8 * V
    out["posterior_top512"] = {"timed_ms": round(1e3 * post_t, 2),
                               "share_timed": round(post_t / (conv_t + fwd_t), 5),
                               "share_flops": round(post_flops / (conv_flops + fl["backbone"]), 5)}
    out["memory"] = {"converter": mib(pm_conv.peak), "layer_plus_head": mib(pm_layer.peak)}
    return out


def table_lines(res: dict) -> list[str]:
    c = res["converter"]
    lines = [
        f"DSL converter at the published shapes ({c['shapes']}; timed on {c['tokens_timed']} tokens, FLOPs at a 1024-token canvas):",
        f"| converter | ms | share of forward (timed) | share (FLOPs) | rel. error of h @SNR {' / '.join(f'{x:g}' for x in SPARSE_SNRS)} |",
        "|---|---:|---:|---:|---|",
        f"| dense | {c['timed_ms']['converter']:.1f} | {100 * c['share_timed']:.2f}% | {100 * c['share_flops']:.2f}% | exact |",
    ]
    for k in (64, 512):
        t = c[f"topk{k}"]
        e = t["rel_error"]
        lines.append(f"| top-{k} + uniform tail | {t['timed_ms']:.1f} | {100 * t['share_timed']:.2f}% | "
                     f"{100 * t['share_flops']:.3f}% | {' / '.join(f'{v:.4f}' for v in e.values())} |")
    pm = c["posterior_top512"]
    lines.append(f"| (sampler) top-512 posterior mean | {pm['timed_ms']:.1f} | {100 * pm['share_timed']:.2f}% | "
                 f"{100 * pm['share_flops']:.3f}% | - |")
    lines.append(f"(one LLaDA-8B layer {c['timed_ms']['layer']:.1f} ms, head {c['timed_ms']['head']:.1f} ms, "
                 f"32 layers + head {c['timed_ms']['forward_32_layers_plus_head']:.0f} ms; peak MiB converter "
                 f"{c['memory']['converter']:.0f}, layer+head {c['memory']['layer_plus_head']:.0f})")
    return lines
