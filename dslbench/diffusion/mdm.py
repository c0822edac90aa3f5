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

Orders (``remasking``, which masked positions go first): ``low_confidence`` (probability of
``x0``, LLaDA), ``random`` (a uniform draw, LLaDA), ``entropy`` (lowest predictive entropy first:
Dream's ``entropy`` algorithm scores ``sum(p * log(p + 1e-10))`` and takes the highest) and
``margin`` (largest top-1 minus top-2 probability first: Dream's ``topk_margin``).

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

Optional: ``logits_eos_inf`` (EOS can never be proposed), ``confidence_eos_eot_inf`` (see
below), and ReMDM remasking (:mod:`dslbench.diffusion.remdm`), which may send committed tokens of
the current block back to the mask so that later steps revise them, within the same NFE budget.

``confidence_eos_eot_inf`` as released (``true`` / ``released``, the paper's "+EOS" runs):
LLaDA's ``generate.py`` sets the EOS column of the noisy logits and the end-of-turn column of the
logits to -inf after choosing ``x0``, then takes the confidence softmax over the logits. At
temperature 0 its noise function returns the logits tensor itself, so both writes land in it and
both ids leave the softmax; at temperature > 0 the noisy tensor is a new one, so only end-of-turn
leaves it (EOS keeps its probability); with ``random`` remasking the confidences are uniform
draws and nothing changes. Leaving the softmax means a position proposing that id scores 0 and
the others are renormalised. ``both`` is stricter than the release: every id in
``denoiser.eos_ids`` leaves the softmax at any temperature, and with an order that does not read
the proposal's probability (``random``, ``entropy``, ``margin``) positions proposing them rank
below every other candidate. With ``entropy`` / ``margin`` (not in LLaDA) the removed ids leave
the distribution those scores are computed from, as they leave LLaDA's confidence softmax.

Where this deliberately departs from LLaDA's published ``generate``:

- CFG runs the unconditional copy as a second call instead of a doubled batch, so the seam
  counts it (same logits, honest NFE).
- The confidence softmax is taken in float64 (as LLaDA's first release; the later one takes it in
  the logits' dtype).
- Gumbel-max is ranked in log space (same argmax as ``exp(l) / (-log u)^T``, no overflow).
- Only the current block's logits are post-processed (positions outside it can never be
  committed, which the reference expresses with -inf confidences); ties in confidence go to the
  lower position.
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
from dslbench.diffusion.remdm import RemdmConfig, block_schedule, choose_remask, remask_probability

REMASKING_RULES = ("low_confidence", "random", "entropy", "margin")
PARALLEL_RULES = ("fixed", "threshold", "eb")
EOS_CONFIDENCE_MODES = ("false", "released", "both")
_DREAM_LOG_EPS = 1e-10  # Dream's entropy score reads log(p + 1e-10)
_RANK_LAST = -1e30  # below every score of a masked position, above the -inf of the others


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


def eos_confidence_mode(value) -> str:
    """Normalise ``confidence_eos_eot_inf``: off (false), ``released`` (true) or ``both``."""
    if isinstance(value, bool) or value is None:
        return "released" if value else "false"
    text = str(value).strip().lower()
    if text in ("false", "0", "no", "off", "none"):
        return "false"
    if text in ("true", "1", "yes", "released"):
        return "released"
    if text == "both":
        return "both"
    raise ValueError(
        f"confidence_eos_eot_inf={value!r}: expected false, true (= released, LLaDA's generate.py) or both"
    )


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
    num_blocks, steps_per_block = _check_budget(gen_length, steps, block_length, fixed=parallel.rule == "fixed")

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
        _propose,
        temperature=temperature,
        remasking=remasking,
        eos_id=denoiser.eos_id,
        removed=_removed_ids(eos_confidence_mode(confidence_eos_eot_inf), remasking, temperature, denoiser, device),
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
            _decode_fixed(canvas, step_logits, proposal, mask_id, prompt_len, block_length, num_blocks,
                          steps_per_block, remdm, generator, trace, keep_prev)
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
                  remdm, generator, trace, keep_prev) -> None:
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
            committed = top_k_per_row(confidence, n_commit) & masked
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


def _embed_with(input_embeds_fn, prev_logits, is_masked, ids: torch.Tensor) -> torch.Tensor:
    return input_embeds_fn(ids, prev_logits, is_masked)


def top_k_per_row(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the ``k[b]`` highest scores of each row (ties: lower index first)."""
    order = scores.argsort(dim=-1, descending=True, stable=True)
    ranks_taken = torch.arange(scores.shape[-1], device=scores.device)[None, :] < k.to(scores.device)[:, None]
    return torch.zeros_like(ranks_taken).scatter(1, order, ranks_taken)


def _check_budget(gen_length: int, steps: int, block_length: int, fixed: bool = True) -> tuple[int, int]:
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


def _removed_ids(mode: str, remasking: str, temperature: float, denoiser, device) -> torch.Tensor:
    """Ids that leave the scoring distribution under ``confidence_eos_eot_inf`` (module docstring)."""
    eos_ids = tuple(denoiser.eos_ids)
    if mode == "both":
        ids = eos_ids
    elif mode == "released" and remasking != "random":
        # generate.py: at T = 0 both writes hit the logits; at T > 0 only end-of-turn does.
        ids = eos_ids if temperature == 0 else tuple(i for i in eos_ids if i != denoiser.eos_id)
    else:
        ids = ()
    return torch.tensor(ids, dtype=torch.long, device=device)


def _propose(
    logits: torch.Tensor,
    *,
    temperature: float,
    remasking: str,
    eos_id: int,
    removed: torch.Tensor,
    rank_removed_last: bool,
    logits_eos_inf: bool,
    generator: rng.Generators,
    rows: torch.Tensor | None = None,
    need_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Candidate tokens, their softmax probabilities, the score used for ranking (higher first)
    and, when ``need_entropy``, each position's entropy in nats.

    ``rows`` (bool, the logits' leading shape): the positions whose proposal can be used (the
    still-masked ones); elsewhere the CPU paths without random draws leave token 0 and zeros,
    values the sampler never reads (commits and their scores are taken at masked positions only).
    """
    stats = remasking in ("entropy", "margin") or need_entropy
    draws = temperature > 0
    # On CPU the float64 passes over the vocabulary are the sampler's main cost: without random
    # draws they run on the masked rows only. Elsewhere selecting rows would cost a device-host
    # synchronisation per step; with draws, the draw count must not depend on the rows.
    select = rows is not None and logits.device.type == "cpu" and not draws
    if select:
        where = rows.nonzero(as_tuple=True)
        part = _proposal(logits[where], temperature, eos_id, removed, logits_eos_inf, generator, stats)
        full = []
        for value, dtype in zip(part, (torch.long, torch.float64, torch.float64, torch.float64)):
            if value is None:
                full.append(None)
                continue
            out = torch.zeros(rows.shape, dtype=dtype)
            out[where] = value
            full.append(out)
        x0, x0_prob, neg_entropy, margin = full
    else:
        x0, x0_prob, neg_entropy, margin = _proposal(logits, temperature, eos_id, removed, logits_eos_inf, generator, stats)

    if remasking == "low_confidence":
        score = x0_prob
    elif remasking == "random":
        score = rng.rand(x0.shape, generator, device=x0.device, dtype=torch.float64)
    elif remasking == "entropy":
        score = neg_entropy
    else:
        score = margin
    if rank_removed_last and remasking != "low_confidence" and removed.numel():
        # low_confidence already scores them 0; the other orders do not read that probability.
        score = score.masked_fill(torch.isin(x0, removed), -1.0 if remasking == "random" else _RANK_LAST)
    entropy = None if neg_entropy is None or not need_entropy else -neg_entropy
    return x0, x0_prob, score, entropy


def _proposal(raw, temperature, eos_id, removed, logits_eos_inf, generator, stats):
    """``(x0, p(x0), neg_entropy, margin)``; the last two only with ``stats`` (else None)."""
    if temperature == 0 and not logits_eos_inf and not removed.numel() and not stats:
        x0, x0_prob = _greedy_float64(raw)
        return x0, x0_prob, None, None
    x0, x0_prob, ranking_logits = _proposal_float64(raw, temperature, eos_id, removed, logits_eos_inf, generator)
    if not stats:
        return x0, x0_prob, None, None
    neg_entropy, margin = _distribution_scores(ranking_logits)
    return x0, x0_prob, neg_entropy, margin


def _distribution_scores(ranking_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dream's two scores of each position's float64 distribution: ``sum(p * log(p + 1e-10))``
    (negative entropy; highest first) and top-1 minus top-2 probability (highest first)."""
    p = torch.softmax(ranking_logits, dim=-1)
    neg_entropy = (p * torch.log(p + _DREAM_LOG_EPS)).sum(dim=-1)
    top2 = p.topk(2, dim=-1).values
    return neg_entropy, top2[..., 0] - top2[..., 1]


def _greedy_float64(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax token and its float64 softmax probability, bit-identical to the general path
    (``exp(l[x0] - logsumexp(l))`` with ``logsumexp = log(sum(exp(l - max))) + max``, the
    formula torch's own logsumexp evaluates) in one max pass and one in-place float64 pass."""
    top, x0 = raw.max(dim=-1)  # the float32 max is exact in float64
    top = top.to(torch.float64)
    shift = top.masked_fill(torch.isinf(top), 0.0)  # as logsumexp does for infinite maxima
    total = raw.to(torch.float64).sub_(shift[..., None]).exp_().sum(dim=-1)
    return x0, torch.exp(top - (total.log_() + shift))


def _proposal_float64(raw, temperature, eos_id, removed, logits_eos_inf, generator):
    """Candidate tokens, their float64 softmax probabilities over the scoring distribution
    (``removed`` ids left out) and that distribution's logits."""
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
    if removed.numel():
        # The proposal is chosen first; its probability is then read with the removed ids out
        # of the softmax, as in LLaDA's option: a position proposing them scores 0.
        ranking_logits = logits.clone()
        ranking_logits[..., removed] = float("-inf")
    x0_logit = ranking_logits.gather(-1, x0[..., None]).squeeze(-1)
    return x0, torch.exp(x0_logit - torch.logsumexp(ranking_logits, dim=-1)), ranking_logits


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
