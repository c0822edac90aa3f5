"""Tiny randomly initialised LLaDA-format checkpoints for tests, CI and the embedded default.

A tiny checkpoint is a real HF-style directory (config.json with the published LLaDA field set,
safetensors shards + index in the published key layout, tokenizer files), so every code path that loads
LLaDA-8B also runs on it, offline and in seconds.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Iterable

from dslbench.models.staging import staged_checkpoint_dir
from dslbench.models.tokenizer import EOS_TOKEN, MASK_TOKEN, PAD_TOKEN, SPECIAL_TOKENS

DEFAULT_TOKENIZER_VOCAB = 1024
TINY_FAMILIES = ("llada", "dream", "diffusiongemma", "mdlm", "gpt2")  # gpt2: the GenPPL / MAUVE evaluator


def tiny_config(
    vocab_size: int,
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    mlp_hidden_size: int = 176,
    max_sequence_length: int = 1024,
    **overrides: Any,
):
    """An LLaDAConfig with the published field set and tiny sizes.

    Token ids default to the fixed special-token layout of ``train_tokenizer`` (pass
    ``mask_token_id=`` etc. to override); ``n_kv_heads`` defaults to ``n_heads`` (no GQA).
    """
    from dslbench.models.llada_config import llada_8b_config

    fields: dict[str, Any] = {
        "vocab_size": vocab_size,
        "embedding_size": vocab_size,
        "d_model": d_model,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "n_kv_heads": n_heads,
        "mlp_hidden_size": mlp_hidden_size,
        "max_sequence_length": max_sequence_length,
        "mask_token_id": SPECIAL_TOKENS.index(MASK_TOKEN),
        "eos_token_id": SPECIAL_TOKENS.index(EOS_TOKEN),
        "pad_token_id": SPECIAL_TOKENS.index(PAD_TOKEN),
        "init_device": None,  # the published "meta" only matters to the remote code's own init
    }
    fields.update(overrides)
    return llada_8b_config(**fields)


def save_checkpoint(model, tokenizer, out_dir: str | os.PathLike) -> Path:
    """Write config.json + safetensors shards and index + tokenizer files into ``out_dir``
    atomically (see :func:`staged_checkpoint_dir` and :mod:`dslbench.models.saving`)."""
    from dslbench.models.saving import llada_config_json, write_config_json, write_weights

    with staged_checkpoint_dir(out_dir) as tmp:
        write_config_json(llada_config_json(model), tmp / "config.json")
        write_weights(model.state_dict(), tmp)
        tokenizer.save_pretrained(str(tmp))
    return Path(out_dir).expanduser().resolve()


def _fallback_corpus(seed: int, n_sentences: int = 3000) -> list[str]:
    """Seeded synthetic English sentences, used when dslbench.data.synth is unavailable."""
    rng = random.Random(seed)
    subjects = ["the council", "a researcher", "the team", "our model", "the city", "a student", "the company",
                "the report", "a local farmer", "the committee"]
    verbs = ["announced", "studied", "described", "reviewed", "summarized", "measured", "approved", "rejected",
             "published", "discussed"]
    objects = ["a new plan", "the results", "the budget", "a short summary", "the river project", "the survey",
               "an early draft", "the final report", "the weather data", "a proposal"]
    tails = ["on monday", "after a long debate", "in the morning", "for the second time", "with little comment",
             "despite the rain", "at the annual meeting", "before the deadline"]
    sentences = []
    for _ in range(n_sentences):
        sentence = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(tails)}."
        sentences.append(sentence[0].upper() + sentence[1:])
    return sentences


def _default_corpus(seed: int) -> list[str]:
    try:
        from dslbench.data.synth import tokenizer_corpus
    except ImportError:
        return _fallback_corpus(seed)
    return list(tokenizer_corpus(seed))


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
    except ImportError:
        return
    np.random.seed(seed)


def build_tiny_llada(tokenizer, seed: int = 0, **config_overrides: Any):
    """A randomly initialised tiny LLaDAModelLM whose token ids come from ``tokenizer``."""
    import torch

    from dslbench.models.llada import LLaDAModelLM
    from dslbench.models.tokenizer import token_id

    ids = {
        "mask_token_id": token_id(tokenizer, MASK_TOKEN),
        "eos_token_id": token_id(tokenizer, EOS_TOKEN),
        "pad_token_id": token_id(tokenizer, PAD_TOKEN),
    }
    missing = [name for name, value in ids.items() if value is None]
    if missing:
        raise ValueError(f"tokenizer lacks the LLaDA special tokens needed for {missing}")
    config = tiny_config(len(tokenizer), **{**ids, **config_overrides})
    torch.manual_seed(seed)
    return LLaDAModelLM(config).eval()


def make_tiny(
    out: str | os.PathLike,
    seed: int = 0,
    family: str = "llada",
    texts: Iterable[str] | None = None,
    **config_overrides: Any,
) -> Path:
    """Train a tokenizer, build a random tiny model and save both as a checkpoint directory at ``out``.

    The same seed (and texts) always gives byte-identical weights and tokenizer.
    ``config_overrides`` (LLaDA family) resize the model, e.g. ``d_model=128, n_layers=4``.
    """
    from dslbench.models.tokenizer import train_tokenizer

    if family not in TINY_FAMILIES:
        raise ValueError(f"family={family!r} is not supported for tiny checkpoints; allowed: {list(TINY_FAMILIES)}")
    if family == "gpt2":  # a trained causal LM with its own GPT-2-style tokenizer, not a diffusion model
        from dslbench.models.tiny_evaluator import make_tiny_gpt2

        if config_overrides:
            raise ValueError(f"config overrides {sorted(config_overrides)} are only supported for family='llada'")
        return make_tiny_gpt2(out, seed=seed, texts=list(texts) if texts is not None else None)
    _seed_everything(seed)
    if family == "mdlm":  # its own GPT-2-style tokenizer (byte-level BPE + [MASK] last), as released
        from dslbench.models.mdlm_checkpoint import make_tiny_mdlm

        if config_overrides:
            raise ValueError(f"config overrides {sorted(config_overrides)} are only supported for family='llada'")
        return make_tiny_mdlm(out, seed=seed, texts=list(texts) if texts is not None else None)
    corpus = list(texts) if texts is not None else _default_corpus(seed)
    tokenizer = train_tokenizer(corpus, vocab_size=DEFAULT_TOKENIZER_VOCAB)
    if family == "dream":
        from dslbench.models.dream import make_tiny_dream

        if config_overrides:
            raise ValueError(f"config overrides {sorted(config_overrides)} are only supported for family='llada'")
        return make_tiny_dream(out, tokenizer, seed=seed)
    if family == "diffusiongemma":
        from dslbench.models.diffusiongemma import make_tiny_diffusiongemma

        if config_overrides:
            raise ValueError(f"config overrides {sorted(config_overrides)} are only supported for family='llada'")
        return make_tiny_diffusiongemma(out, tokenizer, seed=seed)
    model = build_tiny_llada(tokenizer, seed=seed, **config_overrides)
    return save_checkpoint(model, tokenizer, out)
