"""Native LLaDA-format network: a LLaMA-style transformer with bidirectional attention.

Parameter names follow the published checkpoint layout exactly
(``model.transformer.{wte, blocks.N.*, ln_f, ff_out}``), so the hub weights load with no key
renaming and without ``trust_remote_code``. There is no KV cache by default: a masked diffusion
model re-reads the whole canvas on every step. The optional *prefix* cache
(``keep_prefix`` / ``prefix_kv``, used by :mod:`dslbench.diffusion.prompt_cache`) returns the
per-layer keys and values of a full forward's first P positions and later runs only the other
positions against them; bidirectional attention makes that an approximation (the cached prefix
no longer sees the positions after it), which is why it is opt-in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as hf_init
from transformers.modeling_outputs import CausalLMOutput
from transformers.utils import ModelOutput

from dslbench.models.llada_config import LLaDAConfig


class LLaDARMSNorm(nn.Module):
    """RMS norm computed in float32 and cast back before the (optional) affine weight."""

    def __init__(self, size: int, eps: float, affine: bool = True, bias: bool = False):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size)) if affine else None
        self.bias = nn.Parameter(torch.zeros(size)) if affine and bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        h = h.to(x.dtype)
        if self.weight is not None:
            h = self.weight * h
        if self.bias is not None:
            h = h + self.bias
        return h


def _build_norm(config: LLaDAConfig) -> LLaDARMSNorm:
    # bias_for_layer_norm=None means "same as include_bias" in the published config semantics.
    bias = config.include_bias if config.bias_for_layer_norm is None else config.bias_for_layer_norm
    return LLaDARMSNorm(config.d_model, config.rms_norm_eps, config.layer_norm_with_affine, bool(bias))


def rope_tables(seq_len: int, head_dim: int, theta: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (cos, sin) of shape [T, head_dim] for positions 0..T-1 (frequencies repeated twice)."""
    exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / (theta**exponents)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate [B, heads, T, head_dim] by the tables, rotate-half convention (first half / second half)."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


@dataclass(frozen=True)
class PrefixKV:
    """Per-layer ``(key, value)`` of a prefix, ``[B, n_kv_heads, P, head_dim]`` each: keys already
    rotated for positions 0..P-1, before grouped-query repetition (the smaller form to keep)."""

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @property
    def length(self) -> int:
        return self.layers[0][0].shape[2]


@dataclass
class LLaDAOutput(ModelOutput):
    """``CausalLMOutput`` plus the prefix keys / values a ``keep_prefix`` forward asked for."""

    logits: torch.Tensor | None = None
    prefix_kv: PrefixKV | None = None


class LLaDABlock(nn.Module):
    """Pre-norm block: x + attn(attn_norm(x)), then + ff_out(silu(ff_proj(h)) * up_proj(h))."""

    def __init__(self, config: LLaDAConfig, layer_id: int):
        super().__init__()
        self.config = config
        self.layer_id = layer_id
        d, hd = config.d_model, config.head_dim
        kv_dim = config.effective_n_kv_heads * hd
        hidden = config.ffn_hidden_size
        qkv_bias = bool(config.include_bias or config.include_qkv_bias)
        bias = bool(config.include_bias)

        self.attn_norm = _build_norm(config)
        self.ff_norm = _build_norm(config)
        self.q_proj = nn.Linear(d, d, bias=qkv_bias)
        self.k_proj = nn.Linear(d, kv_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d, kv_dim, bias=qkv_bias)
        self.attn_out = nn.Linear(d, d, bias=bias)
        self.ff_proj = nn.Linear(d, hidden, bias=bias)
        self.up_proj = nn.Linear(d, hidden, bias=bias)
        self.ff_out = nn.Linear(hidden, d, bias=bias)
        # Residual-branch outputs get a depth-dependent smaller init ("mitchell" scheme).
        self.attn_out._llada_depth = layer_id
        self.ff_out._llada_depth = layer_id
        self.dropout = nn.Dropout(config.residual_dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        key_mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv_out: list | None = None,
        keep: int = 0,
    ) -> torch.Tensor:
        """``past``: cached prefix keys / values the queries also attend to (the queries' own
        positions follow them); ``kv_out``: a list that receives this layer's first ``keep``
        keys / values."""
        x = x + self.dropout(self._attention(self.attn_norm(x), rope, key_mask, past, kv_out, keep))
        h = self.ff_norm(x)
        h = self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))
        return x + self.dropout(h)

    def _attention(
        self,
        h: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        key_mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv_out: list | None = None,
        keep: int = 0,
    ) -> torch.Tensor:
        cfg = self.config
        B, T, _ = h.shape
        n_heads, n_kv, hd = cfg.n_heads, cfg.effective_n_kv_heads, cfg.head_dim
        q = self.q_proj(h).view(B, T, n_heads, hd).transpose(1, 2)
        k = self.k_proj(h).view(B, T, n_kv, hd).transpose(1, 2)
        v = self.v_proj(h).view(B, T, n_kv, hd).transpose(1, 2)

        cos, sin = rope
        if cfg.rope_full_precision:
            q = apply_rope(q.float(), cos, sin).to(v.dtype)
            k = apply_rope(k.float(), cos, sin).to(v.dtype)
        else:
            q = apply_rope(q, cos.to(q.dtype), sin.to(q.dtype))
            k = apply_rope(k, cos.to(k.dtype), sin.to(k.dtype))

        if kv_out is not None:  # copies: a view would keep the whole canvas's K/V alive
            kv_out.append((k[:, :, :keep].contiguous(), v[:, :, :keep].contiguous()))
        if past is not None:
            k = torch.cat([past[0].to(k.dtype), k], dim=2)
            v = torch.cat([past[1].to(v.dtype), v], dim=2)

        if n_kv != n_heads:  # grouped-query attention: share each kv head across its query group
            k = k.repeat_interleave(n_heads // n_kv, dim=1)
            v = v.repeat_interleave(n_heads // n_kv, dim=1)

        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=key_mask,
            dropout_p=cfg.attention_dropout if self.training else 0.0,
            is_causal=False,  # bidirectional: every position sees the whole canvas
        )
        return self.attn_out(out.transpose(1, 2).reshape(B, T, cfg.d_model))


class LLaDATransformer(nn.Module):
    """Holds ``transformer`` = {wte, blocks, ln_f, ff_out}: the published module tree under ``model``."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.config = config
        layers: dict[str, nn.Module] = {
            "wte": nn.Embedding(config.padded_vocab_size, config.d_model),
            "blocks": nn.ModuleList(LLaDABlock(config, i) for i in range(config.n_layers)),
            "ln_f": _build_norm(config),
        }
        if not config.weight_tying:
            layers["ff_out"] = nn.Linear(config.d_model, config.padded_vocab_size, bias=bool(config.include_bias))
        self.transformer = nn.ModuleDict(layers)
        self.emb_drop = nn.Dropout(config.embedding_dropout)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prefix_kv: PrefixKV | None = None,
        keep_prefix: int = 0,
        logits_to_keep: int = 0,
    ) -> torch.Tensor | tuple[torch.Tensor, PrefixKV]:
        """Logits of ``inputs_embeds``' positions.

        ``prefix_kv``: the inputs are positions P.. of a canvas whose first P positions are cached
        (``attention_mask`` then covers all P + T positions, so padded prefix keys stay hidden).
        ``keep_prefix`` = P > 0: also return the per-layer keys / values of the first P positions.
        ``logits_to_keep`` = N > 0: logits of the last N input positions only (the final norm and
        the output head skip the others; transformers' argument of the same name and meaning).
        """
        cfg = self.config
        if prefix_kv is not None and keep_prefix:
            raise ValueError("pass prefix_kv or keep_prefix, not both")
        if not 0 <= logits_to_keep <= inputs_embeds.shape[1]:
            raise ValueError(
                f"logits_to_keep={logits_to_keep} must lie in [0, {inputs_embeds.shape[1]}] (0 keeps every position)"
            )
        x = inputs_embeds
        if cfg.input_emb_norm:
            x = x * math.sqrt(cfg.d_model)
        x = self.emb_drop(x)
        T = x.shape[1]
        P = prefix_kv.length if prefix_kv is not None else 0
        rope = rope_tables(P + T, cfg.head_dim, cfg.rope_theta, x.device)
        if P:  # rows of a longer table are exactly the rows of a shorter one: positions P..P+T-1
            rope = (rope[0][P:], rope[1][P:])
        key_mask = _key_padding_mask(attention_mask, P + T)
        kv_out: list | None = [] if keep_prefix else None
        for i, block in enumerate(self.transformer["blocks"]):
            past = prefix_kv.layers[i] if prefix_kv is not None else None
            x = block(x, rope, key_mask, past, kv_out, keep_prefix)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        x = self.transformer["ln_f"](x)
        if cfg.weight_tying:
            logits = F.linear(x, self.transformer["wte"].weight)
        else:
            logits = self.transformer["ff_out"](x)
        if cfg.scale_logits:
            logits = logits * (1.0 / math.sqrt(cfg.d_model))
        if kv_out is not None:
            return logits, PrefixKV(tuple(kv_out))
        return logits


def _key_padding_mask(attention_mask: torch.Tensor | None, seq_len: int) -> torch.Tensor | None:
    """[B, T] keep-mask (1 = real token) -> boolean SDPA mask [B, 1, 1, T], or None when nothing is masked.

    A row with no real token at all is left unmasked: SDPA would return NaN for it otherwise.
    """
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2 or attention_mask.shape[1] != seq_len:
        raise ValueError(f"attention_mask must have shape [batch, {seq_len}], got {tuple(attention_mask.shape)}")
    keep = attention_mask.bool()
    if bool(keep.all()):
        return None  # lets SDPA pick its fastest (mask-free) kernel
    keep = keep | ~keep.any(dim=-1, keepdim=True)
    return keep[:, None, None, :]


class LLaDAModelLM(PreTrainedModel):
    """The checkpoint-level model: ``forward(input_ids | inputs_embeds, attention_mask).logits``."""

    config_class = LLaDAConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["LLaDABlock"]
    _supports_sdpa = True
    supports_prefix_cache = True  # forward(prefix_kv=, keep_prefix=): see dslbench.diffusion.prompt_cache
    supports_logits_to_keep = True  # forward(logits_to_keep=N): the head runs on the last N positions only

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDATransformer(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer["wte"]

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer["wte"] = value

    def get_output_embeddings(self) -> nn.Linear | None:
        """The output head; None when ``weight_tying`` reuses the input embedding matrix."""
        return None if self.config.weight_tying else self.model.transformer["ff_out"]

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.model.transformer["ff_out"] = value

    def _init_weights(self, module: nn.Module) -> None:
        # Truncated normal with std 1/sqrt(fan_in) ("mitchell"), residual outputs further scaled
        # by 1/sqrt(2 * (layer + 1)); norms start at identity.
        if isinstance(module, nn.Linear):
            std = 1.0 / math.sqrt(module.in_features)
            depth = getattr(module, "_llada_depth", None)
            if depth is not None:
                std /= math.sqrt(2.0 * (depth + 1))
            hf_init.trunc_normal_(module.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)
            if module.bias is not None:
                hf_init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            std = 1.0 / math.sqrt(module.embedding_dim)
            hf_init.trunc_normal_(module.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)
        elif isinstance(module, LLaDARMSNorm):
            if module.weight is not None:
                hf_init.ones_(module.weight)
            if module.bias is not None:
                hf_init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        prefix_kv: PrefixKV | None = None,
        keep_prefix: int = 0,
        logits_to_keep: int = 0,
        **ignored,
    ) -> CausalLMOutput | LLaDAOutput:
        """Logits [B, T, padded_vocab] for every position. ``attention_mask`` [B, T]: 1 = real token.

        Prefix cache (off unless asked): ``keep_prefix=P`` returns an :class:`LLaDAOutput` whose
        ``prefix_kv`` holds the keys / values of the first P positions; ``prefix_kv=`` runs the given
        positions after that cached prefix (``attention_mask`` [B, P + T]: prefix and inputs).
        ``logits_to_keep=N`` > 0: logits of the last N positions only (as in transformers).
        Extra keyword arguments (``labels``, ``use_cache`` ... passed by generic callers) are ignored.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        wte = self.model.transformer["wte"]
        if inputs_embeds is None:
            inputs_embeds = wte(input_ids)
        else:
            inputs_embeds = inputs_embeds.to(wte.weight.dtype)
        out = self.model(inputs_embeds, attention_mask, prefix_kv=prefix_kv, keep_prefix=keep_prefix,
                         logits_to_keep=logits_to_keep)
        if keep_prefix:
            return LLaDAOutput(logits=out[0], prefix_kv=out[1])
        return CausalLMOutput(logits=out) if prefix_kv is None else LLaDAOutput(logits=out)
