"""A low-rank adapter on the output head, as the released DSL training offers it.

The released DSL-LLaDA training can train the output head through a LoRA adapter instead of
freezing it (its ``DSL_FFOUT_LORA_R`` setting; the authors' later runs use rank 32). The adapted
head computes ``base(x) + (x A) B * alpha / r`` with the base weight frozen, ``A`` (d_in x r)
drawn ``N(0, 1) / r``, ``B`` (r x d_out) zero (so training starts from the base head exactly) and
``alpha`` 128 unless given.

Installed as the model's output embedding, its state-dict keys are the published checkpoint
layout ``model.transformer.ff_out.{base.weight, lora_A, lora_B}``, which
:func:`dslbench.models.dsl_checkpoint.load_dsl_checkpoint` merges into ``ff_out.weight``.
"""

from __future__ import annotations

import torch
from torch import nn

from dslbench.models.dsl_checkpoint import DEFAULT_LORA_ALPHA as DEFAULT_ALPHA  # the released default


class HeadLoRA(nn.Module):
    """``base(x) + (x @ lora_A) @ lora_B * alpha / rank``; only ``lora_A`` / ``lora_B`` train."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float = DEFAULT_ALPHA,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        if base.bias is not None:
            raise ValueError("the output-head LoRA layout has no bias (LLaDA's ff_out has none)")
        self.base = base
        self.base.weight.requires_grad_(False)
        d_out, d_in = base.weight.shape
        weight = base.weight
        a = torch.randn(d_in, rank, generator=generator, dtype=torch.float32) / rank
        self.lora_A = nn.Parameter(a.to(device=weight.device, dtype=weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(rank, d_out, device=weight.device, dtype=weight.dtype))
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.scale = self.alpha / self.rank

    @property
    def weight(self) -> torch.Tensor:
        """The merged ``[d_out, d_in]`` weight (for code that reads the head's weight)."""
        return self.base.weight + self.scale * (self.lora_A @ self.lora_B).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A) @ self.lora_B * self.scale

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


def install_head_lora(backbone: nn.Module, rank: int, alpha: float = DEFAULT_ALPHA,
                      generator: torch.Generator | None = None) -> HeadLoRA:
    """Wrap ``backbone``'s (untied) output head in a :class:`HeadLoRA` and install it in place."""
    head = backbone.get_output_embeddings()
    if head is None:
        raise ValueError("the output head is tied to the input embedding; a head LoRA needs an untied head")
    if isinstance(head, HeadLoRA):
        raise ValueError("the output head already carries a LoRA adapter")
    lora = HeadLoRA(head, rank, alpha, generator)
    backbone.set_output_embeddings(lora)
    return lora


__all__ = ["HeadLoRA", "install_head_lora", "DEFAULT_ALPHA"]
