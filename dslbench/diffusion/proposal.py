"""What one step proposes and in which order it commits: the candidate token of every position,
its probability and the ranking score (``remasking``).

Orders (``remasking``, which masked positions go first): ``low_confidence`` (probability of
``x0``, LLaDA), ``random`` (a uniform draw, LLaDA), ``entropy`` (lowest predictive entropy first:
Dream's ``entropy`` algorithm scores ``sum(p * log(p + 1e-10))`` and takes the highest) and
``margin`` (largest top-1 minus top-2 probability first: Dream's ``topk_margin``).

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
"""

from __future__ import annotations

import torch

from dslbench.diffusion import rng

REMASKING_RULES = ("low_confidence", "random", "entropy", "margin")
EOS_CONFIDENCE_MODES = ("false", "released", "both")
_DREAM_LOG_EPS = 1e-10  # Dream's entropy score reads log(p + 1e-10)
_RANK_LAST = -1e30  # below every score of a masked position, above the -inf of the others


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


def removed_ids(mode: str, remasking: str, temperature: float, denoiser, device) -> torch.Tensor:
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


def propose(
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
    # the distribution scores each order (or the EB rule) reads; none for the others
    stats = {name for name, used in (("entropy", remasking == "entropy" or need_entropy),
                                     ("margin", remasking == "margin")) if used}
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
    neg_entropy, margin = _distribution_scores(ranking_logits, stats)
    return x0, x0_prob, neg_entropy, margin


def _distribution_scores(ranking_logits: torch.Tensor, which: set) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Dream's two scores of each position's float64 distribution, those in ``which`` (else None):
    ``sum(p * log(p + 1e-10))`` (negative entropy; highest first) and top-1 minus top-2
    probability (highest first). Each costs passes over the vocabulary, so only the ones read."""
    p = torch.softmax(ranking_logits, dim=-1)
    neg_entropy = margin = None
    if "entropy" in which:
        # p * log(p + eps), in place on one buffer: a fresh vocabulary-sized float64 tensor per op
        # costs more in page faults than the arithmetic (same values: multiplication commutes)
        neg_entropy = (p + _DREAM_LOG_EPS).log_().mul_(p).sum(dim=-1)
    if "margin" in which:
        top2 = p.topk(2, dim=-1).values
        margin = top2[..., 0] - top2[..., 1]
    return neg_entropy, margin


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
