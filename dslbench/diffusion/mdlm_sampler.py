"""MDLM's cached ancestral sampler (``ddpm_cache``) and ReMDM's four strategies, as released.

Source: kuleshov-group/remdm ``diffusion.py`` (``_sample`` with ``sampling.predictor=ddpm_cache``,
``_ddpm_caching_update``, ``_sample_categorical``; the MDLM strategy is the same code as
kuleshov-group/mdlm's). Time runs over ``linspace(1, eps, T + 1)`` (float32, eps = 1e-5,
dt = (1 - eps) / T) with the log-linear schedule, so the masked share at time t is t. Each step:

1. when the cache is empty, one network call on the canvas; MDLM's substitution
   parameterization (the mask logit gets -1e6, log-softmax; an unmasked position is certain of
   its own token) and, with ``nucleus_p < 1``, the released top-p filter give ``p_x0``;
2. the strategy's unnormalised ``q(x_s | x_t)`` (float32), drawn by Gumbel-max in float64:
   ``argmax(q / (1e-10 - log(u + 1e-10)))`` with ``u`` uniform over the whole ``[B, L, V]``;
3. the cache keeps ``p_x0`` for the next step when no position of the batch changed (the
   released ``torch.allclose(xs, x)``), so that step makes no network call: NFE < T.

After the T steps, ``noise_removal`` (the released default) makes one more call and fills the
positions still masked with the argmax. NFE is counted at the seam: only calls that run.

Strategies (``remdm`` = a :class:`~dslbench.diffusion.remdm.RemdmConfig` or None for plain MDLM):
``cap`` sigma = min(eta, (1 - alpha_s) / alpha_t); ``rescale`` sigma = eta * min(1, (1 - alpha_s) /
alpha_t); ``conf`` sigma = softmax over positions of the confidence ``-p`` each token had when it
was decoded (in bfloat16, as the release keeps that score) times min(1, ...); ``loop``: MDLM
steps with alpha rising to ``alpha_on`` while t > t_on, ReMDM steps with sigma = eta at
alpha = alpha_on for t_off < t <= t_on, MDLM steps to alpha = 1 for t <= t_off. The float
arithmetic (python floats, float32 tensors, bfloat16 for ``conf``) follows the release's, so the
same uniforms give the same tokens.

Where this departs from the release, and why:

- Work is done only where it can change the outcome (the speed-up, not the result): the
  parameterization, the top-p sort and the categorical draw run on the masked positions; an
  unmasked position's draw is between its own token and the mask (the only two entries of its
  q), compared exactly as the full argmax would. The uniforms are still drawn over the whole
  ``[B, L, V]`` so the random stream stays the release's.
  The top-p filter takes ``topk`` instead of a full sort when that provably keeps the same set
  (:func:`_nucleus`), and a row that did not change keeps its probabilities.
- A prompt (conditional generation; the release samples unconditionally from an all-mask canvas)
  is never remasked, and left padding is hidden from attention; with an empty prompt the canvas
  is the release's.
- The parameterization runs in the logits' dtype: float32 on CPU, as the release there; on CUDA
  the release runs its DiT under bfloat16 autocast with float32 weights, dslbench runs the model
  in its loaded dtype (bfloat16 by default on GPU), so the two networks are not bitwise alike.
- ``remdm-conf`` casts each confidence to bfloat16 explicitly (the release assigns the float
  value into its bfloat16 score, which only type-checks where its p_x0 is already bfloat16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from dslbench.diffusion import rng
from dslbench.diffusion.denoiser import Denoiser, logits_reader
from dslbench.diffusion.remdm import RemdmConfig

NEG_INFINITY = -1000000.0  # the release's ``neg_infinity`` added to the mask logit
SAMPLING_EPS = 1e-5  # ``_sample``'s eps: the last time is 1e-5, not 0
CONF_DTYPE = torch.bfloat16  # the release's ``confident_score`` dtype (remdm-conf)
SOFTMASK_BAND = (0.2, 0.8)  # IBM's MDLM_SM: feedback only for sm_t_min <= t <= sm_t_max (config.yaml optim)
NUCLEUS_TOP = 64  # entries the top-p fast path looks at before falling back to the full sort


CACHE_MODES = ("batch", "row")


@dataclass(frozen=True)
class MDLMOutput:
    tokens: torch.Tensor  # [B, gen_length]
    nfe: int  # network calls that ran (cache misses + noise removal)
    steps: int  # T
    row_nfe: tuple[int, ...] = ()  # calls each row went through (= nfe for every row with cache="batch")


def mdlm_generate(
    denoiser: Denoiser,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor | None = None,
    *,
    gen_length: int,
    steps: int,
    nucleus_p: float = 1.0,
    remdm: RemdmConfig | None = None,
    noise_removal: bool = True,
    cache: str = "batch",
    softmask_band: tuple[float, float] = SOFTMASK_BAND,
    eps: float = SAMPLING_EPS,
    generator: rng.Generators = None,
    input_embeds_fn: Callable | None = None,
) -> MDLMOutput:
    """Sample ``gen_length`` tokens after each (left-padded, possibly empty) prompt row in T =
    ``steps`` ancestral steps. ``generator``: one generator (the release's single stream), a
    sequence of one per row, or None (torch's global stream).

    ``cache="batch"`` is the release's: a step calls the network on the whole batch unless no
    position of the batch changed. The rows that did not change still reuse their previous
    probabilities (their logits in a call of the same shape are the same numbers, so their
    top-p sort is not redone). ``cache="row"`` calls the network only on the rows that changed
    (fewer row evaluations; each row records its own count in ``row_nfe``); those rows then run
    in a smaller batch, which can move float32 logits by ~1e-6, so tokens equal the release's
    except where that flips a draw.

    ``input_embeds_fn`` (soft-masking, as IBM's ``MDLM_SM.generate_samples``): a call at a time
    t inside ``softmask_band`` (the release's ``optim.sm_t_min`` / ``sm_t_max``) feeds the
    previous call's predictions back through it; outside the band (and at the first call, and
    at noise removal unless its t = eps lies in the band) the plain embeddings go in.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got steps={steps}")
    if not 0 < nucleus_p <= 1:
        raise ValueError(f"nucleus_p must lie in (0, 1], got nucleus_p={nucleus_p}")
    if cache not in CACHE_MODES:
        raise ValueError(f"cache={cache!r} is not one of {', '.join(CACHE_MODES)}")
    batch, prompt_len = prompt_ids.shape
    device = prompt_ids.device
    mask_id = denoiser.mask_id
    x = torch.cat([prompt_ids.long(), torch.full((batch, gen_length), mask_id, dtype=torch.long, device=device)], dim=1)
    attention_mask = None
    if prompt_mask is not None and prompt_len:
        attention_mask = torch.cat([prompt_mask.to(device), torch.ones((batch, gen_length), dtype=prompt_mask.dtype, device=device)], dim=1)
    frozen = torch.zeros_like(x, dtype=torch.bool)
    frozen[:, :prompt_len] = True  # the prompt (and its padding) is never remasked
    network = _Network(denoiser, attention_mask, input_embeds_fn)

    timesteps = torch.linspace(1, eps, steps + 1, device=device)
    dt = (1 - eps) / steps
    conf = torch.full(x.shape, float("-inf"), dtype=CONF_DTYPE, device=device)
    nfe_before = denoiser.nfe
    # The cache: per row, the probabilities [n_b, V] of its masked positions for its current
    # canvas (None: stale); ``ran`` marks the rows whose logits would be those of a new call.
    row_p: list[torch.Tensor | None] = [None] * batch
    with torch.no_grad():
        for i in range(steps):
            t = timesteps[i] * torch.ones(batch, 1, device=device)
            masked = x == mask_id
            stale = [b for b in range(batch) if row_p[b] is None]
            if stale:
                rows = list(range(batch)) if cache == "batch" else stale
                time = timesteps[i].item()
                logits = network(x, rows, feedback=softmask_band[0] <= time <= softmask_band[1])
                for j, b in enumerate(rows):
                    if row_p[b] is None:
                        row_p[b] = _nucleus(_subs_probs(logits[j][masked[b]], mask_id), nucleus_p)
            p_x0 = torch.cat(row_p) if batch > 1 else row_p[0]
            xs = _step(x, masked, frozen, p_x0, t, dt, remdm, conf, mask_id, denoiser.vocab_size, generator)
            # a row that changed is stale; with cache="batch" the next call still runs every row
            # (released), and the rows that did not change keep their probabilities (the numbers
            # that call gives them again), except under soft-masking, where their input moves too
            moved = (xs != x).any(dim=1).tolist()
            if cache == "batch" and input_embeds_fn is not None and any(moved):
                moved = [True] * batch
            for b in range(batch):
                if moved[b]:
                    row_p[b] = None
            x = xs
        if noise_removal:
            masked = x == mask_id
            last = timesteps[-1].item()
            final = network(x, list(range(batch)), feedback=softmask_band[0] <= last <= softmask_band[1])
            log_probs = _subs_log_probs(final[masked], mask_id)
            x = x.masked_scatter(masked, log_probs.argmax(dim=-1))
    return MDLMOutput(tokens=x[:, prompt_len:].clone(), nfe=denoiser.nfe - nfe_before, steps=steps,
                      row_nfe=tuple(network.row_calls))


class _Network:
    """Counted calls on rows of the canvas: logits ``[len(rows), L, V]``.

    Soft-masking (``input_embeds_fn``, IBM's ``MDLM_SM``): a call with ``feedback`` feeds each
    row's previous call back as the release does, as substitution-parameterized log-probabilities
    (a position that held a token then, remasked since under ReMDM, is certain of that token)."""

    def __init__(self, denoiser, attention_mask, input_embeds_fn):
        self.denoiser = denoiser
        self.attention_mask = attention_mask
        self.input_embeds_fn = input_embeds_fn
        self.read = logits_reader(denoiser, 0)
        self.prev: torch.Tensor | None = None  # [B, L, V]: each row's log-probs at its last call
        self.row_calls: list[int] = []

    def __call__(self, x: torch.Tensor, rows: list[int], feedback: bool = False) -> torch.Tensor:
        if not self.row_calls:
            self.row_calls = [0] * x.shape[0]
        whole = len(rows) == x.shape[0]
        index = None if whole else torch.tensor(rows, device=x.device)
        ids = x if whole else x[index]
        mask = self.attention_mask if whole or self.attention_mask is None else self.attention_mask[index]
        mask_id = self.denoiser.mask_id
        if self.input_embeds_fn is not None and feedback and self.prev is not None:
            embeds = self.input_embeds_fn(ids, self.prev if whole else self.prev[index], ids == mask_id)
        else:
            embeds = self.denoiser.embed(ids)
        logits = self.read(embeds, mask)
        if self.input_embeds_fn is not None:
            processed = torch.full_like(logits, NEG_INFINITY)
            processed.scatter_(-1, ids[..., None], 0.0)  # unmasked: certain of its own token
            held = ids == mask_id
            processed[held] = _subs_log_probs(logits[held], mask_id)
            if self.prev is None:
                self.prev = torch.empty((x.shape[0], *logits.shape[1:]), dtype=logits.dtype, device=logits.device)
            self.prev[rows] = processed
        for b in rows:
            self.row_calls[b] += 1
        return logits


def _subs_log_probs(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """The substitution parameterization at masked positions (``[N, V]``): mask logit -1e6,
    log-softmax, in the logits' dtype (the release's: float32 on CPU, bfloat16 from its CUDA autocast)."""
    logits = logits.clone()
    logits[:, mask_id] += NEG_INFINITY
    return logits - torch.logsumexp(logits, dim=-1, keepdim=True)


def _subs_probs(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    return _subs_log_probs(logits, mask_id).exp()


def _nucleus(p: torch.Tensor, nucleus_p: float, top: int = NUCLEUS_TOP) -> torch.Tensor:
    """The released top-p: keep the sorted prefix whose cumulative sum is <= p (the top always), renormalise.

    The release sorts every row over the whole vocabulary. Here ``topk(top)`` finds the prefix
    when it ends inside the first ``top`` entries and the entries on both sides of its end
    differ (then the kept set, its order of values and so every number below are the sort's);
    the other rows (a longer nucleus, or a tie at the cut, where only the sort's own tie order
    can say which id stays) go through the full sort, as released."""
    if nucleus_p >= 1 or p.numel() == 0:
        return p
    rows, vocab = p.shape
    top = min(top, vocab)
    values, indices = p.topk(top, dim=-1, sorted=True)
    keep = torch.cumsum(values, dim=-1) <= nucleus_p
    keep[:, 0] = True
    cut = keep.sum(dim=-1)  # entries kept
    inside = cut < top
    last = values.gather(1, (cut - 1).clamp(max=top - 1)[:, None])[:, 0]
    first_out = values.gather(1, cut.clamp(max=top - 1)[:, None])[:, 0]
    fast = inside & (last != first_out)
    out = torch.zeros_like(p)
    if bool(fast.any()):
        kept = torch.zeros((int(fast.sum()), vocab), dtype=p.dtype, device=p.device)
        kept[:, :top] = values[fast] * keep[fast]  # the release's sorted-and-cut row, zeros after the cut
        kept /= kept.sum(dim=-1, keepdim=True)
        out[fast] = torch.zeros_like(kept).scatter_(-1, indices[fast], kept[:, :top])
    if not bool(fast.all()):
        out[~fast] = _nucleus_sorted(p[~fast], nucleus_p)
    return out


def _nucleus_sorted(p: torch.Tensor, nucleus_p: float) -> torch.Tensor:
    """The released formula, verbatim: full sort, cumulative sum, cut, renormalise, scatter back."""
    sorted_probs, sorted_indices = torch.sort(p, descending=True, dim=-1)
    keep = torch.cumsum(sorted_probs, dim=-1) <= nucleus_p
    keep[..., 0] = True
    kept = sorted_probs * keep
    kept /= kept.sum(dim=-1, keepdim=True)
    return torch.zeros_like(p).scatter_(-1, sorted_indices, kept)


def _gumbel_argmax(q: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The release's ``_sample_categorical`` given its uniforms (float64), ``argmax(q / (1e-10 -
    log(u + 1e-10)))``, computed in place on ``u`` (a copy owned here: ``-log(.) + 1e-10`` is the
    same number as ``1e-10 - log(.)``)."""
    g = u.add_(1e-10).log_().neg_().add_(1e-10)
    return q.to(torch.float64).div_(g).argmax(dim=-1)


def _coefficients(remdm, t, dt, conf, masked):
    """(kind, coefficients) of this step, in the release's arithmetic.

    kind "mdlm": masked q = p * (mc_t - mc_s), mask entry mc_s; unmasked positions are copied.
    kind "remdm": masked q = p * a, mask entry b; unmasked q = own token (1 - sigma), mask sigma.
    """
    move_t = t[:, :, None]
    move_s = (t - dt)[:, :, None]
    if remdm is None:
        return "mdlm", (move_t - move_s, move_s[:, :, 0])
    strategy = remdm.strategy
    if strategy == "loop":
        time = t[0].item()
        if time > remdm.t_on or time <= remdm.t_off:
            if time > remdm.t_on:
                move_t = (1 - (1 - t) * remdm.alpha_on / (1 - remdm.t_on))[:, :, None]
                move_s = (1 - (1 - t + dt) * remdm.alpha_on / (1 - remdm.t_on))[:, :, None]
            else:
                move_t = (t * (1 - remdm.alpha_on) / remdm.t_off)[:, :, None]
                move_s = ((t - dt) * (1 - remdm.alpha_on) / remdm.t_off)[:, :, None]
            return "mdlm", (move_t - move_s, move_s[:, :, 0])
        sigma, a_on = remdm.eta, remdm.alpha_on
        return "remdm", (sigma, (a_on - (1 - sigma) * a_on) / (1 - a_on), (1 - a_on - a_on * sigma) / (1 - a_on))
    alpha_t = (1 - move_t)[0].item()
    alpha_s = (1 - move_s)[0].item()
    ratio = (1 - alpha_s) / alpha_t if alpha_t > 0 else None
    if strategy == "cap":
        sigma = min(remdm.eta, ratio) if ratio is not None else remdm.eta
    elif strategy == "rescale":
        sigma = remdm.eta * (min(1, ratio) if ratio is not None else 1)
    else:  # conf: a bfloat16 sigma per position
        sigma_max = min(1, ratio) if ratio is not None else 1
        eta = conf.softmax(dim=-1)
        eta[masked] = 0
        sigma = eta * sigma_max
    return "remdm", (sigma, (alpha_s - (1 - sigma) * alpha_t) / (1 - alpha_t), (1 - alpha_s - sigma * alpha_t) / (1 - alpha_t))


def _at(value, where):
    """A per-position coefficient (tensor [B, L]) at ``where``, as a column; a python float as is."""
    return value[where][:, None] if isinstance(value, torch.Tensor) else value


def _step(x, masked, frozen, p_x0, t, dt, remdm, conf, mask_id, vocab_size, generator):
    batch, length = x.shape
    u = rng.rand((batch, length, vocab_size), generator, device=x.device, dtype=torch.float64)
    kind, coef = _coefficients(remdm, t, dt, conf, masked)
    xs = x.clone()
    if kind == "mdlm":
        token_coef, mask_entry = coef  # [B, 1, 1] and [B, 1] float32 tensors
        rows = masked.nonzero(as_tuple=True)[0]
        q = p_x0 * token_coef[rows, 0]
        q[:, mask_id] = mask_entry[rows, 0]
        xs[masked] = _gumbel_argmax(q, u[masked])
    else:
        sigma, token_coef, mask_entry = coef
        q = p_x0 * _at(token_coef, masked)
        q[:, mask_id] = _at(mask_entry, masked)[:, 0] if isinstance(mask_entry, torch.Tensor) else mask_entry
        xs[masked] = _gumbel_argmax(q, u[masked])
        # unmasked (and not frozen): its q holds its own token (1 - sigma) and the mask (sigma)
        live = ~masked & ~frozen
        if bool(live.any()):
            own = x[live]
            keep_q = torch.ones(own.shape[0], 1, dtype=p_x0.dtype, device=x.device) * (1 - _at(sigma, live))
            mask_q = torch.zeros(own.shape[0], dtype=p_x0.dtype, device=x.device)
            mask_q[:] = _at(sigma, live)[:, 0] if isinstance(sigma, torch.Tensor) else sigma
            u_live = u[live]
            g_own = 1e-10 - (u_live.gather(1, own[:, None])[:, 0] + 1e-10).log()
            g_mask = 1e-10 - (u_live[:, mask_id] + 1e-10).log()
            score_own = keep_q[:, 0].to(torch.float64) / g_own
            score_mask = mask_q.to(torch.float64) / g_mask
            to_mask = (score_mask > score_own) | ((score_mask == score_own) & (mask_id < own))
            xs[live] = torch.where(to_mask, torch.full_like(own, mask_id), own)
        if remdm.strategy == "conf":
            unmasked_now = masked & (xs != mask_id)
            # p_x0 rows are the masked positions in order; read each new token's probability
            probs = p_x0.gather(1, xs[masked][:, None])[:, 0]
            conf[unmasked_now] = (-probs[(xs[masked] != mask_id)]).to(conf.dtype)
            conf[~masked & (xs == mask_id)] = float("-inf")
    return xs
