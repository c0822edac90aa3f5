"""ReMDM remasking (Wang et al., 2025) adapted to LLaDA's block/step decoding.

ReMDM lets an already-decoded token go back to the mask with probability ``sigma_t`` at each
step, so that a later step can revise it. In ReMDM's MDLM sampler, time runs from t = 1 to 0 with
``alpha_t = 1 - t`` (the share of unmasked tokens); from t to s a decoded token is remasked with
probability sigma_t, and a masked token is decoded with probability
``(alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t)``, which keeps the expected unmasked share at
``alpha_s``. The four published choices of sigma_t:

- ``cap``:     ``min(eta, (1 - alpha_s) / alpha_t)``
- ``rescale``: ``eta * min(1, (1 - alpha_s) / alpha_t)``
- ``conf``:    ``softmax_i(-p_i) * min(1, (1 - alpha_s) / alpha_t)``, p_i = the probability the
  token had when it was decoded (least confident tokens go back first; eta is not used)
- ``loop``:    alpha rises to ``alpha_on`` while t > t_on, stays at ``alpha_on`` with constant
  ``sigma = eta`` while t_off < t <= t_on (tokens are remasked and re-decoded at equal rates),
  then rises to 1 for t <= t_off with no remasking.

Adaptation to LLaDA (deterministic top-k commits, no continuous time), per block of S steps:

- Time per step: step i (0-based) of a block runs from ``t_i = 1 - i/S`` to ``s_i = 1 - (i+1)/S``,
  so ``alpha_t = i/S`` and ``alpha_s = (i+1)/S``, matching LLaDA's linear masked-count schedule.
- Only tokens of the current block are candidates (earlier blocks are final, as in
  semi-autoregressive decoding; the prompt never is). Each committed token is remasked
  independently with its sigma (a uniform draw from the sampler's generator).
- Budget: a step still makes exactly one denoiser call (two with CFG). The r tokens remasked at
  a step are compensated by committing r more masked tokens at that same step (the k of LLaDA's
  schedule plus r, by confidence, from this step's logits); the remasked positions themselves are
  re-predicted by later steps. So the masked count after each step is exactly LLaDA's, which is
  ReMDM's expected-count identity made exact. r is capped per row by the tokens left masked
  after the step's commits (at the block's last step that is 0, as ReMDM's cap also gives), and
  when more tokens than that are drawn the ones with the smallest u / sigma are kept.
- ``loop`` needs its own commit schedule: steps with t_i > t_on commit ``floor(alpha_on * M)``
  of the block's M masks (spread evenly, remainder first), steps with t_off < t_i <= t_on commit
  none beyond the remasked ones (sigma = eta), and the steps with t_i <= t_off commit the rest.
  The floor leaves a pool of masks for the loop phase to trade against. With few steps no t_i
  may fall below t_off: the block's last step is then moved to the final phase so that every
  block ends fully decoded. (ReMDM's code evaluates alpha_s with t's phase formula, which
  overshoots alpha_on at coarse steps; the phase-wise counts avoid that.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dslbench.diffusion import rng
from dslbench.diffusion.schedule import top_k_per_row, transfer_schedule

REMDM_STRATEGIES = ("cap", "rescale", "conf", "loop")

_FIRST, _LOOP, _LAST = "first", "loop", "last"


@dataclass(frozen=True)
class RemdmConfig:
    strategy: str
    eta: float = 0.02
    t_on: float = 0.55
    t_off: float = 0.05
    alpha_on: float = 0.9

    def __post_init__(self) -> None:
        if self.strategy not in REMDM_STRATEGIES:
            raise ValueError(f"ReMDM strategy {self.strategy!r} is not one of {', '.join(REMDM_STRATEGIES)}")
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0, got eta={self.eta}")
        if not 0 <= self.t_off < self.t_on < 1:
            raise ValueError(f"need 0 <= t_off < t_on < 1, got t_off={self.t_off}, t_on={self.t_on}")
        if not 0 < self.alpha_on < 1:
            raise ValueError(f"alpha_on must lie in (0, 1), got alpha_on={self.alpha_on}")


def step_alphas(step: int, steps: int) -> tuple[float, float]:
    """(alpha_t, alpha_s): unmasked share at the start and the end of ``step`` of a block."""
    return step / steps, (step + 1) / steps


def loop_phases(config: RemdmConfig, steps: int) -> list[str]:
    """Phase of each step of a block under ``loop``: "first", "loop" or "last"."""
    phases = []
    for i in range(steps):
        t = 1 - i / steps
        phases.append(_FIRST if t > config.t_on else _LOOP if t > config.t_off else _LAST)
    phases[-1] = _LAST  # the block must end fully decoded
    return phases


def block_schedule(config: RemdmConfig, mask_count: torch.Tensor, steps: int) -> torch.Tensor:
    """Commits per step ``[B, steps]`` before remasking compensation: LLaDA's, except for loop."""
    count = torch.as_tensor(mask_count).long().reshape(-1)
    if config.strategy != "loop":
        return transfer_schedule(count, steps)
    phases = loop_phases(config, steps)
    first = [i for i, p in enumerate(phases) if p == _FIRST]
    last = [i for i, p in enumerate(phases) if p == _LAST]
    n_first = torch.floor(count.double() * config.alpha_on).long() if first else torch.zeros_like(count)
    schedule = torch.zeros((count.shape[0], steps), dtype=torch.long, device=count.device)
    if first:
        schedule[:, first] = transfer_schedule(n_first, len(first))
    schedule[:, last] = transfer_schedule(count - n_first, len(last))
    return schedule


def remask_probability(
    config: RemdmConfig,
    step: int,
    steps: int,
    committed: torch.Tensor,
    commit_prob: torch.Tensor,
) -> torch.Tensor | None:
    """sigma for each committed token of the block ``[B, Lb]`` (0 elsewhere), or ``None`` when
    no token can go back at this step (then no random number is drawn, so such a run matches
    plain sampling draw for draw)."""
    alpha_t, alpha_s = step_alphas(step, steps)
    ratio = (1 - alpha_s) / alpha_t if alpha_t > 0 else math.inf

    if config.strategy == "loop":
        sigma = config.eta if loop_phases(config, steps)[step] == _LOOP else 0.0
    elif config.strategy == "cap":
        sigma = min(config.eta, ratio)
    elif config.strategy == "rescale":
        sigma = config.eta * min(1.0, ratio)
    else:  # conf: softmax of -p over the committed tokens, scaled by sigma_max
        sigma_max = min(1.0, ratio)
        if sigma_max <= 0:
            return None
        scores = torch.where(committed, -commit_prob, torch.full_like(commit_prob, float("-inf")))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows with nothing committed
        return weights * sigma_max

    if sigma <= 0:
        return None
    return committed.to(torch.float64) * sigma


def choose_remask(prob: torch.Tensor, room: torch.Tensor, generator: rng.Generators) -> torch.Tensor:
    """Independent draws ``u < prob``, keeping at most ``room[b]`` per row (smallest u / prob);
    ``generator``: one for the batch or one per row (:mod:`dslbench.diffusion.rng`)."""
    u = rng.rand(prob.shape, generator, device=prob.device, dtype=torch.float64)
    hit = u < prob
    ratio = torch.where(hit, u / prob.clamp(min=torch.finfo(torch.float64).tiny), float("inf"))
    return top_k_per_row(-ratio, room.clamp(min=0)) & hit
