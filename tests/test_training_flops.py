"""Training-step FLOPs (dslbench.training.flops) and the demo's equal-compute DiffusionGemma row."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from dslbench.training.data import Batch
from dslbench.training.flops import step_flops, training_module


def test_cpu_attention_is_counted(tiny_ckpt):
    """torch's table lacks the CPU flash-attention kernel: the count adds exactly torch's SDPA
    forward + backward formulas once per layer on top of what torch counts by itself."""
    module, _, info = training_module("mdm", tiny_ckpt)
    B, L = 2, 24
    ids = torch.randint(16, info.vocab_size, (B, L), generator=torch.Generator().manual_seed(0))
    response = torch.zeros((B, L), dtype=torch.bool)
    response[:, L // 2:] = True
    batch = Batch(ids, torch.ones_like(ids), response)
    with FlopCounterMode(display=False) as plain:
        module(batch.input_ids, batch.attention_mask, batch.response_mask, torch.Generator().manual_seed(0)).loss.backward()
    cfg = module.backbone.config
    shape = (B, cfg.n_heads, L, cfg.d_model // cfg.n_heads)
    per_layer = sdpa_flop_count(shape, shape, shape) + sdpa_backward_flop_count(shape, shape, shape, shape)
    assert step_flops(module, batch) == plain.get_total_flops() + cfg.n_layers * per_layer


def test_demo_diffusiongemma_steps_have_the_control_rows_flops(tmp_path):
    """The demo preset's DiffusionGemma step count is the control row's training FLOPs (base
    pre-training + MDM-CPT adaptation) over one uniform step's, counted now (within a step)."""
    from transformers import PreTrainedTokenizerFast

    from dslbench.demo import DG_OPTIONS, PRESETS, PRETRAIN_OPTIONS, demo_step_flops
    from dslbench.models.diffusiongemma import make_tiny_diffusiongemma
    from dslbench.models.tiny import make_tiny

    cfg = PRESETS["demo"]
    llada = make_tiny(tmp_path / "llada", seed=cfg.seed, d_model=cfg.d_model, n_layers=cfg.n_layers,
                      n_heads=cfg.n_heads, mlp_hidden_size=cfg.mlp_hidden_size)
    dg = make_tiny_diffusiongemma(tmp_path / "dg", PreTrainedTokenizerFast.from_pretrained(str(llada)), seed=cfg.seed,
                                  hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, canvas_length=cfg.response_len)
    control = (cfg.pretrain_steps * demo_step_flops(cfg, "mdm", llada, **PRETRAIN_OPTIONS)
               + cfg.adapt_steps * demo_step_flops(cfg, "mdm", llada, **cfg.adapt_options["mdm"]))
    uniform = demo_step_flops(cfg, "uniform", dg, **DG_OPTIONS)
    assert uniform > demo_step_flops(cfg, "mdm", llada, **PRETRAIN_OPTIONS)  # why it gets fewer steps
    assert abs(cfg.diffusiongemma_steps - control / uniform) <= 1
