"""Native MDLM-format network: the diffusion transformer (DiT) of kuleshov-group/mdlm.

Parameter names follow the released hub checkpoint (``kuleshov-group/mdlm-owt``) exactly, under
``backbone.``: ``vocab_embed.embedding``, ``sigma_map.mlp.{0,2}``, ``rotary_emb.inv_freq``,
``blocks.N.{norm1, attn_qkv, attn_out, norm2, mlp.{0,2}, adaLN_modulation}`` and
``output_layer.{norm_final, linear, adaLN_modulation}``, so the hub weights load without key
renaming and without ``trust_remote_code``, and a checkpoint written here loads in the released
modeling code.

The math is the released DiT's: adaLN-modulated pre-norm blocks (LayerNorm without bias,
computed in float32, times a learned weight), a fused q/k/v projection, rotary embeddings on q
and k (base 10000, rotate-half layout), tanh-GELU MLP of width 4x, gated residuals, and a final
adaLN layer with a biased output head. The conditioning vector is ``silu(sigma_map(sigma))``;
with ``time_conditioning=false`` (the released checkpoint) sigma is fed as zeros, as the
release's ``_process_sigma`` does, so it is one constant vector.

Departure, with its reason: the release computes attention with ``flash_attn``'s varlen kernel
(CUDA only, and not a dependency here); this module computes the same bidirectional softmax
attention with ``torch.nn.functional.scaled_dot_product_attention`` and applies rotary with plain
tensor ops. It also accepts a key padding ``attention_mask`` (the release has none: it never pads)
so that left-padded prompt batches keep their pads out of attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from dslbench.models.mdlm_config import MDLMConfig

FREQUENCY_EMBEDDING_SIZE = 256  # the released TimestepEmbedder's sinusoid width
ROTARY_BASE = 10_000


class MDLMLayerNorm(nn.Module):
    """``layer_norm(x.float()) * weight``: no bias, normalised in float32 (as released)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.layer_norm(x.float(), [self.dim]) * self.weight.float()).to(x.dtype)


class TimestepEmbedder(nn.Module):
    """Sinusoid of the noise level (width 256) -> Linear -> SiLU -> Linear (width ``cond_dim``)."""

    def __init__(self, cond_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(FREQUENCY_EMBEDDING_SIZE, cond_dim, bias=True), nn.SiLU(), nn.Linear(cond_dim, cond_dim, bias=True)
        )

    @staticmethod
    def sinusoid(t: torch.Tensor, dim: int = FREQUENCY_EMBEDDING_SIZE, max_period: float = 10000.0) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.sinusoid(t).to(self.mlp[0].weight.dtype))


class Rotary(nn.Module):
    """Holds ``inv_freq`` (a checkpoint key of the release); tables are computed per call."""

    def __init__(self, head_dim: int):
        super().__init__()
        inv_freq = 1.0 / (ROTARY_BASE ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq)

    def tables(self, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 (cos, sin) ``[T, head_dim]`` (frequencies repeated twice: rotate-half layout),
        broadcastable over ``[B, T, heads, head_dim]``; kept for the last length (a sampler calls
        the network many times on one canvas)."""
        key = (seq_len, str(device), self.inv_freq.data_ptr())
        if getattr(self, "_key", None) != key:
            t = torch.arange(seq_len, device=device, dtype=torch.float32)
            freqs = torch.outer(t, self.inv_freq.float().to(device))
            angles = torch.cat([freqs, freqs], dim=-1)
            self._key, self._tables = key, (angles.cos()[None, :, None, :], angles.sin()[None, :, None, :])
        return self._tables


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class DDiTBlock(nn.Module):
    def __init__(self, config: MDLMConfig):
        super().__init__()
        dim = config.hidden_dim
        self.n_heads = config.n_heads
        self.norm1 = MDLMLayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = MDLMLayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim, bias=True), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim, bias=True))
        self.adaLN_modulation = nn.Linear(config.cond_dim, 6 * dim, bias=True)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], c: torch.Tensor,
                key_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, D = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c)[:, None].chunk(6, dim=2)
        h = _modulate(self.norm1(x), shift_msa, scale_msa)
        qkv = self.attn_qkv(h).view(B, T, 3, self.n_heads, D // self.n_heads)
        cos, sin = rope
        # rotary in float32 (the release turns autocast off for it), v untouched
        q = _rotate(qkv[:, :, 0].float(), cos, sin).to(x.dtype).transpose(1, 2)
        k = _rotate(qkv[:, :, 1].float(), cos, sin).to(x.dtype).transpose(1, 2)
        v = qkv[:, :, 2].transpose(1, 2)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, is_causal=False)
        x = x + gate_msa * self.dropout(self.attn_out(attn.transpose(1, 2).reshape(B, T, D)))
        return x + gate_mlp * self.dropout(self.mlp(_modulate(self.norm2(x), shift_mlp, scale_mlp)))


class EmbeddingLayer(nn.Module):
    """The released ``vocab_embed``: one ``embedding`` parameter ``[V, D]`` indexed by id."""

    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab_size, dim))

    @property
    def weight(self) -> torch.Tensor:  # what callers of get_input_embeddings() read
        return self.embedding

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding[ids]


class DDitFinalLayer(nn.Module):
    def __init__(self, config: MDLMConfig):
        super().__init__()
        self.norm_final = MDLMLayerNorm(config.hidden_dim)
        self.linear = nn.Linear(config.hidden_dim, config.vocab_size)
        self.adaLN_modulation = nn.Linear(config.cond_dim, 2 * config.hidden_dim, bias=True)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=2)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


class DiTBackbone(nn.Module):
    """The released ``backbone`` module tree."""

    def __init__(self, config: MDLMConfig):
        super().__init__()
        self.config = config
        self.vocab_embed = EmbeddingLayer(config.hidden_dim, config.vocab_size)
        self.sigma_map = TimestepEmbedder(config.cond_dim)
        self.rotary_emb = Rotary(config.head_dim)
        self.blocks = nn.ModuleList(DDiTBlock(config) for _ in range(config.n_blocks))
        self.output_layer = DDitFinalLayer(config)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if not self.config.time_conditioning:
            sigma = torch.zeros_like(sigma)
        c = F.silu(self.sigma_map(sigma))
        rope = self.rotary_emb.tables(x.shape[1], x.device)
        key_mask = _key_padding_mask(attention_mask, x.shape[1])
        for block in self.blocks:
            x = block(x, rope, c, key_mask)
        return self.output_layer(x, c)


def _key_padding_mask(attention_mask: torch.Tensor | None, seq_len: int) -> torch.Tensor | None:
    """[B, T] keep-mask -> SDPA boolean mask [B, 1, 1, T]; None when nothing is hidden (a row with
    no real token stays unmasked: SDPA would return NaN for it)."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2 or attention_mask.shape[1] != seq_len:
        raise ValueError(f"attention_mask must have shape [batch, {seq_len}], got {tuple(attention_mask.shape)}")
    keep = attention_mask.bool()
    if bool(keep.all()):
        return None
    keep = keep | ~keep.any(dim=-1, keepdim=True)
    return keep[:, None, None, :]


class MDLM(PreTrainedModel):
    """The checkpoint-level model: ``forward(input_ids | inputs_embeds, attention_mask).logits``
    ``[B, T, vocab_size]``, raw (the samplers apply MDLM's substitution parameterization)."""

    config_class = MDLMConfig
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    _no_split_modules = ["DDiTBlock"]
    _supports_sdpa = True

    def __init__(self, config: MDLMConfig):
        super().__init__(config)
        self.backbone = DiTBackbone(config)
        self.post_init()

    def get_input_embeddings(self) -> EmbeddingLayer:
        return self.backbone.vocab_embed

    def set_input_embeddings(self, value: EmbeddingLayer) -> None:
        self.backbone.vocab_embed = value

    def get_output_embeddings(self) -> nn.Linear:
        """The output head (untied): ``output_layer.linear``."""
        return self.backbone.output_layer.linear

    def _init_weights(self, module: nn.Module) -> None:
        # Torch's defaults plus the released embedding init. The release zeroes the adaLN
        # projections and the output head before training; a random tiny model must not (its
        # logits would be constant), so they keep the Linear default here.
        if isinstance(module, EmbeddingLayer):
            nn.init.kaiming_uniform_(module.embedding, a=math.sqrt(5))
        elif isinstance(module, MDLMLayerNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, Rotary):
            head_dim = module.inv_freq.shape[0] * 2
            module.inv_freq.copy_(1.0 / (ROTARY_BASE ** (torch.arange(0, head_dim, 2).float() / head_dim)))
        elif isinstance(module, nn.Linear):
            module.reset_parameters()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **ignored,
    ) -> MaskedLMOutput:
        """``timesteps`` [B]: the noise level (ignored, as released, with ``time_conditioning=false``)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        embed = self.backbone.vocab_embed
        x = embed(input_ids) if inputs_embeds is None else inputs_embeds.to(embed.embedding.dtype)
        if timesteps is None:
            timesteps = torch.zeros(x.shape[0], device=x.device, dtype=torch.float32)
        return MaskedLMOutput(logits=self.backbone(x, timesteps, attention_mask))
