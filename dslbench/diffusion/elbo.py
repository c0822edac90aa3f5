"""Monte-Carlo log-likelihood of a continuation, as LLaDA's lm-eval harness computes it.

For a prefix p and a target x of T tokens, log P(x | p) is bounded below by
``E_m [ (T / m) * sum over the m masked target positions of log p_theta(x_i | noisy) ]`` with
m uniform on 1..T and the m positions uniform among the target's (the prefix is never masked).
The estimate averages ``mc_num`` draws in batches of ``batch_size``; as in LLaDA's harness the
mask counts of a batch are stratified: a random start k, then counts evenly spaced by T / batch
(rounded, wrapped into 1..T), so each batch covers the whole range of noise levels.

:func:`is_greedy` answers lm-eval's "would greedy decoding produce exactly this target?": LLaDA
commits, one token per step, the most confident argmax among the masked target positions until
the target is filled; that is :func:`mdm_generate` with ``steps = gen_length = T`` and one block
at temperature 0, which is how it is computed here.

As in the reference, the stratification is per batch of ``batch_size`` draws, no attention mask
is used (one unpadded sequence), and with CFG the prefix is masked in the unconditional copy
(a second denoiser call). The cross-entropy is taken in float32 whatever the logits' dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dslbench.diffusion.denoiser import Denoiser
from dslbench.diffusion.mdm import guided_logits, mdm_generate


def mc_loglikelihood(
    denoiser: Denoiser,
    prefix_ids: torch.Tensor,
    target_ids: torch.Tensor,
    *,
    mc_num: int = 128,
    batch_size: int = 32,
    cfg_scale: float = 0.0,
    generator: torch.Generator | None = None,
) -> float:
    """Estimate of log P(target | prefix); costs ``mc_num / batch_size`` denoiser calls (x2 with CFG)."""
    prefix = torch.as_tensor(prefix_ids).long().reshape(-1)
    target = torch.as_tensor(target_ids).long().reshape(-1).to(prefix.device)
    if target.numel() == 0:
        raise ValueError("target_ids is empty: there is no continuation to score")
    if mc_num < 1 or batch_size < 1:
        raise ValueError(f"mc_num and batch_size must be >= 1, got mc_num={mc_num}, batch_size={batch_size}")
    if mc_num % batch_size != 0:
        raise ValueError(f"mc_num={mc_num} must be a multiple of batch_size={batch_size}")

    prefix_len, target_len = prefix.numel(), target.numel()
    clean = torch.cat([prefix, target])[None, :].expand(batch_size, -1)
    n_batches = mc_num // batch_size
    total = torch.zeros((), dtype=torch.float64, device=prefix.device)
    with torch.no_grad():
        for _ in range(n_batches):
            counts = stratified_mask_counts(target_len, batch_size, generator=generator, device=prefix.device)
            is_masked = random_masks(counts, target_len, generator=generator)
            noisy = clean.clone()
            noisy[:, prefix_len:] = noisy[:, prefix_len:].masked_fill(is_masked, denoiser.mask_id)
            logits = guided_logits(denoiser, noisy, None, prefix_len, cfg_scale, start=prefix_len)
            nll = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                target.repeat(batch_size),
                reduction="none",
            ).view(batch_size, target_len)
            # Each masked token's loss is divided by its masking rate m / T.
            per_row = (nll.double() * is_masked).sum(dim=1) * (target_len / counts.double())
            total += per_row.sum() / batch_size
    return -(total / n_batches).item()


def stratified_mask_counts(
    target_len: int, batch_size: int, *, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Mask counts ``[batch_size]`` in 1..T: random start, then evenly spaced by T / batch_size."""
    start = int(torch.randint(1, target_len + 1, (), generator=generator, device=device))
    end = start + (batch_size - 1) * (target_len / batch_size)
    # float32 linspace and round-half-even, as in the reference, so the counts agree with it.
    counts = torch.round(torch.linspace(float(start), end, steps=batch_size, dtype=torch.float32, device=device))
    return (counts.long() - 1) % target_len + 1


def random_masks(counts: torch.Tensor, target_len: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``[B, T]`` bool with exactly ``counts[b]`` True per row, at uniformly random positions."""
    rows = counts.shape[0]
    order = torch.rand((rows, target_len), generator=generator, device=counts.device).argsort(dim=1)
    first_m = torch.arange(target_len, device=counts.device)[None, :] < counts[:, None]
    return torch.zeros_like(first_m).scatter(1, order, first_m)


def is_greedy(
    denoiser: Denoiser,
    prefix_ids: torch.Tensor,
    target_ids: torch.Tensor,
    *,
    cfg_scale: float = 0.0,
) -> bool:
    """True when one-token-per-step greedy decoding after the prefix reproduces the target."""
    prefix = torch.as_tensor(prefix_ids).long().reshape(-1)
    target = torch.as_tensor(target_ids).long().reshape(-1).to(prefix.device)
    if target.numel() == 0:
        raise ValueError("target_ids is empty: there is no continuation to check")
    out = mdm_generate(
        denoiser,
        prefix[None, :],
        None,
        gen_length=target.numel(),
        steps=target.numel(),
        temperature=0.0,
        cfg_scale=cfg_scale,
        remasking="low_confidence",
    )
    return bool(torch.equal(out.tokens[0], target))
