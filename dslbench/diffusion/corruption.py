"""Selective token corruption for the repair tasks, as the released repair evaluation does it.

The released probe (fengsxy/DSL-LLaDA, the token-corruption test of its unified evaluation)
corrupts a passage of ``n`` tokens (tokenized without special tokens, no BOS) as follows, and so
does this module:

* count: ``max(1, int(n * rate))`` positions (:func:`corruption_count`), drawn uniformly without
  replacement among all ``n`` positions;
* ``random``: each replacement is drawn uniformly from the id range ``[100, 126000)`` minus the
  original id (the released script redraws until it differs, the same distribution). The range is
  the released one, clipped to the tokenizer's vocabulary for smaller ones
  (:func:`random_replacement_ids`); it holds no special token of the LLaDA vocabulary, and
  special ids that a smaller tokenizer puts inside it are left out;
* ``semantic``: each replacement is one of the ``k`` (5) nearest rows of the model's whole input
  embedding matrix by cosine, the token itself excluded, picked uniformly. Every row is a
  candidate, special tokens and unused rows included, as released (:func:`nearest_neighbours`).

The draws differ from the released ones (that script seeds numpy with ``42 + passage id``; here
every draw is a pure function of the passage text and the task seed, :func:`document_seed`), so a
passage is corrupted identically across runs and across backends that share a tokenizer, with
the same distribution as released.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

CORRUPTION_MODES = ("random", "semantic")
# The released random-replacement id range, [low, high), in LLaDA's vocabulary.
RANDOM_ID_LOW = 100
RANDOM_ID_HIGH = 126000


def document_seed(text: str, seed: int) -> int:
    """A stable 63-bit seed from the document text and the task seed (no Python hash salt)."""
    digest = hashlib.sha256(f"{seed}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def check_rate(rate: float) -> float:
    if not 0.0 < rate <= 1.0:
        raise ValueError(
            f"corruption rate={rate!r} must be within (0, 1]; the released count max(1, int(n * rate)) "
            "corrupts at least one token"
        )
    return rate


def corruption_count(n: int, rate: float) -> int:
    """How many of ``n`` tokens are corrupted: ``max(1, int(n * rate))`` (0 for an empty passage)."""
    check_rate(rate)
    return max(1, int(n * rate)) if n > 0 else 0


def random_replacement_ids(vocab_size: int, special_ids=()) -> torch.Tensor:
    """Sorted ids a ``random`` replacement may take: ``[100, min(126000, vocab_size))`` without
    ``special_ids`` (none of LLaDA's special tokens lies in that range)."""
    high = min(RANDOM_ID_HIGH, vocab_size)
    ids = torch.arange(RANDOM_ID_LOW, max(high, RANDOM_ID_LOW), dtype=torch.long)
    ids = ids[~torch.isin(ids, torch.tensor(sorted(special_ids), dtype=torch.long))]
    if len(ids) < 2:
        raise ValueError(
            f"random corruption needs a vocabulary with ids in [{RANDOM_ID_LOW}, {RANDOM_ID_HIGH}); "
            f"this one has {vocab_size} ids"
        )
    return ids


def unit_rows(embeddings: torch.Tensor) -> torch.Tensor:
    """The embedding matrix with L2-normalised float32 rows (cosine = dot product); computed once
    per model by the caller, since at 8B size it is a ~2 GB matrix."""
    return F.normalize(embeddings.detach().float(), dim=-1)


def nearest_neighbours(unit_embeddings: torch.Tensor, token_ids: torch.Tensor, k: int = 5) -> torch.Tensor:
    """``[len(token_ids), k]`` ids of the rows closest by cosine to each token's row (itself
    excluded); ``unit_embeddings`` from :func:`unit_rows`. Every row is a candidate."""
    token_ids = token_ids.to(unit_embeddings.device)
    sims = unit_embeddings[token_ids] @ unit_embeddings.T
    sims[torch.arange(len(token_ids), device=sims.device), token_ids] = float("-inf")
    return sims.topk(k, dim=-1).indices.cpu()


def corrupt(
    ids: torch.Tensor,
    rate: float,
    mode: str,
    *,
    seed: int,
    random_ids: torch.Tensor | None = None,
    unit_embeddings: torch.Tensor | None = None,
    k: int = 5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt one 1-D sequence; returns ``(corrupted_ids, sorted corrupted positions)``.

    ``random`` needs ``random_ids`` (:func:`random_replacement_ids`); ``semantic`` needs
    ``unit_embeddings`` (:func:`unit_rows` of the model's input embeddings).
    """
    if mode not in CORRUPTION_MODES:
        raise ValueError(f"corruption mode={mode!r}; allowed: {', '.join(CORRUPTION_MODES)}")
    if mode == "random" and random_ids is None:
        raise ValueError("random corruption needs the replacement id range (random_replacement_ids)")
    if mode == "semantic" and unit_embeddings is None:
        raise ValueError("semantic corruption needs the model's input embeddings (unit_rows)")
    ids = ids.detach().cpu().long()
    n = corruption_count(len(ids), rate)
    gen = torch.Generator().manual_seed(seed)
    positions = torch.randperm(len(ids), generator=gen)[:n].sort().values
    out = ids.clone()
    if n == 0:
        return out, positions
    originals = ids[positions]
    if mode == "random":
        # Uniform over the range minus the original: draw among len - 1 slots, then shift the
        # draws at or past the original's slot by one.
        cands = random_ids.detach().cpu().long().unique()  # sorted, as searchsorted needs
        draw = torch.randint(0, len(cands) - 1, (n,), generator=gen)
        slot = torch.searchsorted(cands, originals)
        is_cand = (slot < len(cands)) & (cands[slot.clamp(max=len(cands) - 1)] == originals)
        draw = draw + (is_cand & (draw >= slot)).long()
        out[positions] = cands[draw]
    else:
        neigh = nearest_neighbours(unit_embeddings, originals, k=k)
        pick = torch.randint(0, k, (n,), generator=gen)
        out[positions] = neigh[torch.arange(n), pick]
    return out, positions
