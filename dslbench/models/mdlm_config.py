"""Configuration of MDLM-format checkpoints (``kuleshov-group/mdlm-owt``), read from their own field names.

The released ``config.json`` (model_type ``"mdlm"``, architectures ``["MDLM"]``) names the DiT with
``hidden_dim``, ``cond_dim``, ``n_blocks``, ``n_heads``, ``model_length``, ``vocab_size``,
``dropout`` and ``time_conditioning``; the field set below mirrors it one to one, with the
published 169M values as defaults. The token layout is the release's: GPT-2's 50257 tokens plus
one mask token appended last, so ``mask_token_id = vocab_size - 1`` (the released code sets
``mask_index = vocab_size`` of the tokenizer and grows the vocabulary by one); it is not a
config.json field.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

# Fields of the released config.json that describe the network, in the order they are written.
MDLM_FIELDS: tuple[str, ...] = (
    "cond_dim",
    "dropout",
    "hidden_dim",
    "model_length",
    "n_blocks",
    "n_heads",
    "time_conditioning",
    "vocab_size",
)

REQUIRED_FIELDS: tuple[str, ...] = ("hidden_dim", "cond_dim", "n_blocks", "n_heads", "vocab_size", "model_length")

# The released auto_map, pointed at the hub repository that holds the remote code (this package
# never runs it; a checkpoint written here loads with ``trust_remote_code`` in the released code).
MDLM_CODE_REPO = "kuleshov-group/mdlm-owt"
RELEASED_AUTO_MAP = {
    "AutoConfig": f"{MDLM_CODE_REPO}--configuration_mdlm.MDLMConfig",
    "AutoModelForMaskedLM": f"{MDLM_CODE_REPO}--modeling_mdlm.MDLM",
}


class MDLMConfig(PretrainedConfig):
    """``config.json`` of an MDLM-format checkpoint (model_type ``"mdlm"``)."""

    model_type = "mdlm"

    vocab_size: int = 50258
    model_length: int = 1024
    hidden_dim: int = 768
    cond_dim: int = 128
    n_blocks: int = 12
    n_heads: int = 12
    dropout: float = 0.1
    time_conditioning: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        kwargs.pop("auto_map", None)
        super().__post_init__(**kwargs)
        self._check_supported()

    def _check_supported(self) -> None:
        if self.time_conditioning:
            # The samplers talk to a denoiser seam that carries no noise level; the released
            # checkpoint and every ReMDM script run time_conditioning=false (sigma fed as zeros).
            raise ValueError("MDLM config: time_conditioning=true is not supported; allowed: false "
                             "(as kuleshov-group/mdlm-owt and the ReMDM scripts)")
        if self.hidden_dim % self.n_heads != 0:
            raise ValueError(f"MDLM config: hidden_dim={self.hidden_dim} must be divisible by n_heads={self.n_heads}")
        if self.head_dim % 2 != 0:
            raise ValueError(f"MDLM config: hidden_dim / n_heads = {self.head_dim} must be even for the rotary embedding")
        if self.vocab_size < 2:
            raise ValueError(f"MDLM config: vocab_size={self.vocab_size} must be >= 2 (tokens plus the mask)")

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.n_heads

    @property
    def mask_token_id(self) -> int:
        """The appended mask token: the last row of the embedding."""
        return self.vocab_size - 1

    @property
    def max_sequence_length(self) -> int:
        """The context the backends read (the released ``model_length``; rotary has no hard limit)."""
        return self.model_length

    def to_mdlm_dict(self) -> dict[str, Any]:
        """The released field set plus ``architectures`` / ``model_type`` / ``auto_map``."""
        out: dict[str, Any] = {"architectures": ["MDLM"], "auto_map": dict(RELEASED_AUTO_MAP), "model_type": self.model_type}
        out.update({name: getattr(self, name) for name in MDLM_FIELDS})
        return dict(sorted(out.items()))


def mdlm_config_from_dict(raw: dict[str, Any], source: Any = "config.json") -> MDLMConfig:
    """A validated MDLMConfig from a config.json dict; every error names ``source``."""
    missing = [k for k in REQUIRED_FIELDS if raw.get(k) is None]
    if missing:
        raise ValueError(f"{source}: missing required field(s) {', '.join(missing)} (the 169M defaults are not assumed)")
    for key in REQUIRED_FIELDS:
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{source}: {key}={value!r} must be a positive integer")
    try:
        return MDLMConfig.from_dict(raw)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: {err}") from err
