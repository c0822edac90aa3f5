"""DSL decoding by stochastic localization, over the DSL denoiser seam.

The DSL seam is the usual denoiser (``embed``, counted ``forward``, ``mask_id``, ``eos_ids``,
``vocab_size``, ``nfe``) plus ``convert(z, beta_scale) -> backbone inputs`` (the converter; not
an NFE) and ``noise_embedding`` (``E_n``, ``[V, d]``, unit-norm rows).

State ``y = z / s`` on an increasing SNR grid ``s_0 < ... < s_n``. Start: ``y_0`` = random unit
vectors at the response positions. One *evaluation* at ``(y, s)``: ``z = s * y`` -> converter ->
backbone (prompt positions get their clean token embeddings) -> probabilities ->
``xhat = sum over the top-k renormalised probabilities of E_n rows`` (top-512 by default). Drift
``f = (xhat - y) / s``, noise ``g = ns / s`` (``ns = 1`` is the exact SL SDE
``dy = (xhat - y)/s ds + dW/s``). A Heun step: Euler predictor
``y_e = y + f ds + g dW``, then the trapezoid corrector
``y' = y + (f + f_e)/2 ds + (g + g_e)/2 dW`` with the *same* ``dW ~ N(0, |ds|)``. After the last
step one more pass at ``s_n`` and the answer is the argmax of its logits.

Samplers: ``sde`` (Heun, ``ns`` by budget), ``ode`` (Heun, ``ns = 0``), ``euler`` (one call
per step, ``ns`` by budget).

One-call steps (every step of ``euler``, and the odd call of a Heun budget, below) default to the
*exponential-Euler* form ``y' = xhat + (y - xhat) * s / s' + g dW``: the drift integrated exactly
with ``xhat`` frozen over the step. It equals the plain Euler-Maruyama step ``y + f ds + g dW`` to
first order in ``ds / s`` but cannot overshoot when ``ds / s`` is large (the first interval of the
grid, 0.01 -> 7, has ``ds / s ~ 700``: a plain Euler step multiplies ``y - xhat`` by -699 there).
``one_call_step="plain"`` gives the plain form. The Heun predictor is always the plain Euler step,
as published.

Published noise scale by budget: 0.1 (NFE <= 8), 0.05 (<= 16), 0.01 (<= 32), 0.005 above. Beta at inference = 2 x the trained beta
(``beta_scale = 2`` relative to the converter's learned ``beta``).

SNR grid ("sensitive", published): for n steps, ``n1 = max(1, int(0.05 n))`` log-spaced steps
0.01 -> 7, ``n2 = max(1, int(0.9 n))`` log-spaced steps 7 -> 74 and the remaining
``n3 = n - n1 - n2`` steps 74 -> 100. When ``n3 = 0`` (every n from 2 to 10) the
grid ends at 74, not 100, exactly as published. For ``n = 1`` the published construction gives
*two* steps (``n3 = -1`` drops the last segment); :func:`snr_grid` uses the single step
``[0.01, 100]`` instead so that the step count is exact, while :func:`published_snr_grid` keeps
the quirk. ``n = 0`` is the grid ``[100]`` (only the final pass, from the random start).

SNR grid "uniform" (``snr_schedule="uniform"``): ``n`` steps log-spaced 0.01 -> 100, the released
open-ended script's grid for its models other than the beta-1 ones (no quirks; ``n = 0`` is
``[100]``).

``numerics="released"`` (:mod:`dslbench.diffusion.sde_released`) runs this same loop with the
released script's arithmetic (float32 state, grid and draws, its converter and posterior mean);
the default ``"dslbench"`` keeps float64 state and draws.

NFE accounting (every ``forward`` call is counted at the seam; the budget caps calls per sample,
the final argmax pass included):

- ``strict`` (default). Heun samplers: ``h = (B - 1) // 2`` Heun steps and, when ``B - 1`` is
  odd, one extra one-call step, so the calls are ``2h + e + 1 = B`` exactly: every call of the
  budget is used and none more. The grid has ``h + e`` steps; the extra step is the *last*
  interval (the highest SNRs, where the posterior mean moves least over a step). Budget 16 -> 7
  Heun steps + 1 one-call step + the final pass; budget 8 -> 3 + 1 + 1; budget 4 -> 1 + 1 + 1;
  budget 3 -> 1 Heun step + the final pass; budget 2 -> one one-call step + the final pass;
  budget 1 -> only the final pass. ``euler``: ``B - 1`` one-call steps + the final pass.
- ``published``: what the released script runs: ``nfe // 2`` Heun steps on the published grid
  plus one final pass, i.e. NFE + 1 calls for even NFE (and 5 calls for NFE 2 or 3, where the
  published grid has two steps). The measured count is still what is reported. ``euler`` under
  published accounting runs ``nfe`` one-call steps + the final pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from dslbench.diffusion import rng, sde_released
from dslbench.diffusion.denoiser import logits_reader
from dslbench.diffusion.sde_released import NUMERICS, SNR_SCHEDULES

SAMPLERS = ("sde", "euler", "ode")
ACCOUNTINGS = ("strict", "published")
ONE_CALL_STEPS = ("exponential", "plain")
SNR_MIN = 0.01
SNR_KNOTS = (7.0, 74.0)
SNR_MAX = 100.0
DEFAULT_TOPK = 512
DEFAULT_BETA_SCALE = 2.0
# float32 exp of anything below about -87.3 is subnormal or 0, and torch's CPU kernel leaves its
# vectorised path for such inputs: about 50x slower per element (measured here, torch 2.13).
EXP_FAST_FLOOR = -87.0


@runtime_checkable
class DSLSeam(Protocol):
    mask_id: int
    eos_id: int
    eos_ids: tuple[int, ...]
    vocab_size: int
    nfe: int
    noise_embedding: torch.Tensor  # [V, d]

    def embed(self, ids: torch.Tensor) -> torch.Tensor: ...

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor: ...

    def convert(self, z: torch.Tensor, beta_scale: float = 1.0) -> torch.Tensor: ...


# ---------------------------------------------------------------------------------------------
# Schedules and budgets


def noise_scale_for_budget(nfe: int) -> float:
    """Published noise scale by NFE budget: 0.1 (<= 8), 0.05 (<= 16), 0.01 (<= 32), 0.005 above."""
    if nfe <= 8:
        return 0.1
    if nfe <= 16:
        return 0.05
    if nfe <= 32:
        return 0.01
    return 0.005


def _segment_counts(steps: int) -> tuple[int, int, int]:
    n1 = max(1, int(steps * 0.05))
    n2 = max(1, int(steps * 0.90))
    return n1, n2, steps - n1 - n2


def _log_spaced(lo: float, hi: float, n: int) -> list[float]:
    """n+1 points from lo to hi, equally spaced in log (n >= 0; n = 0 gives [lo])."""
    if n <= 0:
        return [lo]
    a, b = math.log(lo), math.log(hi)
    return [math.exp(a + (b - a) * i / n) for i in range(n + 1)]


def published_snr_grid(steps: int, snr_min: float = SNR_MIN, snr_max: float = SNR_MAX) -> torch.Tensor:
    """The released "sensitive" grid for ``steps`` Heun steps, quirks included (float64).

    ``steps = 1`` yields three points (two steps); ``steps < 1`` is an error (the released code
    fails there too).
    """
    if steps < 1:
        raise ValueError(f"the published SNR grid needs steps >= 1, got steps={steps}")
    n1, n2, n3 = _segment_counts(steps)
    k1, k2 = SNR_KNOTS
    points = _log_spaced(snr_min, k1, n1) + _log_spaced(k1, k2, n2)[1:]
    if n3 > 0:
        points += _log_spaced(k2, snr_max, n3)[1:]
    return torch.tensor(points, dtype=torch.float64)


def snr_grid(steps: int, snr_min: float = SNR_MIN, snr_max: float = SNR_MAX) -> torch.Tensor:
    """The "sensitive" grid with exactly ``steps`` intervals (``steps + 1`` points, float64).

    Equal to :func:`published_snr_grid` for ``steps >= 2``; ``[snr_min, snr_max]`` for one step;
    ``[snr_max]`` for none.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got steps={steps}")
    if steps == 0:
        return torch.tensor([snr_max], dtype=torch.float64)
    if steps == 1:
        return torch.tensor([snr_min, snr_max], dtype=torch.float64)
    return published_snr_grid(steps, snr_min, snr_max)


def uniform_snr_grid(steps: int, snr_min: float = SNR_MIN, snr_max: float = SNR_MAX) -> torch.Tensor:
    """``steps`` intervals log-spaced ``snr_min -> snr_max`` (float64); ``[snr_max]`` for none."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got steps={steps}")
    if steps == 0:
        return torch.tensor([snr_max], dtype=torch.float64)
    return torch.tensor(_log_spaced(snr_min, snr_max, steps), dtype=torch.float64)


def schedule_grid(steps: int, schedule: str = "sensitive", published: bool = False) -> torch.Tensor:
    """The float64 grid of ``schedule`` for ``steps`` steps; ``published``: the sensitive grid's
    released quirks (see :func:`published_snr_grid`)."""
    if schedule not in SNR_SCHEDULES:
        raise ValueError(f"snr_schedule={schedule!r}; allowed: {', '.join(SNR_SCHEDULES)}")
    if schedule == "uniform":
        return uniform_snr_grid(steps)
    return published_snr_grid(steps) if published else snr_grid(steps)


@dataclass(frozen=True)
class StepPlan:
    """How a budget is spent: ``heun`` two-call steps, then ``euler`` one-call steps, then the
    final pass. ``calls`` = ``2 * heun + euler + 1``."""

    heun: int
    euler: int
    grid: torch.Tensor  # heun + euler + 1 points: float64, or float32 under numerics=released
    accounting: str
    budget: int
    snr_schedule: str = "sensitive"
    numerics: str = "dslbench"

    @property
    def steps(self) -> int:
        return self.heun + self.euler

    @property
    def calls(self) -> int:
        return 2 * self.heun + self.euler + 1


def plan_steps(
    nfe: int, sampler: str = "sde", accounting: str = "strict", snr_schedule: str = "sensitive", numerics: str = "dslbench"
) -> StepPlan:
    """Fit the step count to an NFE budget (see the module docstring for the rule); the grid is
    ``snr_schedule``'s, built with ``numerics``' arithmetic."""
    if numerics not in NUMERICS:
        raise ValueError(f"numerics={numerics!r}; allowed: {', '.join(NUMERICS)}")
    if snr_schedule not in SNR_SCHEDULES:
        raise ValueError(f"snr_schedule={snr_schedule!r}; allowed: {', '.join(SNR_SCHEDULES)}")
    build = sde_released.released_grid if numerics == "released" else schedule_grid
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if accounting not in ACCOUNTINGS:
        raise ValueError(f"accounting={accounting!r}; allowed: {', '.join(ACCOUNTINGS)}")
    nfe = int(nfe)
    if accounting == "strict":
        if nfe < 1:
            raise ValueError(f"an NFE budget of {nfe} leaves no room for the final argmax pass (need nfe >= 1)")
        if sampler == "euler":
            heun, euler = 0, nfe - 1
        else:
            heun, euler = (nfe - 1) // 2, (nfe - 1) % 2
        grid = build(heun + euler, snr_schedule)
    else:
        if sampler == "euler":
            if nfe < 1:
                raise ValueError(f"published accounting needs nfe >= 1, got nfe={nfe}")
            heun, euler = 0, nfe
            grid = build(nfe, snr_schedule)
        else:
            if nfe < 2:
                raise ValueError(
                    f"published accounting runs nfe // 2 Heun steps and needs nfe >= 2, got nfe={nfe}"
                )
            grid = build(nfe // 2, snr_schedule, published=True)
            heun, euler = len(grid) - 1, 0
    return StepPlan(heun=heun, euler=euler, grid=grid, accounting=accounting, budget=nfe,
                    snr_schedule=snr_schedule, numerics=numerics)


# ---------------------------------------------------------------------------------------------
# The sampler


@dataclass(frozen=True)
class DSLOutput:
    tokens: torch.Tensor  # [B, gen_length] argmax of the final logits
    nfe: int  # denoiser calls made (read from the seam's counter)
    plan: StepPlan
    noise_scale: float
    y: torch.Tensor  # [B, gen_length, d] final state (float64; float32 under numerics=released)
    logits: torch.Tensor  # [B, gen_length, V] final logits (float32)

    @property
    def steps(self) -> int:
        return self.plan.steps


@dataclass(frozen=True)
class SDEStepTrace:
    step: int
    snr: float  # s at the start of the step
    snr_next: float
    kind: str  # "heun" or "euler"
    y: torch.Tensor  # state after the step (copy)
    tokens: torch.Tensor  # argmax of the logits of the step's first evaluation
    probs: torch.Tensor | None = None  # softmax probability of ``tokens`` at that evaluation


def scratch(buffers: dict[str, torch.Tensor] | None, name: str, like: torch.Tensor) -> torch.Tensor:
    """A buffer shaped like ``like`` for one role (``name``), kept in ``buffers`` across calls.

    The vocabulary-wide temporaries of :func:`posterior_mean` are megabytes per evaluation;
    fresh ones at every evaluation cost allocation and page faults. ``buffers=None``: a new one.
    """
    if buffers is None:
        return torch.empty_like(like, memory_format=torch.contiguous_format)
    buf = buffers.get(name)
    if buf is None or buf.shape != like.shape or buf.dtype != like.dtype or buf.device != like.device:
        buf = buffers[name] = torch.empty(like.shape, dtype=like.dtype, device=like.device)
    return buf


def kth_largest(scores: torch.Tensor, k: int, work: torch.Tensor | None = None) -> torch.Tensor:
    """The ``k``-th largest value along the last dim, ``[..., 1]`` (1 <= k <= width).

    On CPU numpy's introselect finds it about 5x faster than ``torch.topk`` (which keeps indices
    and a heap per row); elsewhere ``topk`` is a single fast kernel and its minimum is the value.
    ``work`` (CPU: a contiguous tensor of the scores' shape, float32 or the scores' dtype) takes
    the copy that the selection reorders, instead of a fresh array; its contents are overwritten:
    afterwards it holds that partitioned copy (the values below the threshold first).
    """
    width = scores.shape[-1]
    if scores.device.type == "cpu":
        values = scores.detach()
        if values.dtype == torch.bfloat16:  # numpy has no bfloat16; widening is exact
            values = values.float()
        if work is None:
            part = np.partition(values.contiguous().numpy(), width - k, axis=-1)
        else:
            part = work.numpy()
            np.copyto(part, values.numpy())
            part.partition(width - k, axis=-1)
        return torch.from_numpy(part[..., width - k : width - k + 1].copy()).to(scores.dtype)
    return scores.topk(k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)


def posterior_mean(
    logits: torch.Tensor,
    noise_embedding: torch.Tensor,
    topk: int | None,
    buffers: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``sum_j p_j E_n[j]`` over the ``topk`` most probable tokens, ``p = softmax(logits)``
    renormalised over them (float32, ``[..., d]``).

    ``logits`` ``[..., V']`` with V' <= rows of ``noise_embedding``; ``topk=None`` or >= V' uses all.
    Tokens tied with the ``topk``-th logit are all kept (a deterministic rule where ``topk`` with
    ties would pick arbitrarily; ties of distinct tokens do not occur with real logits).
    ``buffers``: a dict the caller keeps across evaluations of one shape, where the
    vocabulary-wide temporaries are reused (the values are the same with or without it).
    """
    emb = noise_embedding.to(device=logits.device, dtype=torch.float32)
    width = logits.shape[-1]
    if width > emb.shape[0]:
        raise ValueError(f"{width} logits but only {emb.shape[0]} noise-embedding rows")
    # A sliced view costs more in every op below than one copy; when a copy is made anyway it
    # is reused as the weight buffer.
    x = logits.float().contiguous()
    own = x.data_ptr() != logits.data_ptr()
    keep = floor = None
    top = x.amax(dim=-1, keepdim=True)
    if topk is not None and topk < width:
        # The kept set is given by a threshold on the logits (the same order as the
        # probabilities) and applied as a dense 0/1 factor (masked_fill with a boolean mask is
        # several times slower on CPU): gathering k rows of E_n per position would cost far
        # more memory traffic than one dense [.., V'] x [V', d] matmul.
        # The selection's reordered copy is done with once the threshold is read, so the same
        # buffer then holds the 0/1 factor.
        cpu = x.device.type == "cpu"
        work = scratch(buffers, "keep", x)
        threshold = kth_largest(x, topk, work if cpu else None)
        # Dropped logits far below the maximum would send exp down its slow CPU path (see
        # EXP_FAST_FLOOR) for weights that the 0/1 factor zeroes anyway: they are raised to the
        # threshold first (where that helps: the threshold itself above the floor). Kept logits
        # are >= the threshold, so they (and the result) keep their bits. The check reads the
        # dropped part of the selection's copy (its lower side).
        if cpu:
            gap = threshold - top
            low = work[..., : width - topk].amin(dim=-1, keepdim=True) - top
            if bool((low.lt(EXP_FAST_FLOOR) & gap.ge(EXP_FAST_FLOOR)).any()):
                floor = gap
        keep = torch.ge(x, threshold, out=work)
    # Unnormalised weights exp(l - max), normalised once after the matmul on the d-wide result:
    # the same value as a softmax followed by renormalisation over the kept set, for one division
    # over d instead of two over V'.
    weights = x.sub_(top) if own else torch.sub(x, top, out=scratch(buffers, "weights", x))
    if floor is not None:
        weights.clamp_min_(floor)
    weights.exp_()
    if keep is not None:
        weights.mul_(keep)
    return (weights @ emb[:width]) / weights.sum(dim=-1, keepdim=True)


def dsl_generate(
    denoiser: DSLSeam,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor | None = None,
    *,
    gen_length: int,
    nfe: int,
    sampler: str = "sde",
    noise_scale: float | None = None,
    beta_scale: float = DEFAULT_BETA_SCALE,
    topk: int | None = DEFAULT_TOPK,
    accounting: str = "strict",
    one_call_step: str = "exponential",
    snr_schedule: str = "sensitive",
    numerics: str = "dslbench",
    generator: rng.Generators = None,
    trace: Callable[[SDEStepTrace], None] | None = None,
) -> DSLOutput:
    """Generate ``gen_length`` tokens after each (left-padded) prompt row within ``nfe`` calls.

    ``prompt_mask`` is 1 on real tokens and 0 on left padding (None: no padding). ``noise_scale``
    None = the published value for the budget (0 for ``ode``). Every random draw (start vectors,
    Brownian increments) comes from ``generator`` (drawn on its device), so a seed fixes the
    output; a sequence of generators, one per row, gives each row its own stream
    (:mod:`dslbench.diffusion.rng`). ``one_call_step`` is the form of the one-call steps (see the module docstring).
    ``snr_schedule``: ``sensitive`` or ``uniform``; ``numerics``: ``dslbench`` or ``released``
    (:mod:`dslbench.diffusion.sde_released`; it decodes the rows one at a time, unpadded, and
    its ``nfe`` is then the calls of one row).
    """
    if gen_length < 1:
        raise ValueError(f"gen_length must be >= 1, got {gen_length}")
    plan = plan_steps(nfe, sampler, accounting, snr_schedule, numerics)
    if sampler == "ode":
        ns = 0.0 if noise_scale is None else float(noise_scale)
        if ns != 0.0:
            raise ValueError(f"sampler=ode is the noise-free Heun sampler; noise_scale={noise_scale} contradicts it")
    else:
        ns = noise_scale_for_budget(nfe) if noise_scale is None else float(noise_scale)
    if ns < 0:
        raise ValueError(f"noise_scale={ns} must be >= 0")
    if topk is not None and topk < 1:
        raise ValueError(f"topk={topk} must be >= 1")
    if one_call_step not in ONE_CALL_STEPS:
        raise ValueError(f"one_call_step={one_call_step!r}; allowed: {', '.join(ONE_CALL_STEPS)}")

    batch, prompt_len = prompt_ids.shape
    if numerics == "released" and batch > 1:
        # The released loop decodes one unpadded prompt at a time; a padded, batched forward
        # rounds differently (1e-6 in the logits), which can flip a token: each row runs alone.
        outs = sde_released.by_row(
            dsl_generate, denoiser, prompt_ids, prompt_mask, generator, gen_length=gen_length, nfe=nfe,
            sampler=sampler, noise_scale=noise_scale, beta_scale=beta_scale, topk=topk, accounting=accounting,
            one_call_step=one_call_step, snr_schedule=snr_schedule, numerics=numerics, trace=trace,
        )
        return DSLOutput(tokens=torch.cat([o.tokens for o in outs]), nfe=outs[0].nfe, plan=plan, noise_scale=ns,
                         y=torch.cat([o.y for o in outs]), logits=torch.cat([o.logits for o in outs]))
    device = prompt_ids.device
    emb = denoiser.noise_embedding.detach().to(device=device, dtype=torch.float32)
    dim = emb.shape[1]
    attention_mask = None
    if prompt_mask is not None:
        attention_mask = torch.cat(
            [prompt_mask.to(device), torch.ones((batch, gen_length), dtype=prompt_mask.dtype, device=device)], dim=1
        )
    released = numerics == "released"
    # Released: 0-dim float32 tensors on the state's device, so every scalar op below (``ns / s``
    # is a reciprocal times ns) rounds as the released loop does; dslbench: Python floats.
    grid = plan.grid.to(device) if released else plan.grid.tolist()
    state = torch.float32 if released else torch.float64
    convert = sde_released.released_converter(denoiser) if released else denoiser.convert
    nfe_before = denoiser.nfe

    def noise(shape, out: torch.Tensor | None = None) -> torch.Tensor:
        return rng.randn(shape, generator, device=device, dtype=state, out=out)

    # The posterior mean's vocabulary-wide temporaries, reused by every evaluation on CPU (where
    # fresh multi-MB buffers cost page faults each time); a GPU's caching allocator already
    # reuses the memory, and there holding them through every forward would raise the peak.
    buffers: dict[str, torch.Tensor] | None = {} if device.type == "cpu" else None
    with torch.no_grad():
        prompt_embeds = denoiser.embed(prompt_ids.long())
        # The canvas: prompt embeddings written once, each evaluation's converter output copied
        # after them (no new canvas per call).
        inputs = torch.cat([prompt_embeds, prompt_embeds.new_empty(batch, gen_length, prompt_embeds.shape[2])], dim=1)
        if released:  # the head over the whole canvas, then the response slice, as released
            read_logits = logits_reader(denoiser, 0)
        else:
            read_logits = logits_reader(denoiser, prompt_len)

        y = F.normalize(noise((batch, gen_length, dim)), dim=-1)
        # The state's arithmetic runs in place on reused buffers, with the same operations in the
        # same order as the expressions of the module docstring (so the same bits) but no fresh
        # [B, L, d] tensor per operation: ``d_w`` the step's Brownian increment, ``f`` the drift
        # (then the corrector's sum), ``nxt`` the next state (or the predictor's y_e), ``tmp`` a
        # product, ``z`` the converter's float32 input. ``y`` and ``nxt`` (and ``f``) swap roles
        # when a step ends.
        d_w, f, nxt, tmp = (torch.empty_like(y) for _ in range(4))
        z = torch.empty_like(y, dtype=torch.float32)

        def evaluate(y: torch.Tensor, s, mean: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
            """(float32 posterior mean, logits) at ``(y, s)``; overwrites ``tmp`` and ``z``."""
            if y.dtype == torch.float32:
                torch.mul(y, s, out=z)
            else:
                z.copy_(torch.mul(y, s, out=tmp))  # (s * y).to(float32)
            inputs[:, prompt_len:].copy_(convert(z, beta_scale).to(prompt_embeds.dtype))
            logits = read_logits(inputs, attention_mask)
            logits = (logits[:, prompt_len:] if released else logits).float()
            if not mean:  # the final pass only needs its logits
                return None, logits
            if released:
                return sde_released.released_posterior_mean(logits, emb, topk), logits
            return posterior_mean(logits, emb, topk, buffers), logits

        def drift(xhat: torch.Tensor, y: torch.Tensor, s, out: torch.Tensor) -> torch.Tensor:
            """``(xhat - y) / s`` into ``out`` (xhat widened to the state's dtype, exactly)."""
            return out.copy_(xhat).sub_(y).div_(s)

        n_steps = plan.steps
        for i in range(n_steps):
            s, s_next = grid[i], grid[i + 1]
            ds = s_next - s
            noise(y.shape, out=d_w).mul_(ds.abs().sqrt() if released else math.sqrt(abs(ds)))
            xhat, logits = evaluate(y, s)
            g = ns / s
            kind = "heun" if i < plan.heun else "euler"
            if kind == "heun" or one_call_step == "plain":
                # Euler-Maruyama: y_e = y + f ds + g dW, f = (xhat - y) / s
                drift(xhat, y, s, f)
                torch.mul(f, ds, out=nxt).add_(y).add_(torch.mul(d_w, g, out=tmp))
            if kind == "heun":
                # y' = y + 0.5 (f + f_e) ds + 0.5 (g + g_e) dW, f_e = (xhat_e - y_e) / s_next
                xhat_e, _ = evaluate(nxt, s_next)
                g_e = ns / s_next
                f.add_(drift(xhat_e, nxt, s_next, tmp)).mul_(0.5).mul_(ds).add_(y)
                f.add_(torch.mul(d_w, 0.5 * (g + g_e), out=tmp))
                y, f = f, y
            else:
                if one_call_step == "exponential":
                    # Exponential Euler: the drift integrated exactly with xhat frozen over the
                    # step, y' = xhat + (y - xhat) * (s / s') + g dW
                    xh = f.copy_(xhat)
                    torch.sub(y, xh, out=nxt).mul_(s / s_next).add_(xh).add_(torch.mul(d_w, g, out=tmp))
                y, nxt = nxt, y
            if trace is not None:
                top_id = logits.argmax(dim=-1)
                top_prob = torch.softmax(logits, dim=-1).gather(-1, top_id[..., None]).squeeze(-1)
                trace(SDEStepTrace(i, float(s), float(s_next), kind, y.clone(), top_id, top_prob))

        _, logits = evaluate(y, grid[-1], mean=False)
    tokens = logits.argmax(dim=-1)
    return DSLOutput(tokens=tokens, nfe=denoiser.nfe - nfe_before, plan=plan, noise_scale=ns, y=y, logits=logits)


def dsl_repair(
    denoiser: DSLSeam,
    ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    editable: torch.Tensor,
    *,
    passes: int = 1,
    snr: float = SNR_MAX,
    beta_scale: float = DEFAULT_BETA_SCALE,
) -> tuple[torch.Tensor, int]:
    """The converter repair path, a dslbench variant (not the published protocol, which feeds the
    corrupted token ids straight to the backbone: :func:`dslbench.diffusion.repair.argmax_repair`):
    ``(repaired [B, L], nfe)``.

    Editable positions enter through the channel's noise-free mean at SNR ``snr``
    (``z = snr * E_n[x]``) and the converter; the other positions (prompt, BOS, padding) as clean
    token embeddings. Each pass is one counted call and predicts every editable position by
    argmax; a further pass re-reads the previous prediction.
    """
    if passes < 1:
        raise ValueError(f"repair passes={passes} must be >= 1")
    start = denoiser.nfe
    emb = denoiser.noise_embedding.detach().to(device=ids.device, dtype=torch.float32)
    current = ids.clone()
    with torch.no_grad():
        clean = denoiser.embed(ids.long())
        for _ in range(passes):
            z = snr * emb[current]
            h = denoiser.convert(z, beta_scale).to(clean.dtype)
            inputs = torch.where(editable[..., None], h, clean)
            logits = denoiser.forward(inputs, attention_mask)
            current = torch.where(editable, logits.argmax(dim=-1), ids)
    return current, denoiser.nfe - start
