"""Dream-format checkpoints (Dream-7B): a Qwen2 network with bidirectional attention.

Dream publishes Qwen2 weights under Qwen2's own key names, a ``config.json`` with
``model_type: "Dream"`` and the Qwen2 fields (plus ``mask_token_id``, 151666 for Dream-7B),
and remote code that we never run. The network here is transformers' own
:class:`~transformers.Qwen2ForCausalLM`, made bidirectional in the two places where causality
lives in transformers 5.x:

- ``config.is_causal = False``: ``create_causal_mask`` then builds a bidirectional mask (only
  padded keys hidden) instead of a causal one;
- ``self_attn.is_causal = False`` on every layer: with no padding that mask is skipped
  (``None``), and SDPA would otherwise fall back to its own ``is_causal`` flag.

Left-padded rows get position ids counted from their first real token (as Dream's own
generation code does); padded keys are hidden from every query.

Checkpoint keys (Dream / Qwen2 layout)::

    model.embed_tokens.weight                                   [V, d]
    model.layers.N.self_attn.{q,k,v}_proj.{weight,bias}         (q: [H*hd, d], k/v: [KV*hd, d])
    model.layers.N.self_attn.o_proj.weight                      [d, H*hd] (no bias)
    model.layers.N.mlp.{gate,up,down}_proj.weight               SwiGLU
    model.layers.N.{input,post_attention}_layernorm.weight      RMSNorm
    model.norm.weight
    lm_head.weight                                              [V, d] (absent when tied)

Dream predicts token i at position i-1; :class:`~dslbench.diffusion.denoiser.ModelDenoiser`
shifts the logits at the seam (``ModelInfo.shift_logits=True``), so samplers see the usual
"position i predicts token i".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dslbench.models.loading import (
    CheckpointFormatError,
    ModelInfo,
    checkpoint_weight_files,
    load_tokenizer,
    read_config_json,
    require_mask_token,
)

DREAM_MASK_TOKEN_ID = 151666  # Dream-7B's <|mask|>
DREAM_MODEL_TYPES = ("Dream", "dream")
# End-of-turn tokens tried in order: Qwen/Dream chat format, then the tiny tokenizer's.
_EOT_CANDIDATES = ("<|im_end|>", "<|eot_id|>")
# config.json fields that are Dream's own, or metadata, and not Qwen2Config fields.
_NON_QWEN2_FIELDS = ("model_type", "auto_map", "architectures", "transformers_version")

try:
    from transformers import Qwen2ForCausalLM as _Qwen2ForCausalLM
except ImportError:  # pragma: no cover - transformers always ships Qwen2
    _Qwen2ForCausalLM = None


def dream_qwen2_config(raw: dict[str, Any]):
    """A transformers ``Qwen2Config`` from a Dream ``config.json`` dict, made bidirectional."""
    from transformers import Qwen2Config

    fields = {k: v for k, v in raw.items() if k not in _NON_QWEN2_FIELDS}
    if "rope_scaling" in fields and fields["rope_scaling"] is None:
        del fields["rope_scaling"]  # Dream-7B writes null; transformers 5 reads rope_parameters instead
    if fields.get("mask_token_id") is None:
        fields["mask_token_id"] = DREAM_MASK_TOKEN_ID
    try:
        config = Qwen2Config.from_dict(fields)
    except (TypeError, ValueError) as err:
        raise CheckpointFormatError(f"config.json is not a valid Dream/Qwen2 config: {err}") from err
    config.is_causal = False
    config.use_cache = False
    config._attn_implementation = "sdpa"
    return config


DREAM_REQUIRED_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def validated_dream_config(raw: dict[str, Any], source: Any = "config.json"):
    """``dream_qwen2_config`` after checking that the sizes are given (Qwen2's defaults are not a
    Dream model) and that the token ids index the vocabulary; errors name ``source``."""
    missing = [k for k in DREAM_REQUIRED_FIELDS if raw.get(k) is None]
    if missing:
        raise CheckpointFormatError(f"{source}: missing required field(s) {', '.join(missing)}")
    for key in DREAM_REQUIRED_FIELDS:
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointFormatError(f"{source}: {key}={value!r} must be a positive integer")
    try:
        config = dream_qwen2_config(raw)
    except CheckpointFormatError as err:
        raise CheckpointFormatError(f"{source}: {err}") from err
    vocab = int(raw["vocab_size"])
    for key in ("mask_token_id", "eos_token_id", "pad_token_id", "bos_token_id"):
        value = getattr(config, key, None)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < vocab):
                shown = f"{key}={v!r}" + (" (the Dream default, as config.json sets none)" if key == "mask_token_id" and raw.get(key) is None else "")
                raise CheckpointFormatError(f"{source}: {shown} is not a token id of the model: allowed 0..{vocab - 1}")
    return config


class DreamForMaskedDiffusion(_Qwen2ForCausalLM):
    """transformers' ``Qwen2ForCausalLM`` with bidirectional attention and padding-aware positions.

    State-dict keys are exactly Qwen2's (= Dream's). ``forward`` takes ``input_ids`` or
    ``inputs_embeds`` and an optional ``[B, T]`` key-padding ``attention_mask`` (1 = real
    token) and returns the unshifted logits (position i-1 predicts token i).
    """

    supports_logits_to_keep = True  # transformers' forward(logits_to_keep=N): the head on the last N only

    def __init__(self, config) -> None:
        config.is_causal = False
        super().__init__(config)
        make_bidirectional(self)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            # Left padding: count positions from each row's first real token (pads: 0, unseen).
            position_ids = (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)
        kwargs.setdefault("use_cache", False)
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )


def make_bidirectional(model: torch.nn.Module) -> torch.nn.Module:
    """Turn off causality in a transformers Qwen2 model (config flag and every attention module)."""
    config = getattr(model, "config", None)
    if config is not None:
        config.is_causal = False
    for module in model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False
    return model


def dream_state_dict_keys(config) -> list[str]:
    """The tensor names of a Dream checkpoint for ``config`` (lm_head omitted when tied)."""
    keys = ["model.embed_tokens.weight"]
    for n in range(config.num_hidden_layers):
        p = f"model.layers.{n}."
        for proj in ("q_proj", "k_proj", "v_proj"):
            keys += [f"{p}self_attn.{proj}.weight", f"{p}self_attn.{proj}.bias"]
        keys.append(f"{p}self_attn.o_proj.weight")
        keys += [f"{p}mlp.{proj}.weight" for proj in ("gate_proj", "up_proj", "down_proj")]
        keys += [f"{p}input_layernorm.weight", f"{p}post_attention_layernorm.weight"]
    keys.append("model.norm.weight")
    if not getattr(config, "tie_word_embeddings", False):
        keys.append("lm_head.weight")
    return keys


# ---------------------------------------------------------------------------------------------
# Loading


def _load_dream_weights(model, files: list[Path], dtype: torch.dtype, device: torch.device, tied: bool) -> None:
    """Strictly read Dream's tensors into ``model`` (built on the meta device)."""
    from dslbench.models.loading import read_state_strict

    expected = {k: v.shape for k, v in model.state_dict().items()}
    optional = frozenset({"lm_head.weight"}) if tied else frozenset()
    state = read_state_strict(expected, files, dtype, device, optional=optional,
                              what="Dream checkpoint weights (Qwen2 network)")
    if tied and "lm_head.weight" not in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight


def _rebuild_rotary(model, device: torch.device) -> None:
    # inv_freq is a non-persistent buffer: built on the meta device, it must be recomputed.
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

    with torch.device(device):
        model.model.rotary_emb = Qwen2RotaryEmbedding(config=model.config)


def build_dream_model(config, files: list[Path], dtype: torch.dtype, device: torch.device) -> DreamForMaskedDiffusion:
    tied = bool(getattr(config, "tie_word_embeddings", False))
    with torch.device("meta"):
        model = DreamForMaskedDiffusion(config)
    _load_dream_weights(model, files, dtype, device, tied)
    _rebuild_rotary(model, device)
    model.config.dtype = dtype
    return make_bidirectional(model).eval()


def load_dream_tokenizer(directory: Path, config=None):
    """The checkpoint's fast tokenizer, without remote code.

    Dream's hub tokenizer names a custom class (``DreamTokenizer``, remote code); it is a Qwen2
    BPE tokenizer, so ``tokenizer.json`` is read as a plain fast tokenizer, or ``vocab.json`` +
    ``merges.txt`` with transformers' own ``Qwen2Tokenizer``.
    """
    from transformers import PreTrainedTokenizerFast

    if (directory / "tokenizer.json").is_file():
        try:
            return load_tokenizer(directory, config)
        except (ValueError, OSError, ImportError, AttributeError, KeyError):
            return PreTrainedTokenizerFast.from_pretrained(str(directory))
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        from transformers import Qwen2Tokenizer

        return Qwen2Tokenizer.from_pretrained(str(directory))
    raise CheckpointFormatError(
        f"{directory} has no tokenizer.json (nor vocab.json + merges.txt); a Dream checkpoint needs its tokenizer files"
    )


def _token_id(tokenizer, token: str) -> int | None:
    from dslbench.models.tokenizer import token_id

    return token_id(tokenizer, token)


def _dream_info(config, tokenizer, directory: Path) -> ModelInfo:
    eos = config.eos_token_id
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        raise CheckpointFormatError(f"{directory}/config.json sets no eos_token_id and the tokenizer has no EOS token")
    eot = None
    for token in _EOT_CANDIDATES:
        eot = _token_id(tokenizer, token)
        if eot is not None:
            break
    pad = config.pad_token_id
    if pad is None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    mask_id = getattr(config, "mask_token_id", None)
    require_mask_token(tokenizer, DREAM_MASK_TOKEN_ID if mask_id is None else mask_id, directory)
    return ModelInfo(
        family="dream",
        mask_id=int(DREAM_MASK_TOKEN_ID if mask_id is None else mask_id),
        eos_id=int(eos),
        eot_id=eot,
        pad_id=int(pad),
        vocab_size=int(config.vocab_size),
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        shift_logits=True,
        path=str(directory),
    )


def load_dream_dir(directory: Path, dtype: torch.dtype, device: torch.device):
    """(model, tokenizer, ModelInfo) for a local Dream-format checkpoint directory."""
    directory = Path(directory)
    raw = read_config_json(directory)
    if str(raw.get("model_type", "")).lower() != "dream":
        raise CheckpointFormatError(f"{directory}/config.json has model_type={raw.get('model_type')!r}, expected 'Dream'")
    config = validated_dream_config(raw, directory / "config.json")
    model = build_dream_model(config, checkpoint_weight_files(directory), dtype, device)
    tokenizer = load_dream_tokenizer(directory, config)
    info = _dream_info(config, tokenizer, directory)
    return model, tokenizer, info


# ---------------------------------------------------------------------------------------------
# Tiny Dream-format checkpoints


def tiny_dream_config_dict(
    vocab_size: int,
    mask_token_id: int,
    eos_token_id: int,
    pad_token_id: int,
    bos_token_id: int | None = None,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 176,
    max_position_embeddings: int = 1024,
    **overrides: Any,
) -> dict[str, Any]:
    """A Dream-style config.json dict (Dream-7B's field set) with tiny sizes."""
    fields: dict[str, Any] = {
        "architectures": ["DreamModel"],
        "auto_map": {
            "AutoConfig": "configuration_dream.DreamConfig",
            "AutoModel": "modeling_dream.DreamModel",
        },
        "model_type": "Dream",
        "attention_dropout": 0.0,
        "bos_token_id": bos_token_id if bos_token_id is not None else eos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "mask_token_id": mask_token_id,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "max_window_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_hidden_layers": num_hidden_layers,
        "num_key_value_heads": num_key_value_heads,
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": False,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }
    fields.update(overrides)
    return fields


def build_tiny_dream(tokenizer, seed: int = 0, **config_overrides: Any):
    """(model, config.json dict): a randomly initialised tiny Dream network for ``tokenizer``."""
    from dslbench.models.tokenizer import BOS_TOKEN, EOS_TOKEN, MASK_TOKEN, PAD_TOKEN, token_id

    ids = {
        "mask_token_id": token_id(tokenizer, MASK_TOKEN),
        "eos_token_id": token_id(tokenizer, EOS_TOKEN),
        "pad_token_id": token_id(tokenizer, PAD_TOKEN),
    }
    missing = [name for name, value in ids.items() if value is None]
    if missing:
        raise ValueError(f"tokenizer lacks the special tokens needed for {missing}")
    raw = tiny_dream_config_dict(len(tokenizer), bos_token_id=token_id(tokenizer, BOS_TOKEN), **ids, **config_overrides)
    torch.manual_seed(seed)
    model = DreamForMaskedDiffusion(dream_qwen2_config(raw)).eval()
    return model, raw


def save_dream_checkpoint(model, raw_config: dict[str, Any], tokenizer, out_dir: str | os.PathLike) -> Path:
    """Write a Dream-format directory (config.json, safetensors shards + index, tokenizer files) atomically."""
    from dslbench.models.saving import write_config_json, write_weights
    from dslbench.models.staging import staged_checkpoint_dir

    out = Path(out_dir).expanduser().resolve()
    with staged_checkpoint_dir(out) as tmp:
        config = dict(raw_config)
        config["torch_dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
        config["auto_map"] = _hub_auto_map(config.get("auto_map"))
        write_config_json(config, tmp / "config.json")
        keys = dream_state_dict_keys(model.config)
        full = model.state_dict()
        write_weights({k: full[k].detach().to("cpu").contiguous().clone() for k in keys}, tmp)
        tokenizer.save_pretrained(str(tmp))
    return out


DREAM_CODE_REPO = "Dream-org/Dream-v0-Instruct-7B"


def _hub_auto_map(auto_map: dict[str, str] | None) -> dict[str, str]:
    """auto_map entries that name local code files point at the published repository instead
    (the code is not shipped with a checkpoint written here)."""
    auto_map = dict(auto_map or {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"})
    return {k: v if "--" in v else f"{DREAM_CODE_REPO}--{v}" for k, v in auto_map.items()}


def make_tiny_dream(out: str | os.PathLike, tokenizer, seed: int = 0) -> Path:
    """A tiny Dream-format checkpoint at ``out`` using ``tokenizer`` (its own mask id)."""
    model, raw = build_tiny_dream(tokenizer, seed=seed)
    return save_dream_checkpoint(model, raw, tokenizer, out)
