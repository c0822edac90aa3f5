"""Configuration of LLaDA-format checkpoints, read from their own ``config.json`` field names.

The published LLaDA config uses OLMo-style names (``d_model``, ``n_layers``, ``mlp_hidden_size`` ...),
not the usual transformers names, so the field set below mirrors it one to one. The defaults are
the published values of ``GSAI-ML/LLaDA-8B-Instruct``. Options the native module does not
implement are rejected at construction time instead of being silently ignored.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

# Fields of the published config.json that describe the network (plus the token ids), in the
# order they are written back out. Keys such as ``auto_map`` point at remote code we never run.
LLADA_FIELDS: tuple[str, ...] = (
    "activation_type",
    "alibi",
    "alibi_bias_max",
    "attention_dropout",
    "attention_layer_norm",
    "attention_layer_norm_with_affine",
    "bias_for_layer_norm",
    "block_group_size",
    "block_type",
    "d_model",
    "embedding_dropout",
    "embedding_size",
    "eos_token_id",
    "flash_attention",
    "include_bias",
    "include_qkv_bias",
    "init_cutoff_factor",
    "init_device",
    "init_fn",
    "init_std",
    "input_emb_norm",
    "layer_norm_type",
    "layer_norm_with_affine",
    "mask_token_id",
    "max_sequence_length",
    "mlp_hidden_size",
    "mlp_ratio",
    "multi_query_attention",
    "n_heads",
    "n_kv_heads",
    "n_layers",
    "pad_token_id",
    "precision",
    "residual_dropout",
    "rms_norm_eps",
    "rope",
    "rope_full_precision",
    "rope_theta",
    "scale_logits",
    "use_cache",
    "vocab_size",
    "weight_tying",
)

# (field, value the native module needs, allowed values as shown in the error message)
_SUPPORTED: tuple[tuple[str, Any, str], ...] = (
    ("alibi", False, "false (ALiBi is not supported)"),
    ("rope", True, "true (RoPE positions are required)"),
    ("block_type", "llama", "'llama'"),
    ("layer_norm_type", "rms", "'rms'"),
    ("block_group_size", 1, "1"),
    ("attention_layer_norm", False, "false (q/k layer norms are not supported)"),
    ("activation_type", "silu", "'silu' (the SwiGLU gate)"),
)


class LLaDAConfig(PretrainedConfig):
    """``config.json`` of a LLaDA-format checkpoint (model_type ``"llada"``)."""

    model_type = "llada"

    activation_type: str = "silu"
    alibi: bool = False
    alibi_bias_max: float = 8.0
    attention_dropout: float = 0.0
    attention_layer_norm: bool = False
    attention_layer_norm_with_affine: bool = True
    bias_for_layer_norm: bool | None = False
    block_group_size: int = 1
    block_type: str = "llama"
    d_model: int = 4096
    embedding_dropout: float = 0.0
    embedding_size: int | None = 126464
    eos_token_id: int | None = 126081
    flash_attention: bool = False
    include_bias: bool = False
    include_qkv_bias: bool | None = False
    init_cutoff_factor: float | None = None
    init_device: str | None = "meta"
    init_fn: str = "mitchell"
    init_std: float = 0.02
    input_emb_norm: bool = False
    layer_norm_type: str = "rms"
    layer_norm_with_affine: bool = True
    mask_token_id: int | None = 126336
    max_sequence_length: int = 4096
    mlp_hidden_size: int | None = 12288
    mlp_ratio: int = 4
    multi_query_attention: bool | None = None
    n_heads: int = 32
    n_kv_heads: int | None = 32
    n_layers: int = 32
    pad_token_id: int | None = 126081
    precision: str | None = "amp_bf16"
    residual_dropout: float = 0.0
    rms_norm_eps: float = 1e-5
    rope: bool = True
    rope_full_precision: bool = True
    rope_theta: float = 500000.0
    scale_logits: bool = False
    use_cache: bool = False
    vocab_size: int = 126464
    weight_tying: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        # auto_map names remote code; this package never runs it (the writers in
        # dslbench.models.saving put back an auto_map that points at the published repository).
        kwargs.pop("auto_map", None)
        super().__post_init__(**kwargs)
        self._check_supported()

    def _check_supported(self) -> None:
        for field, required, allowed in _SUPPORTED:
            value = getattr(self, field)
            if value != required:
                raise ValueError(f"LLaDA config: {field}={value!r} is not supported; allowed: {allowed}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"LLaDA config: d_model={self.d_model} must be divisible by n_heads={self.n_heads}"
            )
        if self.head_dim % 2 != 0:
            raise ValueError(f"LLaDA config: d_model / n_heads = {self.head_dim} must be even for RoPE")
        if self.n_heads % self.effective_n_kv_heads != 0:
            raise ValueError(
                f"LLaDA config: n_heads={self.n_heads} must be a multiple of "
                f"n_kv_heads={self.effective_n_kv_heads}"
            )
        if self.embedding_size is not None and self.embedding_size < self.vocab_size:
            raise ValueError(
                f"LLaDA config: embedding_size={self.embedding_size} must be >= vocab_size={self.vocab_size}"
            )

    # Derived sizes, resolved the way the published config defines them.
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def effective_n_kv_heads(self) -> int:
        if self.n_kv_heads is not None:
            return self.n_kv_heads
        return 1 if self.multi_query_attention else self.n_heads

    @property
    def ffn_hidden_size(self) -> int:
        return self.mlp_hidden_size if self.mlp_hidden_size is not None else self.mlp_ratio * self.d_model

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding and of the output head (may exceed the tokenizer's vocabulary)."""
        return self.embedding_size or self.vocab_size

    def to_llada_dict(self) -> dict[str, Any]:
        """The published field set plus ``architectures``/``model_type``: what ``config.json`` holds."""
        out: dict[str, Any] = {"architectures": ["LLaDAModelLM"], "model_type": self.model_type}
        out.update({name: getattr(self, name) for name in LLADA_FIELDS})
        return dict(sorted(out.items()))


# Fields a config.json must set: the class defaults are the 8B values, so a missing size or
# token id would silently build the wrong network (a missing mask_token_id became 126336 on an
# 806-token vocabulary).
REQUIRED_FIELDS: tuple[str, ...] = ("d_model", "n_heads", "n_layers", "vocab_size", "mask_token_id", "eos_token_id")


def llada_config_from_dict(raw: dict[str, Any], source: Any = "config.json") -> LLaDAConfig:
    """A validated LLaDAConfig from a config.json dict; every error names ``source``.

    Required fields must be present (``mlp_hidden_size`` or ``mlp_ratio`` as well), sizes must be
    positive integers and every token id must index a row of the embedding table.
    """
    def fail(msg: str) -> ValueError:
        return ValueError(f"{source}: {msg}")

    missing = [k for k in REQUIRED_FIELDS if raw.get(k) is None]
    if raw.get("mlp_hidden_size") is None and raw.get("mlp_ratio") is None:
        missing.append("mlp_hidden_size (or mlp_ratio)")
    if missing:
        raise fail(f"missing required field(s) {', '.join(missing)} (the 8B defaults are not assumed)")
    for key in ("d_model", "n_heads", "n_layers", "vocab_size", "embedding_size", "n_kv_heads",
                "mlp_hidden_size", "mlp_ratio", "max_sequence_length"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise fail(f"{key}={value!r} must be a positive integer")
    try:
        config = LLaDAConfig.from_dict(raw)
    except (TypeError, ValueError) as err:
        raise fail(str(err)) from err
    rows = config.padded_vocab_size
    for key in ("mask_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(config, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < rows:
            raise fail(f"{key}={value!r} is not a token id of the model: allowed 0..{rows - 1} "
                       f"(embedding_size / vocab_size {rows})")
    return config


def llada_8b_config(**overrides: Any) -> LLaDAConfig:
    """The published ``GSAI-ML/LLaDA-8B-Instruct`` configuration (the class defaults)."""
    return LLaDAConfig(architectures=["LLaDAModelLM"], **overrides)
