"""Step schedules shared by the samplers: how many positions each step commits and which.

:func:`transfer_schedule` is LLaDA's even split of a block's masks over its steps, the remainder
going to the earliest steps; :func:`top_k_per_row` picks each row's ``k`` best-scored positions
(ties: lower position), :func:`released_top_k` picks them as LLaDA's ``generate.py`` does;
:func:`check_budget` splits a step budget over the blocks. Both :mod:`dslbench.diffusion.mdm`
and :mod:`dslbench.diffusion.remdm` read them from here (one home, no import circle).
"""

from __future__ import annotations

import torch


def transfer_schedule(mask_count: torch.Tensor, steps: int) -> torch.Tensor:
    """Tokens to commit per step, ``[B, steps]``: ``mask_count`` spread evenly, remainder first.

    e.g. 10 masks over 4 steps -> [3, 3, 2, 2].
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got steps={steps}")
    count = torch.as_tensor(mask_count).long().reshape(-1)
    base = count // steps
    remainder = count % steps
    extra = torch.arange(steps, device=count.device)[None, :] < remainder[:, None]
    return base[:, None] + extra.long()


def top_k_per_row(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the ``k[b]`` highest scores of each row (ties: lower index first)."""
    order = scores.argsort(dim=-1, descending=True, stable=True)
    ranks_taken = torch.arange(scores.shape[-1], device=scores.device)[None, :] < k.to(scores.device)[:, None]
    return torch.zeros_like(ranks_taken).scatter(1, order, ranks_taken)


def released_top_k(scores: torch.Tensor, k: list[int], offset: int, length: int, pads: list[int]) -> torch.Tensor:
    """Boolean mask of the positions LLaDA's ``generate.py`` commits, ties included.

    The release calls ``torch.topk`` on one row's confidence over its whole sequence (prompt +
    generated span, ``-inf`` outside the current block and at unmasked positions), and the order
    ``torch.topk`` gives tied values depends on that tensor's length and on where the ties sit.
    Ties are routine where positions score exactly 0 (``confidence_eos_eot_inf``) or exactly 1, so
    each row's tensor is rebuilt in that layout, unpadded: ``scores`` ``[B, W]`` holds the block's
    scores (``-inf`` at positions that cannot be committed) at canvas columns ``offset..offset+W-1``
    of a canvas ``length`` wide whose row ``b`` starts with ``pads[b]`` pad columns; ``k`` holds
    each row's count (host ints). One ``torch.topk`` per row, as in the release.
    """
    batch, width = scores.shape
    chosen = torch.zeros((batch, width), dtype=torch.bool, device=scores.device)
    for row in range(batch):
        if k[row] <= 0:
            continue
        start = offset - pads[row]
        full = torch.full((length - pads[row],), float("-inf"), dtype=scores.dtype, device=scores.device)
        full[start : start + width] = scores[row]
        picked = torch.topk(full, int(k[row])).indices - start
        chosen[row, picked[(picked >= 0) & (picked < width)]] = True
    return chosen


def check_budget(gen_length: int, steps: int, block_length: int, fixed: bool = True) -> tuple[int, int]:
    """``(num_blocks, steps_per_block)`` for ``steps`` over ``gen_length`` in blocks of ``block_length``;
    ``fixed``: the steps must split evenly over the blocks (LLaDA's schedule)."""
    if gen_length < 1 or steps < 1 or block_length < 1:
        raise ValueError(
            f"gen_length, steps and block_length must be >= 1, got gen_length={gen_length}, "
            f"steps={steps}, block_length={block_length}"
        )
    if gen_length % block_length != 0:
        raise ValueError(
            f"gen_length={gen_length} is not a multiple of block_length={block_length}"
        )
    num_blocks = gen_length // block_length
    if fixed and steps % num_blocks != 0:
        raise ValueError(
            f"steps={steps} cannot be split evenly over {num_blocks} blocks "
            f"(gen_length={gen_length} / block_length={block_length})"
        )
    if steps < num_blocks:
        raise ValueError(
            f"steps={steps} leaves no step for some of the {num_blocks} blocks "
            f"(gen_length={gen_length} / block_length={block_length})"
        )
    return num_blocks, steps // num_blocks
