"""DiffusionGemma checkpoints through transformers' own classes, and the seam that counts its NFE.

transformers >= 5 ships ``DiffusionGemmaForBlockDiffusion`` (``transformers.models.diffusion_gemma``):
a causal *prompt encoder* writes the prompt (and every finished canvas) into a KV cache, and a
bidirectional *canvas decoder* refines a block ("canvas") of ``config.canvas_length`` tokens that
starts as uniformly random tokens, reading that cache and its own previous logits
(self-conditioning, fed into the same call). Nothing here re-implements the network: the model
and its generation config are transformers'; this module loads the checkpoint (text only), runs
the encoder and decoder one step at a time for the sampler (:class:`CanvasDecoderSeam`, through
transformers' own cache and mask helpers), counts the network evaluations at the two modules,
and builds tiny checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

MODEL_TYPE = "diffusion_gemma"


class NotDiffusionGemmaError(ValueError):
    """The checkpoint is not in the DiffusionGemma format."""


@dataclass(frozen=True)
class DiffusionGemmaInfo:
    """The facts the backend needs (the same field names as ``loading.ModelInfo`` where they overlap)."""

    eos_ids: tuple[int, ...]
    pad_id: int
    vocab_size: int
    canvas_length: int
    has_chat_template: bool
    path: str = ""
    family: str = "diffusiongemma"
    mask_id: int | None = None  # uniform-state noise: there is no mask token

    @property
    def eos_id(self) -> int:
        return self.eos_ids[0]

    @property
    def eot_id(self) -> int | None:
        return self.eos_ids[1] if len(self.eos_ids) > 1 else None


def check_diffusiongemma_config(raw: dict[str, Any], where: str) -> None:
    model_type = raw.get("model_type")
    if model_type != MODEL_TYPE:
        raise NotDiffusionGemmaError(
            f"diffusiongemma: {where}/config.json has model_type={model_type!r}; this backend loads only "
            f"DiffusionGemma checkpoints (model_type={MODEL_TYPE!r}, e.g. google/diffusiongemma-26B-A4B-it). "
            "LLaDA- or Dream-format checkpoints run with --model mdm_llada / dsl_llada / softmask_llada."
        )


def _eos_ids(model, tokenizer) -> tuple[int, ...]:
    """Every id that ends a response: the generation config's EOS list, then the tokenizer's EOS."""
    ids: list[int] = []
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    for value in ([gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])):
        ids.append(int(value))
    for value in (model.config.text_config.eos_token_id, tokenizer.eos_token_id):
        for v in ([value] if isinstance(value, int) else list(value or [])):
            if int(v) not in ids:
                ids.append(int(v))
    if not ids:
        raise NotDiffusionGemmaError("diffusiongemma: the checkpoint defines no EOS token (generation config, config or tokenizer)")
    return tuple(ids)


MIN_TRANSFORMERS = "5.24"  # DiffusionGemma whose encoder / decoder take the `cache` keyword


def require_transformers() -> None:
    """A clear error when the installed transformers predates what this module drives."""
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) < Version(MIN_TRANSFORMERS):
        raise ImportError(
            f"diffusiongemma: transformers {transformers.__version__} is installed; DiffusionGemma as dslbench "
            f"drives it needs transformers >= {MIN_TRANSFORMERS} (pip install -U 'transformers>={MIN_TRANSFORMERS}')"
        )


def load_diffusiongemma(pretrained: str | os.PathLike, dtype: str = "auto", device: str = "auto"):
    """(model, tokenizer, DiffusionGemmaInfo) for a local directory or hub id; text only."""
    require_transformers()
    from transformers import DiffusionGemmaForBlockDiffusion

    from dslbench.models.loading import (
        load_tokenizer,
        read_config_json,
        resolve_checkpoint_dir,
        resolve_device,
        resolve_dtype,
    )

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    directory = resolve_checkpoint_dir(pretrained)
    check_diffusiongemma_config(read_config_json(directory), str(directory))
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(str(directory), dtype=torch_dtype).to(dev).eval()
    tokenizer = load_tokenizer(directory, config=model.config)
    pad = model.config.text_config.pad_token_id
    if pad is None:
        pad = tokenizer.pad_token_id
    info = DiffusionGemmaInfo(
        eos_ids=_eos_ids(model, tokenizer),
        pad_id=int(pad if pad is not None else 0),
        vocab_size=int(model.config.text_config.vocab_size),
        canvas_length=int(model.config.canvas_length),
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        path=str(directory),
    )
    return model, tokenizer, info


@dataclass
class CanvasDecoderSeam:
    """The network-evaluation seam of a DiffusionGemma model.

    ``nfe`` counts canvas-decoder evaluations (one per denoising step; the self-conditioning
    signal rides in the same call); ``encoder_passes`` counts prompt-encoder passes (the prompt
    prefill, then one per finished canvas appended to the cache). Forward hooks count at the
    modules themselves, so transformers' own ``generate`` is counted the same way.

    ``begin`` / ``denoise`` / ``append`` run one batch through transformers' encoder and decoder
    as ``generate`` calls them (a ``DynamicCache``, its mask helpers, the model's forward), for the
    sampler in :mod:`dslbench.diffusion.entropy_bound`. One difference: positions count each
    row's own tokens (left padding does not shift them), so a row sees the positions it has in a
    batch of one; ``generate`` numbers every row from the first padded column.
    """

    model: Any
    eos_ids: tuple[int, ...]
    nfe: int = 0
    encoder_passes: int = 0
    _hooks: list = field(default_factory=list, repr=False)
    _state: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._hooks = [
            self.model.model.decoder.register_forward_hook(self._count_decoder),
            self.model.model.encoder.register_forward_hook(self._count_encoder),
        ]

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.text_config.vocab_size)

    @property
    def canvas_length(self) -> int:
        return int(self.model.config.canvas_length)

    def _count_decoder(self, *_: Any) -> None:
        self.nfe += 1

    def _count_encoder(self, *_: Any) -> None:
        self.encoder_passes += 1

    def reset(self) -> None:
        self.nfe = 0
        self.encoder_passes = 0
        self._state = {}

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    # ------------------------------------------------------------------ block-diffusion steps
    def begin(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> None:
        """Encode the left-padded prompts into a fresh cache (one encoder pass)."""
        from transformers import DynamicCache

        mask = prompt_mask.bool()
        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        lengths = mask.sum(dim=-1, keepdim=True)
        self._state = {"cache": cache, "mask": mask, "lengths": lengths}
        self._encode(prompt_ids, (mask.cumsum(dim=-1) - 1).clamp(min=0))

    def append(self, canvas: torch.Tensor) -> None:
        """Encode a finished canvas after what is cached (one encoder pass)."""
        state = self._state
        state["mask"] = torch.nn.functional.pad(state["mask"], (0, canvas.shape[1]), value=True)
        positions = self._canvas_positions()
        state["lengths"] = state["lengths"] + canvas.shape[1]
        self._encode(canvas, positions)

    def denoise(self, canvas: torch.Tensor, self_conditioning: torch.Tensor | None) -> torch.Tensor:
        """Logits [B, L, V] (float32, soft-capped) of one decoder evaluation."""
        state = self._state
        if "decoder_mask" not in state:  # once per canvas: it depends on the cache length only
            state["decoder_mask"] = self.model.model.decoder.create_diffusion_decoder_attention_mask(
                config=self.model.config,
                inputs_embeds=canvas.unsqueeze(-1),  # only its shape is read
                cache=state["cache"],
                decoder_attention_mask=torch.nn.functional.pad(state["mask"], (0, canvas.shape[1]), value=True),
            )
        if self_conditioning is not None:
            self_conditioning = self_conditioning.to(self.model.model.decoder.embed_tokens.weight.dtype)
        return self.model(
            decoder_input_ids=canvas,
            self_conditioning_logits=self_conditioning,
            decoder_attention_mask=state["decoder_mask"],
            cache=state["cache"],
            decoder_position_ids=self._canvas_positions(),
        ).logits

    def _canvas_positions(self) -> torch.Tensor:
        offsets = torch.arange(self.canvas_length, device=self._state["lengths"].device)
        return self._state["lengths"] + offsets[None]

    def _encode(self, ids: torch.Tensor, positions: torch.Tensor) -> None:
        state = self._state
        encoder = self.model.model.encoder
        masks = encoder.create_masks_for_generate(
            config=self.model.config,
            inputs_embeds=torch.empty((*ids.shape, 0), dtype=self.model.dtype, device=ids.device),  # shape only
            attention_mask=state["mask"],
            cache=state["cache"],
            position_ids=positions,
        )
        state["cache"] = encoder(input_ids=ids, attention_mask=masks, cache=state["cache"], position_ids=positions).cache
        state.pop("decoder_mask", None)

    def canvas_logits(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, canvas: torch.Tensor, canvas_mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits [B, L, V] of one decoder evaluation of ``canvas`` after the prompt (no self-conditioning,
        as at the first denoising step): one encoder pass and one NFE."""
        out = self.model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            decoder_input_ids=canvas,
            decoder_attention_mask=torch.cat([prompt_mask, canvas_mask], dim=1).bool(),
        )
        return out.logits


# ------------------------------------------------------------------------------ tiny checkpoints

# The published sampler settings (transformers' DiffusionGemmaGenerationConfig defaults), written
# explicitly into a tiny checkpoint's generation_config.json as a released checkpoint does.
def _published_generation_config(eos_ids: list[int], pad_id: int, bos_id: int):
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import DiffusionGemmaGenerationConfig

    defaults = DiffusionGemmaGenerationConfig._get_default_generation_params()
    defaults.pop("max_new_tokens")
    return DiffusionGemmaGenerationConfig(**defaults, eos_token_id=eos_ids, pad_token_id=pad_id, bos_token_id=bos_id)


def tiny_diffusiongemma_config(
    vocab_size: int, bos_id: int, eos_id: int, pad_id: int, canvas_length: int = 32, hidden_size: int = 64,
    num_hidden_layers: int = 2, max_position_embeddings: int = 1024,
):
    """A DiffusionGemmaConfig with tiny sizes (4 experts, top-2; a one-layer 16-wide vision tower,
    which transformers always builds, that text-only use never runs)."""
    from transformers import DiffusionGemmaConfig

    layer_types = ["sliding_attention"] * (num_hidden_layers - 1) + ["full_attention"]
    text = dict(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=4, num_key_value_heads=2,
        head_dim=hidden_size // 4, global_head_dim=hidden_size // 4, max_position_embeddings=max_position_embeddings, sliding_window=128,
        layer_types=layer_types, num_experts=4, top_k_experts=2, moe_intermediate_size=hidden_size // 2,
        pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=bos_id,
    )
    vision = dict(
        model_type="gemma4_vision", hidden_size=16, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=1, num_key_value_heads=1, head_dim=16, position_embedding_size=16,
        patch_size=4, pooling_kernel_size=1,
    )
    return DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=canvas_length)


def build_tiny_diffusiongemma(tokenizer, seed: int = 0, **config_overrides: Any):
    """A randomly initialised tiny DiffusionGemmaForBlockDiffusion whose token ids come from ``tokenizer``."""
    require_transformers()
    from transformers import DiffusionGemmaForBlockDiffusion

    from dslbench.models.tokenizer import BOS_TOKEN, EOS_TOKEN, EOT_TOKEN, PAD_TOKEN, token_id

    ids = {name: token_id(tokenizer, tok) for name, tok in
           (("bos", BOS_TOKEN), ("eos", EOS_TOKEN), ("eot", EOT_TOKEN), ("pad", PAD_TOKEN))}
    missing = [name for name, value in ids.items() if value is None]
    if missing:
        raise ValueError(f"tokenizer lacks the special tokens needed for {missing}")
    config = tiny_diffusiongemma_config(
        len(tokenizer), bos_id=ids["bos"], eos_id=ids["eos"], pad_id=ids["pad"], **config_overrides
    )
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(config).eval()
    model.generation_config = _published_generation_config([ids["eos"], ids["eot"]], ids["pad"], ids["bos"])
    return model


def save_diffusiongemma(model, tokenizer, out: str | os.PathLike) -> Path:
    """``save_pretrained`` of model (with its generation config) and tokenizer, swapped into ``out`` atomically."""
    from dslbench.models.staging import staged_checkpoint_dir

    with staged_checkpoint_dir(out) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return Path(out).expanduser().resolve()


def make_tiny_diffusiongemma(out: str | os.PathLike, tokenizer, seed: int = 0, **config_overrides: Any) -> Path:
    """``config_overrides`` resize it (``canvas_length``, ``hidden_size``, ``num_hidden_layers``, ...)."""
    return save_diffusiongemma(build_tiny_diffusiongemma(tokenizer, seed=seed, **config_overrides), tokenizer, out)
