"""Masked-diffusion decoding with LLaDA's semantics, over the denoiser seam.

Canvas = prompt (left-padded rows, pads hidden by the attention mask) + ``gen_length`` mask
tokens, decoded block by block (semi-autoregressive when ``block_length < gen_length``). The
step budget is split evenly over the blocks; inside a block, each step

1. runs the denoiser on the whole canvas (with CFG, a second run on a copy whose prompt is
   masked, combined as ``un + (s + 1) * (cond - un)``: a CFG step costs **two** NFE);
2. proposes ``x0 = argmax(logits)`` (``temperature > 0``: Gumbel-max in float64);
3. scores the still-masked positions of the current block (``low_confidence``: softmax
   probability of ``x0``; ``random``: a uniform draw);
4. commits the ``k`` best of them, where ``k`` spreads the block's masks evenly over its steps
   with the remainder going to the earliest steps (:func:`transfer_schedule`).

The proposal and the orders (``remasking``: ``low_confidence``, ``random``, ``entropy``,
``margin``) and ``confidence_eos_eot_inf`` live in :mod:`dslbench.diffusion.proposal`; how many
positions a step commits (``parallel``: ``fixed`` is the schedule above, ``threshold`` and ``eb``
adapt it) in :mod:`dslbench.diffusion.parallel`; the shared schedules in
:mod:`dslbench.diffusion.schedule`.

Optional: ``logits_eos_inf`` (EOS can never be proposed), ``confidence_eos_eot_inf``, and ReMDM
remasking (:mod:`dslbench.diffusion.remdm`), which may send committed tokens of the current block
back to the mask so that later steps revise them, within the same NFE budget.

Where this deliberately departs from LLaDA's published ``generate``:

- CFG runs the unconditional copy as a second call instead of a doubled batch, so the seam
  counts it (same logits, honest NFE).
- The confidence softmax is taken in float64 (as LLaDA's first release; the later one takes it in
  the logits' dtype).
- Gumbel-max is ranked in log space (same argmax as ``exp(l) / (-log u)^T``, no overflow).
- Only the current block's logits are post-processed (positions outside it can never be
  committed, which the reference expresses with -inf confidences). The fixed schedule (with or
  without ReMDM, whose eta = 0 is then plain LLaDA) still picks a step's commits as the release does, with ``torch.topk`` over each row's
  whole unpadded sequence, so ties (routine under ``confidence_eos_eot_inf``, where every position
  proposing a removed id scores 0) break as they break there on the same device
  (:func:`~dslbench.diffusion.schedule.released_top_k`); ``torch.topk`` orders ties differently
  on CPU and CUDA. Exact ties (0, 1.0) are the same values in both; other confidences come from
  the float64 formula of :mod:`~dslbench.diffusion.proposal`, which can sit one ulp from the
  release's ``softmax`` where two rows hold the same logits in other columns, so such ties may
  break otherwise. The adaptive rules (not in the release) give ties to the lower position.
- A prompt token equal to ``mask_id`` is never filled (only the generated span is decoded).
- ``entropy`` / ``margin`` score the untempered distribution (Dream divides the logits by the
  temperature first; identical at temperature 0) and keep LLaDA's Gumbel proposal.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from dslbench.diffusion import rng
from dslbench.diffusion.denoiser import Denoiser, logits_from
from dslbench.diffusion.parallel import PARALLEL_RULES, ParallelConfig, adaptive_count
from dslbench.diffusion.proposal import (
    EOS_CONFIDENCE_MODES,
    REMASKING_RULES,
    eos_confidence_mode,
    propose,
    removed_ids,
)
from dslbench.diffusion.remdm import RemdmConfig, block_schedule, choose_remask, remask_probability
from dslbench.diffusion.schedule import check_budget, released_top_k, top_k_per_row, transfer_schedule

# Re-exported: the backends and tests read the sampler's vocabulary from here.
__all__ = [
    "EOS_CONFIDENCE_MODES", "PARALLEL_RULES", "REMASKING_RULES", "MDMOutput", "ParallelConfig", "StepTrace",
    "check_combination", "eos_confidence_mode", "guided_logits", "mdm_generate", "steps_for_budget",
    "transfer_schedule",
]

@dataclass(frozen=True)
class MDMOutput:
    tokens: torch.Tensor  # [B, gen_length], the generated span only
    nfe: int  # denoiser calls made by this generation, read from the seam's counter
    steps: int  # sampler steps taken (NFE is twice this with CFG)
    row_nfe: tuple[int, ...] = ()  # calls each row needed (= nfe for every row under ``fixed``)


@dataclass(frozen=True)
class StepTrace:
    """What one step did; handed to ``trace`` after every step (tensors are copies)."""

    step: int  # 0 .. steps-1 over the whole generation
    block: int  # the block decoded (adaptive rules: the lowest block any row is still in)
    tokens: torch.Tensor  # [B, gen_length] generated span after the step
    committed: torch.Tensor  # [B, gen_length] bool, positions committed at this step
    remasked: torch.Tensor  # [B, gen_length] bool, positions sent back to the mask (ReMDM)


def check_combination(remasking: str, parallel: ParallelConfig, remdm: RemdmConfig | None) -> None:
    """Refuse the combinations that have no meaning, naming both args."""
    if remasking not in REMASKING_RULES:
        raise ValueError(f"remasking={remasking!r} is not one of {', '.join(REMASKING_RULES)}")
    if parallel.rule == "threshold" and remasking != "low_confidence":
        raise ValueError(
            f"parallel=threshold compares the proposal's probability with the threshold (Fast-dLLM), "
            f"so it needs remasking=low_confidence, got remasking={remasking}"
        )
    if parallel.rule == "eb" and remasking == "random":
        raise ValueError(
            "parallel=eb bounds the entropy of a prefix of an error-proxy order (EB-sampler); "
            "remasking=random is no such order: use low_confidence, entropy or margin"
        )
    if parallel.rule != "fixed" and remdm is not None:
        raise ValueError(
            f"remdm={remdm.strategy} follows LLaDA's fixed per-block step schedule; "
            f"it cannot be combined with parallel={parallel.rule}"
        )


def steps_for_budget(nfe: int, cfg_scale: float = 0.0) -> int:
    """Sampler steps that fit ``nfe`` denoiser calls: one call a step, two with CFG."""
    calls_per_step = 2 if cfg_scale > 0 else 1
    steps = int(nfe) // calls_per_step
    if steps < 1:
        raise ValueError(
            f"an NFE budget of {nfe} leaves no step (cfg_scale={cfg_scale} costs {calls_per_step} calls per step)"
        )
    return steps


def guided_logits(
    denoiser: Denoiser,
    canvas: torch.Tensor,
    attention_mask: torch.Tensor | None,
    prompt_len: int,
    cfg_scale: float,
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
    start: int = 0,
) -> torch.Tensor:
    """Logits for positions ``start..L-1`` of ``canvas`` ``[B, L]``; with ``cfg_scale > 0``
    guided by a prompt-masked copy.

    The unconditional copy is a separate ``forward`` call (not a doubled batch) so the seam's
    counter shows the real cost: CFG doubles the NFE. ``embed`` turns ids into the network's
    inputs (default ``denoiser.embed``).
    """
    embed = denoiser.embed if embed is None else embed
    logits = logits_from(denoiser, embed(canvas), attention_mask, start)
    if cfg_scale > 0:
        unconditional = canvas.clone()
        unconditional[:, :prompt_len] = denoiser.mask_id
        un_logits = logits_from(denoiser, embed(unconditional), attention_mask, start)
        logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
    return logits


def mdm_generate(
    denoiser: Denoiser,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor | None = None,
    *,
    gen_length: int,
    steps: int,
    block_length: int | None = None,
    temperature: float = 0.0,
    cfg_scale: float = 0.0,
    remasking: str = "low_confidence",
    logits_eos_inf: bool = False,
    confidence_eos_eot_inf: bool | str = False,
    remdm: RemdmConfig | None = None,
    parallel: ParallelConfig | None = None,
    generator: rng.Generators = None,
    trace: Callable[[StepTrace], None] | None = None,
    input_embeds_fn: Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor] | None = None,
) -> MDMOutput:
    """Generate ``gen_length`` tokens after each (left-padded) prompt row in ``steps`` steps
    (``parallel`` adaptive: at most ``steps``).

    ``prompt_mask`` is 1 on real tokens and 0 on left padding; ``None`` means no padding.
    ``generator`` drives every random draw (Gumbel noise, random confidences, ReMDM), so the
    same seed gives the same tokens; a sequence of generators, one per row, gives each row its
    own stream (:mod:`dslbench.diffusion.rng`: a row's tokens then do not depend on its batch).

    ``input_embeds_fn(canvas_ids, prev_logits, is_masked) -> embeds`` (soft-masking's hook)
    replaces ``denoiser.embed`` for the network inputs: ``canvas_ids`` ``[B, T]`` is the canvas
    (or its prompt-masked CFG copy), ``prev_logits`` ``[B, gen_length, V]`` the previous step's
    (guided) logits of the generated span (the last ``gen_length`` canvas positions; the prompt's
    are never computed), None at the first step, and ``is_masked`` ``[B, T]`` the still-masked
    positions of the generated span (prompt positions are never marked). Without it the sampler
    behaves exactly as before.
    """
    parallel = ParallelConfig() if parallel is None else parallel
    check_combination(remasking, parallel, remdm)
    block_length = gen_length if block_length is None else block_length
    num_blocks, steps_per_block = check_budget(gen_length, steps, block_length, fixed=parallel.rule == "fixed")

    batch, prompt_len = prompt_ids.shape
    device = prompt_ids.device
    mask_id = denoiser.mask_id
    canvas = torch.cat(
        [prompt_ids.long(), torch.full((batch, gen_length), mask_id, dtype=torch.long, device=device)], dim=1
    )
    attention_mask = None
    if prompt_mask is not None:
        gen_mask = torch.ones((batch, gen_length), dtype=prompt_mask.dtype, device=device)
        attention_mask = torch.cat([prompt_mask.to(device), gen_mask], dim=1)
    proposal = functools.partial(
        propose,
        temperature=temperature,
        remasking=remasking,
        eos_id=denoiser.eos_id,
        removed=removed_ids(eos_confidence_mode(confidence_eos_eot_inf), remasking, temperature, denoiser, device),
        rank_removed_last=eos_confidence_mode(confidence_eos_eot_inf) == "both",
        logits_eos_inf=logits_eos_inf,
        generator=generator,
        need_entropy=parallel.rule == "eb",
    )
    step_logits = functools.partial(_step_logits, denoiser, attention_mask, prompt_len, cfg_scale, input_embeds_fn)

    keep_prev = input_embeds_fn is not None  # the previous logits are kept only for soft-masking
    nfe_before = denoiser.nfe
    with torch.no_grad():
        if parallel.rule == "fixed":
            # left-padding columns of each row: the release's topk runs over the unpadded row
            pads = [0] * batch if prompt_mask is None else (prompt_mask == 0).sum(dim=1).tolist()
            _decode_fixed(canvas, step_logits, proposal, mask_id, prompt_len, block_length, num_blocks,
                          steps_per_block, remdm, generator, trace, keep_prev, pads)
            nfe = denoiser.nfe - nfe_before
            return MDMOutput(tokens=canvas[:, prompt_len:].clone(), nfe=nfe, steps=steps, row_nfe=(nfe,) * batch)
        taken, row_nfe = _decode_adaptive(canvas, step_logits, proposal, parallel, denoiser, mask_id, prompt_len,
                                          block_length, num_blocks, steps, trace, keep_prev)
    return MDMOutput(tokens=canvas[:, prompt_len:].clone(), nfe=denoiser.nfe - nfe_before, steps=taken,
                     row_nfe=tuple(int(n) for n in row_nfe))


def _step_logits(denoiser, attention_mask, prompt_len, cfg_scale, input_embeds_fn, canvas, prev_logits):
    """Guided logits of the generated span for the current canvas (one step's calls)."""
    embed = None
    if input_embeds_fn is not None:
        is_masked = canvas == denoiser.mask_id
        is_masked[:, :prompt_len] = False
        embed = functools.partial(_embed_with, input_embeds_fn, prev_logits, is_masked)
    return guided_logits(denoiser, canvas, attention_mask, prompt_len, cfg_scale, embed, prompt_len)


def _decode_fixed(canvas, step_logits, proposal, mask_id, prompt_len, block_length, num_blocks, steps_per_block,
                  remdm, generator, trace, keep_prev, pads) -> None:
    """LLaDA's schedule: each block gets ``steps_per_block`` steps and commits its masks evenly."""
    batch = canvas.shape[0]
    device = canvas.device
    prev_logits = None  # previous step's logits of the generated span (soft-masking's input)
    for block in range(num_blocks):
        lo = prompt_len + block * block_length
        hi = lo + block_length
        mask_count = (canvas[:, lo:hi] == mask_id).sum(dim=1)
        if remdm is None:
            schedule = transfer_schedule(mask_count, steps_per_block)
            host_schedule = schedule.tolist()  # one synchronisation a block: topk takes host counts
        else:
            schedule = block_schedule(remdm, mask_count, steps_per_block)
        # Probability of each token at the moment it was committed (ReMDM-conf reads it).
        commit_prob = torch.zeros((batch, block_length), dtype=torch.float64, device=device)

        for i in range(steps_per_block):
            current = canvas[:, lo:hi]
            masked = current == mask_id
            span_logits = step_logits(canvas, prev_logits)
            prev_logits = span_logits if keep_prev else None
            x0, x0_prob, confidence, _ = proposal(span_logits[:, lo - prompt_len : hi - prompt_len], rows=masked)

            n_commit = schedule[:, i]
            remasked = torch.zeros_like(masked)
            if remdm is not None:
                prob = remask_probability(remdm, i, steps_per_block, ~masked, commit_prob)
                if prob is not None:
                    # Remasked tokens are replaced by as many new commits, so the block keeps
                    # LLaDA's masked-count schedule; the pool left masked after this step bounds it.
                    room = masked.sum(dim=1) - n_commit
                    remasked = choose_remask(prob, room, generator)
                    n_commit = n_commit + remasked.sum(dim=1)

            confidence = confidence.masked_fill(~masked, float("-inf"))
            # torch.topk over each row's unpadded sequence, as the release (ties included); with
            # ReMDM the counts also hold the remasked tokens' replacements (eta = 0: plain LLaDA)
            k = [counts[i] for counts in host_schedule] if remdm is None else [int(v) for v in n_commit.tolist()]
            committed = released_top_k(confidence, k, lo, canvas.shape[1], pads) & masked
            updated = torch.where(committed, x0, current)
            updated = updated.masked_fill(remasked, mask_id)
            canvas[:, lo:hi] = updated
            commit_prob = torch.where(committed, x0_prob, commit_prob)

            if trace is not None:
                trace(_step_trace(block * steps_per_block + i, block, canvas, prompt_len, lo, hi, committed, remasked))


def _decode_adaptive(canvas, step_logits, proposal, parallel, denoiser, mask_id, prompt_len, block_length,
                     num_blocks, max_steps, trace, keep_prev) -> tuple[int, torch.Tensor]:
    """``threshold`` / ``eb``: steps until every row is decoded, at most ``max_steps``.

    Each row has its own current block; returns the steps taken and the calls each row needed.
    """
    batch, total = canvas.shape
    gen_length = total - prompt_len
    device = canvas.device
    block_of = torch.arange(gen_length, device=device) // block_length
    row_block = torch.zeros(batch, dtype=torch.long, device=device)
    row_steps = torch.zeros(batch, dtype=torch.long, device=device)
    row_nfe = torch.zeros(batch, dtype=torch.long, device=device)
    prev_logits = None
    step = 0
    while True:
        span = canvas[:, prompt_len:]
        masked = (span == mask_id) & (block_of[None, :] == row_block[:, None])
        active = masked.any(dim=1)
        if not bool(active.any()):
            return step, row_nfe
        calls_before = denoiser.nfe
        span_logits = step_logits(canvas, prev_logits)
        prev_logits = span_logits if keep_prev else None
        x0, x0_prob, score, entropy = proposal(span_logits, rows=masked)

        n_masked = masked.sum(dim=1)
        # Steps this row may still give its current block: every later block keeps one.
        left = (max_steps - row_steps - (num_blocks - 1 - row_block)).clamp(min=1)
        floor = (n_masked + left - 1) // left
        wanted = adaptive_count(parallel, score, masked, x0_prob, entropy)
        n_commit = torch.minimum(torch.maximum(wanted, floor), n_masked)

        score = score.masked_fill(~masked, float("-inf"))
        committed = top_k_per_row(score, n_commit) & masked
        canvas[:, prompt_len:] = torch.where(committed, x0, span)

        row_steps += active.long()
        row_nfe += active.long() * (denoiser.nfe - calls_before)
        block_done = ~((canvas[:, prompt_len:] == mask_id) & (block_of[None, :] == row_block[:, None])).any(dim=1)
        row_block = torch.where(block_done & (row_block < num_blocks - 1), row_block + 1, row_block)
        if trace is not None:
            zeros = torch.zeros_like(committed)
            first = int(row_block.min())
            trace(StepTrace(step=step, block=first, tokens=canvas[:, prompt_len:].clone(), committed=committed.clone(),
                            remasked=zeros))
        step += 1
        if step > max_steps:  # the floor above makes this unreachable; a guard, not a limit
            raise RuntimeError(f"adaptive decoding ran past its cap of {max_steps} steps")


def _embed_with(input_embeds_fn, prev_logits, is_masked, ids: torch.Tensor) -> torch.Tensor:
    return input_embeds_fn(ids, prev_logits, is_masked)


def _step_trace(step, block, canvas, prompt_len, lo, hi, committed, remasked) -> StepTrace:
    span = canvas[:, prompt_len:]
    lo_g, hi_g = lo - prompt_len, hi - prompt_len
    full_committed = torch.zeros_like(span, dtype=torch.bool)
    full_remasked = torch.zeros_like(span, dtype=torch.bool)
    full_committed[:, lo_g:hi_g] = committed
    full_remasked[:, lo_g:hi_g] = remasked
    return StepTrace(
        step=step,
        block=block,
        tokens=span.clone(),
        committed=full_committed,
        remasked=full_remasked,
    )
