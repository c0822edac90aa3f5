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

Optional: ``logits_eos_inf`` (EOS can never be proposed), ``confidence_eos_eot_inf`` (positions
whose proposal is EOS or end-of-turn rank below every other candidate), and ReMDM remasking
(:mod:`dslbench.diffusion.remdm`), which may send committed tokens of the current block back to
the mask so that later steps revise them, within the same NFE budget.

Where this deliberately departs from LLaDA's published ``generate``:

- CFG runs the unconditional copy as a second call instead of a doubled batch, so the seam
  counts it (same logits, honest NFE).
- ``confidence_eos_eot_inf`` removes every id in ``denoiser.eos_ids`` from the confidence
  softmax; the published code means to do this for EOS and EoT but only reaches EoT. With
  ``random`` confidences such positions get -1 (below any draw).
- Gumbel-max is ranked in log space (same argmax as ``exp(l) / (-log u)^T``, no overflow).
- Only the current block's logits are post-processed (positions outside it can never be
  committed, which the reference expresses with -inf confidences); ties in confidence go to the
  lower position.
- A prompt token equal to ``mask_id`` is never filled (only the generated span is decoded).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from dslbench.diffusion import rng
from dslbench.diffusion.denoiser import Denoiser, logits_from
from dslbench.diffusion.remdm import RemdmConfig, block_schedule, choose_remask, remask_probability

REMASKING_RULES = ("low_confidence", "random")


@dataclass(frozen=True)
class MDMOutput:
    tokens: torch.Tensor  # [B, gen_length], the generated span only
    nfe: int  # denoiser calls made by this generation, read from the seam's counter
    steps: int  # sampler steps taken (NFE is twice this with CFG)


@dataclass(frozen=True)
class StepTrace:
    """What one step did; handed to ``trace`` after every step (tensors are copies)."""

    step: int  # 0 .. steps-1 over the whole generation
    block: int
    tokens: torch.Tensor  # [B, gen_length] generated span after the step
    committed: torch.Tensor  # [B, gen_length] bool, positions committed at this step
    remasked: torch.Tensor  # [B, gen_length] bool, positions sent back to the mask (ReMDM)


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
    confidence_eos_eot_inf: bool = False,
    remdm: RemdmConfig | None = None,
    generator: rng.Generators = None,
    trace: Callable[[StepTrace], None] | None = None,
    input_embeds_fn: Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor] | None = None,
) -> MDMOutput:
    """Generate ``gen_length`` tokens after each (left-padded) prompt row in ``steps`` steps.

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
    block_length = gen_length if block_length is None else block_length
    num_blocks, steps_per_block = _check_budget(gen_length, steps, block_length)
    if remasking not in REMASKING_RULES:
        raise ValueError(f"remasking={remasking!r} is not one of {', '.join(REMASKING_RULES)}")

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
    eos_ids = torch.tensor(tuple(denoiser.eos_ids), dtype=torch.long, device=device)

    nfe_before = denoiser.nfe
    prev_logits = None  # previous step's logits of the generated span, kept only for input_embeds_fn
    with torch.no_grad():
        for block in range(num_blocks):
            lo = prompt_len + block * block_length
            hi = lo + block_length
            mask_count = (canvas[:, lo:hi] == mask_id).sum(dim=1)
            if remdm is None:
                schedule = transfer_schedule(mask_count, steps_per_block)
            else:
                schedule = block_schedule(remdm, mask_count, steps_per_block)
            # Probability of each token at the moment it was committed (ReMDM-conf reads it).
            commit_prob = torch.zeros((batch, block_length), dtype=torch.float64, device=device)

            for i in range(steps_per_block):
                current = canvas[:, lo:hi]
                masked = current == mask_id
                embed = None
                if input_embeds_fn is not None:
                    is_masked = canvas == mask_id
                    is_masked[:, :prompt_len] = False
                    embed = functools.partial(_embed_with, input_embeds_fn, prev_logits, is_masked)
                span_logits = guided_logits(denoiser, canvas, attention_mask, prompt_len, cfg_scale, embed, prompt_len)
                if input_embeds_fn is not None:
                    prev_logits = span_logits
                logits = span_logits[:, lo - prompt_len : hi - prompt_len]
                x0, x0_prob, confidence = _propose(
                    logits,
                    temperature=temperature,
                    remasking=remasking,
                    eos_id=denoiser.eos_id,
                    eos_ids=eos_ids,
                    logits_eos_inf=logits_eos_inf,
                    confidence_eos_eot_inf=confidence_eos_eot_inf,
                    generator=generator,
                    rows=masked,
                )

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
                committed = top_k_per_row(confidence, n_commit) & masked
                updated = torch.where(committed, x0, current)
                updated = updated.masked_fill(remasked, mask_id)
                canvas[:, lo:hi] = updated
                commit_prob = torch.where(committed, x0_prob, commit_prob)

                if trace is not None:
                    trace(_step_trace(block, i, steps_per_block, canvas, prompt_len, lo, hi, committed, remasked))

    return MDMOutput(tokens=canvas[:, prompt_len:].clone(), nfe=denoiser.nfe - nfe_before, steps=steps)


def _embed_with(input_embeds_fn, prev_logits, is_masked, ids: torch.Tensor) -> torch.Tensor:
    return input_embeds_fn(ids, prev_logits, is_masked)


def top_k_per_row(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the ``k[b]`` highest scores of each row (ties: lower index first)."""
    order = scores.argsort(dim=-1, descending=True, stable=True)
    ranks_taken = torch.arange(scores.shape[-1], device=scores.device)[None, :] < k.to(scores.device)[:, None]
    return torch.zeros_like(ranks_taken).scatter(1, order, ranks_taken)


def _check_budget(gen_length: int, steps: int, block_length: int) -> tuple[int, int]:
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
    if steps % num_blocks != 0:
        raise ValueError(
            f"steps={steps} cannot be split evenly over {num_blocks} blocks "
            f"(gen_length={gen_length} / block_length={block_length})"
        )
    return num_blocks, steps // num_blocks


def _propose(
    logits: torch.Tensor,
    *,
    temperature: float,
    remasking: str,
    eos_id: int,
    eos_ids: torch.Tensor,
    logits_eos_inf: bool,
    confidence_eos_eot_inf: bool,
    generator: rng.Generators,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidate tokens, their softmax probabilities and the confidence used for ranking.

    ``rows`` (bool, the logits' leading shape): the positions whose proposal can be used (the
    still-masked ones); elsewhere the greedy CPU path leaves token 0 with probability 0, values
    the sampler never reads (commits and their probabilities are taken at masked positions only).
    """
    raw = logits
    if temperature == 0 and not logits_eos_inf and not (confidence_eos_eot_inf and eos_ids.numel()):
        if rows is not None and raw.device.type == "cpu":
            # The float64 pass over the vocabulary is the sampler's main cost; on CPU it runs on
            # the masked rows only (on average half of a block). Elsewhere selecting rows would
            # cost a device-host synchronisation per step.
            where = rows.nonzero(as_tuple=True)
            x0 = torch.zeros(rows.shape, dtype=torch.long)
            x0_prob = torch.zeros(rows.shape, dtype=torch.float64)
            x0[where], x0_prob[where] = _greedy_float64(raw[where])
        else:
            x0, x0_prob = _greedy_float64(raw)
    else:
        x0, x0_prob = _proposal_float64(raw, temperature, eos_id, eos_ids, logits_eos_inf, confidence_eos_eot_inf, generator)

    if remasking == "low_confidence":
        confidence = x0_prob
    else:
        confidence = rng.rand(x0.shape, generator, device=x0.device, dtype=torch.float64)
        if confidence_eos_eot_inf and eos_ids.numel():
            confidence = confidence.masked_fill(torch.isin(x0, eos_ids), -1.0)
    return x0, x0_prob, confidence


def _greedy_float64(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax token and its float64 softmax probability, bit-identical to the general path
    (``exp(l[x0] - logsumexp(l))`` with ``logsumexp = log(sum(exp(l - max))) + max``, the
    formula torch's own logsumexp evaluates) in one max pass and one in-place float64 pass."""
    top, x0 = raw.max(dim=-1)  # the float32 max is exact in float64
    top = top.to(torch.float64)
    shift = top.masked_fill(torch.isinf(top), 0.0)  # as logsumexp does for infinite maxima
    total = raw.to(torch.float64).sub_(shift[..., None]).exp_().sum(dim=-1)
    return x0, torch.exp(top - (total.log_() + shift))


def _proposal_float64(raw, temperature, eos_id, eos_ids, logits_eos_inf, confidence_eos_eot_inf, generator):
    """Candidate tokens and their float64 softmax probabilities (sampling and EOS options)."""
    logits = raw.to(torch.float64)
    if logits_eos_inf:
        logits = logits.clone()  # never write into the denoiser's own tensor
        logits[..., eos_id] = float("-inf")

    if temperature > 0:
        # Gumbel-max in float64 with LLaDA's noise: it ranks exp(l) / (-log u)^T; the log of that,
        # l - T * log(-log u), has the same argmax and cannot overflow for large logits.
        u = rng.rand(logits.shape, generator, device=logits.device, dtype=torch.float64)
        x0 = (logits - temperature * torch.log(-torch.log(u))).argmax(dim=-1)
    elif logits_eos_inf:
        x0 = logits.argmax(dim=-1)
    else:
        x0 = raw.argmax(dim=-1)  # widening to float64 is exact: the same argmax, half the bytes read

    ranking_logits = logits
    if confidence_eos_eot_inf and eos_ids.numel():
        # The probability is taken over logits with EOS/EoT removed, as in LLaDA's option, so a
        # position proposing them scores 0 and the others are renormalised.
        ranking_logits = logits.clone()
        ranking_logits[..., eos_ids] = float("-inf")
    x0_logit = ranking_logits.gather(-1, x0[..., None]).squeeze(-1)
    return x0, torch.exp(x0_logit - torch.logsumexp(ranking_logits, dim=-1))


def _step_trace(block, i, steps_per_block, canvas, prompt_len, lo, hi, committed, remasked) -> StepTrace:
    span = canvas[:, prompt_len:]
    lo_g, hi_g = lo - prompt_len, hi - prompt_len
    full_committed = torch.zeros_like(span, dtype=torch.bool)
    full_remasked = torch.zeros_like(span, dtype=torch.bool)
    full_committed[:, lo_g:hi_g] = committed
    full_remasked[:, lo_g:hi_g] = remasked
    return StepTrace(
        step=block * steps_per_block + i,
        block=block,
        tokens=span.clone(),
        committed=full_committed,
        remasked=full_remasked,
    )
