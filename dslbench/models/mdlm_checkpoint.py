"""MDLM-format checkpoints: loading (local folder or hub id), writing, and tiny ones for tests.

Layout, as the released ``kuleshov-group/mdlm-owt``: ``config.json`` (the released field set,
:mod:`dslbench.models.mdlm_config`) and one ``model.safetensors`` with the ``backbone.*`` keys.
The release ships no tokenizer (its code loads GPT-2's and appends a mask token); a folder
without ``tokenizer.json`` gets GPT-2's tokenizer (hub id ``gpt2``) with ``[MASK]`` added as id
``vocab_size - 1``, and a folder written here carries its own tokenizer files.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dslbench import fsio
from dslbench.models.loading import (
    CheckpointFormatError,
    ModelInfo,
    checkpoint_weight_files,
    load_tokenizer,
    read_config_json,
    read_state_strict,
    require_mask_token,
)
from dslbench.models.staging import staged_checkpoint_dir

MASK_TOKEN = "[MASK]"
RELEASED_TOKENIZER = "gpt2"  # what the released code loads (mdlm / remdm configs: data.tokenizer_name_or_path)
WEIGHTS_FILE = "model.safetensors"
TINY_TOKENIZER_VOCAB = 512  # byte-level BPE tokens; the mask makes it 513


def mdlm_config_from_dir(directory: Path):
    from dslbench.models.mdlm_config import mdlm_config_from_dict

    try:
        return mdlm_config_from_dict(read_config_json(directory), directory / "config.json")
    except CheckpointFormatError:
        raise
    except ValueError as err:
        raise CheckpointFormatError(str(err)) from err


def _tokenizer(directory: Path, config):
    """The folder's tokenizer, else the released one (GPT-2 + ``[MASK]`` as the last id)."""
    if (directory / "tokenizer.json").is_file():
        return load_tokenizer(directory, config)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(RELEASED_TOKENIZER)
    except Exception as err:  # offline, hub unreachable
        raise CheckpointFormatError(
            f"{directory} has no tokenizer.json and the released tokenizer ({RELEASED_TOKENIZER!r}, as the MDLM code "
            f"loads it) could not be fetched ({type(err).__name__}: {err}); put GPT-2's tokenizer.json in the folder"
        ) from err
    return with_mask_token(tokenizer, config.vocab_size, directory)


def with_mask_token(tokenizer, vocab_size: int, where) -> object:
    """``tokenizer`` plus ``[MASK]`` appended; its id must be ``vocab_size - 1`` (the released layout)."""
    if tokenizer.mask_token is None:
        tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
    if tokenizer.mask_token_id != vocab_size - 1:
        raise CheckpointFormatError(
            f"{where}: the tokenizer's mask token has id {tokenizer.mask_token_id}, but an MDLM checkpoint with "
            f"vocab_size={vocab_size} masks with id {vocab_size - 1} (the tokenizer must hold vocab_size - 1 tokens "
            "before the appended mask)"
        )
    return tokenizer


def load_mdlm_dir(directory: Path, dtype: torch.dtype, device: torch.device):
    """(model, tokenizer, info) for a local MDLM-format checkpoint directory."""
    from dslbench.models.mdlm import MDLM

    config = mdlm_config_from_dir(directory)
    model = _build_with_weights(MDLM, config, checkpoint_weight_files(directory), dtype, device)
    tokenizer = _tokenizer(directory, config)
    mask_id = config.mask_token_id
    require_mask_token(tokenizer, mask_id, directory)
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise CheckpointFormatError(f"{directory}: the tokenizer has no eos_token (GPT-2's <|endoftext|> is expected)")
    info = ModelInfo(
        family="mdlm", mask_id=int(mask_id), eos_id=int(eos_id), eot_id=None, pad_id=int(eos_id),
        vocab_size=int(config.vocab_size), has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        path=str(directory),
    )
    return model, tokenizer, info


INV_FREQ_KEY = "backbone.rotary_emb.inv_freq"


def _build_with_weights(model_class, config, files, dtype, device):
    """Strict loading, except that the rotary ``inv_freq`` buffer (a function of the head size,
    saved by the release's ``save_pretrained``) is recomputed when a checkpoint omits it."""
    with torch.device("meta"):
        model = model_class(config)
    expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
    state = read_state_strict(expected, files, dtype, device, optional=frozenset({INV_FREQ_KEY}))
    head_dim = config.head_dim
    inv_freq = 1.0 / (10_000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    state[INV_FREQ_KEY] = state.get(INV_FREQ_KEY, inv_freq).to(torch.float32)  # kept in float32, as built
    model.load_state_dict(state, strict=True, assign=True)
    model.config.dtype = dtype
    return model.eval()


def mdlm_config_json(model) -> dict:
    config = model.config.to_mdlm_dict()
    config["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    return dict(sorted(config.items()))


def save_mdlm_checkpoint(model, tokenizer, out_dir: str | os.PathLike) -> Path:
    """config.json + one model.safetensors (the hub layout) + tokenizer files, written atomically."""
    from safetensors.torch import save_file

    with staged_checkpoint_dir(out_dir) as tmp:
        fsio.write_json_atomic(mdlm_config_json(model), tmp / "config.json")
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        with fsio.written_file(tmp / WEIGHTS_FILE):
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        tokenizer.save_pretrained(str(tmp))
    return Path(out_dir).expanduser().resolve()


def build_tiny_mdlm(tokenizer, seed: int = 0, hidden_dim: int = 64, cond_dim: int = 32, n_blocks: int = 2,
                    n_heads: int = 4, model_length: int = 1024):
    """A random tiny MDLM whose vocabulary is ``tokenizer``'s (its mask last). Every weight is
    random, the adaLN projections and the head included (the release zeroes those before
    training, which would make every logit equal), so tests see non-trivial logits."""
    from dslbench.models.mdlm import MDLM
    from dslbench.models.mdlm_config import MDLMConfig

    config = MDLMConfig(architectures=["MDLM"], vocab_size=len(tokenizer), hidden_dim=hidden_dim, cond_dim=cond_dim,
                        n_blocks=n_blocks, n_heads=n_heads, model_length=model_length, dropout=0.1)
    torch.manual_seed(seed)
    model = MDLM(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if "norm" in name:
                param.copy_(1 + 0.1 * torch.randn(param.shape, generator=gen))
            elif name.endswith("vocab_embed.embedding"):
                param.copy_(torch.randn(param.shape, generator=gen))
            else:
                param.copy_(torch.randn(param.shape, generator=gen) / max(1, param.shape[-1]) ** 0.5)
    return model.eval()


def tiny_mdlm_tokenizer(texts: list[str]):
    """GPT-2-style byte-level BPE (``<|endoftext|>``) with ``[MASK]`` appended last."""
    from dslbench.models.tiny_evaluator import train_gpt2_tokenizer

    tokenizer = train_gpt2_tokenizer(texts, vocab_size=TINY_TOKENIZER_VOCAB)
    tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
    return tokenizer


def make_tiny_mdlm(out: str | os.PathLike, seed: int = 0, texts: list[str] | None = None) -> Path:
    """Train the tokenizer, build :func:`build_tiny_mdlm` and save both at ``out`` (same seed,
    byte-identical files)."""
    from dslbench.data.synth import tokenizer_corpus

    tokenizer = tiny_mdlm_tokenizer(list(texts) if texts is not None else list(tokenizer_corpus(seed)))
    return save_mdlm_checkpoint(build_tiny_mdlm(tokenizer, seed=seed), tokenizer, out)
