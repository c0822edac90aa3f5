"""How many masked positions one step commits (``parallel``).

How many per step (``parallel``): ``fixed`` is the schedule above. ``threshold`` (Fast-dLLM's
confidence-aware parallel decoding) commits every masked position of the current block whose
probability is at least ``threshold``, and at least the best one. ``eb`` (EB-sampler, Ben-Hamu
et al. 2025) walks the block's masked positions in the chosen order and commits the longest
prefix U with ``sum_U H - max_U H <= eb_gamma`` (entropies in nats), at least one. Both spend a
variable number of calls: ``steps`` is then a hard cap, not a schedule. Each row moves to its
next block as soon as its block is full, and a step never commits fewer than
``ceil(masked / steps_left_for_this_block)`` positions, where the steps left for the block are
the row's unused steps minus one per block after it; so every block is finished within the cap
(at the last step left for a block, the whole block is committed). Rows of a batch advance
independently; :attr:`MDMOutput.row_nfe` counts, per row, the calls made while that row still
had masks (what it would have cost alone); ``nfe`` is the batch's calls (the slowest row's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PARALLEL_RULES = ("fixed", "threshold", "eb")


@dataclass(frozen=True)
class ParallelConfig:
    """How many masked positions one step commits (see the module docstring)."""

    rule: str = "fixed"
    threshold: float = 0.9
    eb_gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.rule not in PARALLEL_RULES:
            raise ValueError(f"parallel={self.rule!r} is not one of {', '.join(PARALLEL_RULES)}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold={self.threshold} must lie in (0, 1]")
        if not self.eb_gamma >= 0:
            raise ValueError(f"eb_gamma={self.eb_gamma} must be >= 0")


def adaptive_count(parallel: ParallelConfig, score: torch.Tensor, masked: torch.Tensor, x0_prob: torch.Tensor,
                   entropy: torch.Tensor | None) -> torch.Tensor:
    """Positions each row wants to commit this step under ``threshold`` / ``eb`` (>= 1 where a
    row has masks), before the budget floor.

    ``threshold``: the masked positions whose proposal probability is >= ``threshold``, at least
    the best one (Fast-dLLM keeps the top-ranked position and drops the others below the
    threshold). ``eb``: in the order of ``score`` (best first, ties to the lower position), the
    longest prefix whose summed entropy minus its largest entropy is <= ``eb_gamma``.
    """
    n_masked = masked.sum(dim=1)
    if parallel.rule == "threshold":
        wanted = ((x0_prob >= parallel.threshold) & masked).sum(dim=1)
    else:
        order = score.masked_fill(~masked, float("-inf")).argsort(dim=-1, descending=True, stable=True)
        h = entropy.gather(-1, order).clamp(min=0.0)
        in_order = masked.gather(-1, order)
        h = h.masked_fill(~in_order, 0.0)
        excess = h.cumsum(dim=-1) - h.cummax(dim=-1).values
        wanted = ((excess <= parallel.eb_gamma) & in_order).sum(dim=1)
    return torch.minimum(wanted.clamp(min=1), n_masked)
