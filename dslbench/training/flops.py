"""FLOPs of one training step (loss + backward) of an adaptation objective, counted by torch.

Used to state what "equal compute" means when the models differ in architecture (the demo's
DiffusionGemma row against its LLaDA rows): torch's ``FlopCounterMode`` counts the matmuls and the
attention kernels; the CPU flash-attention kernel that SDPA picks on a CPU is missing from torch's
table, so it is counted here with torch's own SDPA formulas. FLOPs do not depend on the weights,
so randomly initialised checkpoints of the right sizes give the real figure.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

_aten = torch.ops.aten


def _sdpa_fwd(q, k, v, *_, **__):
    return sdpa_flop_count(q, k, v)


def _sdpa_bwd(grad_out, q, k, v, *_, **__):
    return sdpa_backward_flop_count(grad_out, q, k, v)


CPU_ATTENTION = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_fwd,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_bwd,
}


def training_module(objective: str, checkpoint: str | Path, **options):
    """``(AdaptModule in train mode, tokenizer, info)``: loaded as the adaptation loop loads it."""
    from dslbench.training.loop import _load_base
    from dslbench.training.objectives import AdaptModule, make_objective

    obj = make_objective(objective, **options)
    model, tokenizer, info, preloaded, base_dir = getattr(obj, "load_base", _load_base)(str(checkpoint))
    module = AdaptModule(model, obj.build(model, tokenizer, info, base_dir, preloaded), obj, info)
    obj.configure_trainable(module)
    return module.train(), tokenizer, info


def step_flops(module, batch, seed: int = 0) -> int:
    """FLOPs of one loss + backward of ``module`` on ``batch``."""
    module.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        module(batch.input_ids, batch.attention_mask, batch.response_mask, torch.Generator().manual_seed(seed)).loss.backward()
    module.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def mean_step_flops(module, data, n_batches: int) -> float:
    """Mean FLOPs per step over the first ``n_batches`` micro-batches of ``data`` (their widths vary)."""
    return sum(step_flops(module, data.micro_batch(k), seed=k) for k in range(n_batches)) / n_batches
