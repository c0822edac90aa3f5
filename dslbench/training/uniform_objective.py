"""``--objective uniform``: uniform-state block-diffusion training of DiffusionGemma-format models.

The published DiffusionGemma SFT recipe (NeMo AutoModel's ``DiffusionGemmaSFTRecipe``, the
fine-tuning guide of ``google/diffusiongemma-26B-A4B-it``), as this objective implements it:

* one corruption level per example, ``t ~ U(eps, 1)`` (``eps`` 1e-3); every supervised canvas
  position is replaced, independently with probability ``t``, by a token drawn uniformly from
  the whole vocabulary (there is no mask token);
* the causal encoder reads the clean prompt (and, for canvas k, the clean response canvases
  before k) into the KV cache the bidirectional decoder reads, as at inference; the response is
  cut into canvases of ``config.canvas_length``; one encoder pass over the whole clean sequence
  (in canvas-sized pieces) serves both the cache and the AR loss;
* the diffusion loss is a flat cross-entropy over every supervised canvas position, corrupted or
  not (mean over the positions of the micro-batch);
* self-conditioning: per example with probability ``self_conditioning_p`` (0.5), the decoder first
  runs without it (no gradient) and its logits enter the trained pass as
  ``self_conditioning_logits`` (``self_conditioning_mask`` off for the other examples);
* plus ``encoder_loss_weight`` (1.0) x the causal next-token cross-entropy of the encoder over the
  clean prompt + response (the same weights in their encoder mode);
* the MoE router is frozen (``--freeze-router yes``, the published SFT); a from-scratch run
  trains it (``--freeze-router no``: a named departure, a random router cannot be left frozen).

Everything runs through transformers' own modules (``model.model.encoder`` / ``model(...)``);
only the encoder-mode output head (the model's ``lm_head`` with its final-logit soft-capping,
as its forward applies to the decoder) is spelled out here, since transformers exposes no
encoder-logits call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dslbench.training.data import Batch
from dslbench.training.objective import AdaptModule, LossOutput, Objective, ObjectiveError

UNIFORM_EPS = 1e-3
FREEZE_ROUTER_CHOICES = ("yes", "no")


def uniform_corrupt(ids: torch.Tensor, supervised: torch.Tensor, vocab_size: int,
                    generator: torch.Generator | None, eps: float = UNIFORM_EPS):
    """``(noisy, corrupted [B,L] bool, t [B])``: each supervised position replaced with its row's t."""
    gen_device = generator.device if generator is not None else ids.device
    B, L = ids.shape
    t = (1.0 - eps) * torch.rand((B,), generator=generator, device=gen_device).to(ids.device) + eps
    u = torch.rand((B, L), generator=generator, device=gen_device).to(ids.device)
    random_ids = torch.randint(0, vocab_size, (B, L), generator=generator, device=gen_device).to(ids.device)
    corrupted = (u < t[:, None]) & supervised
    return torch.where(corrupted, random_ids, ids), corrupted, t


def split_prompt_response(batch: Batch, bos: int | None, pad: int):
    """Left-padded prompts ``[B, P]`` (+ mask) and right-padded responses ``[B, R]`` (+ mask) of a batch.
    A row without prompt tokens (text-only data) gets BOS as its prompt."""
    prompts, responses = [], []
    for ids, prompt, resp in zip(batch.input_ids, batch.prompt_mask, batch.response_mask.bool()):
        p = ids[prompt]
        if p.numel() == 0:
            if bos is None:
                raise ObjectiveError("--objective uniform: a row has no prompt tokens and the tokenizer has no BOS to encode")
            p = torch.tensor([bos], dtype=ids.dtype, device=ids.device)
        prompts.append(p)
        responses.append(ids[resp])
    B, device = len(prompts), batch.input_ids.device
    P, R = max(len(p) for p in prompts), max(1, max(len(r) for r in responses))
    prompt_ids = torch.full((B, P), pad, dtype=torch.long, device=device)
    prompt_mask = torch.zeros((B, P), dtype=torch.bool, device=device)
    resp_ids = torch.full((B, R), pad, dtype=torch.long, device=device)
    resp_mask = torch.zeros((B, R), dtype=torch.bool, device=device)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        prompt_ids[i, P - len(p):], prompt_mask[i, P - len(p):] = p, True
        resp_ids[i, : len(r)], resp_mask[i, : len(r)] = r, True
    return prompt_ids, prompt_mask, resp_ids, resp_mask


def encoder_head_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The model's output head on encoder hidden states, soft-capped as its forward does."""
    cap = model.final_logit_softcapping
    logits = model.lm_head(hidden).float()
    return torch.tanh(logits / cap) * cap if cap else logits


class UniformObjective(Objective):
    name = "uniform"
    freeze_head_default = False

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.eps = float(self.options.get("uniform_eps", UNIFORM_EPS))
        self.sc_p = float(self.options.get("self_conditioning_p", 0.5))
        self.enc_w = float(self.options.get("encoder_loss_weight", 1.0))
        self.freeze_router = self.options.get("freeze_router", "yes")
        if not 0.0 <= self.eps < 1.0:
            raise ObjectiveError(f"--uniform-eps {self.eps} must lie in [0, 1)")
        if not 0.0 <= self.sc_p <= 1.0:
            raise ObjectiveError(f"--self-conditioning-p {self.sc_p} must lie in [0, 1]")
        if not self.enc_w >= 0.0:
            raise ObjectiveError(f"--encoder-loss-weight {self.enc_w} must be >= 0")
        if self.freeze_router not in FREEZE_ROUTER_CHOICES:
            raise ObjectiveError(f"--freeze-router {self.freeze_router!r} is not valid; allowed: yes, no")

    @classmethod
    def add_arguments(cls, parser) -> None:
        g = parser.add_argument_group("uniform objective (DiffusionGemma-format models)")
        g.add_argument("--uniform-eps", type=float, default=UNIFORM_EPS, help="t ~ U(eps, 1) per example (default 1e-3)")
        g.add_argument("--self-conditioning-p", type=float, default=0.5, help="share of examples trained with self-conditioning")
        g.add_argument("--encoder-loss-weight", type=float, default=1.0, help="weight of the encoder's causal next-token loss")
        g.add_argument("--freeze-router", default="yes", help="yes (published SFT) or no (from-scratch training)")

    # ---- set-up
    @staticmethod
    def load_base(base: str):
        """``(model, tokenizer, info, preloaded, base_dir)``: a DiffusionGemma checkpoint in float32 on the CPU."""
        from dslbench.models.diffusiongemma import load_diffusiongemma
        from dslbench.models.loading import resolve_checkpoint_dir

        base_dir = resolve_checkpoint_dir(base)
        model, tokenizer, info = load_diffusiongemma(base_dir, dtype="float32", device="cpu")
        return model, tokenizer, info, {}, base_dir

    def build(self, backbone, tokenizer, info, base_dir=None, preloaded=None):
        if getattr(info, "family", "") != "diffusiongemma":
            raise ObjectiveError(f"--objective uniform needs a DiffusionGemma-format base checkpoint; got {info.family}")
        self.bos = tokenizer.bos_token_id
        return {}

    def configure_trainable(self, module: AdaptModule) -> None:
        super().configure_trainable(module)
        if self.freeze_router == "yes":
            for name, p in module.backbone.named_parameters():
                if ".router." in name:
                    p.requires_grad_(False)

    # ---- training
    def loss(self, module: AdaptModule, batch: Batch, generator) -> LossOutput:
        """Canvas by canvas, as ``generate`` runs: the encoder appends the clean prompt, then each clean
        canvas, to the KV cache; before canvas k is appended, the decoder denoises its corrupted copy
        reading the cache so far. The encoder's hidden states of those passes give the AR loss."""
        model = module.backbone
        info = module.info
        canvas = int(model.config.canvas_length)
        prompt_ids, prompt_mask, resp_ids, resp_mask = split_prompt_response(batch, self.bos, info.pad_id)
        noisy, corrupted, _ = uniform_corrupt(resp_ids, resp_mask, info.vocab_size, generator, self.eps)
        B, R = resp_ids.shape
        gen_device = generator.device if generator is not None else "cpu"
        use_sc = torch.rand((B,), generator=generator, device=gen_device).to(resp_ids.device) < self.sc_p
        n_sup = int(resp_mask.sum())
        enc = model.model.encoder(input_ids=prompt_ids, attention_mask=prompt_mask)
        cache, hidden, ctx_mask = enc.cache, [enc.last_hidden_state], prompt_mask
        ce_sum = resp_ids.new_zeros((), dtype=torch.float32)
        for start in range(0, R, canvas):
            stop = min(start + canvas, R)
            block, block_mask = noisy[:, start:stop], resp_mask[:, start:stop]
            dec_mask = torch.cat([ctx_mask, block_mask], dim=1)
            sc_logits = None
            if bool(use_sc.any()):  # the first, self-conditioning-free pass: no gradient
                with torch.no_grad():
                    sc_logits = model(decoder_input_ids=block, cache=cache, decoder_attention_mask=dec_mask).logits
            logits = model(decoder_input_ids=block, cache=cache, decoder_attention_mask=dec_mask,
                           self_conditioning_logits=sc_logits,
                           self_conditioning_mask=use_sc if sc_logits is not None else None).logits
            target = resp_ids[:, start:stop]
            ce_sum = ce_sum + F.cross_entropy(logits[block_mask].float(), target[block_mask], reduction="sum")
            if stop < R or self.enc_w > 0:  # append the clean canvas (the last one only feeds the AR loss)
                enc = model.model.encoder(input_ids=target, attention_mask=dec_mask, cache=cache)
                cache, ctx_mask = enc.cache, dec_mask
                hidden.append(enc.last_hidden_state)
        diffusion = ce_sum / max(1, n_sup)
        loss = diffusion
        metrics = {"corrupt_rate": float(corrupted.sum()) / max(1, n_sup), "diffusion_loss": float(diffusion.detach())}
        if self.enc_w > 0:
            full_ids = torch.cat([prompt_ids, resp_ids], dim=1)
            full_mask = torch.cat([prompt_mask, resp_mask], dim=1)
            ar_logits = encoder_head_logits(model, torch.cat(hidden, dim=1)[:, :-1])
            target_mask = full_mask[:, 1:] & full_mask[:, :-1]
            ar = F.cross_entropy(ar_logits[target_mask], full_ids[:, 1:][target_mask])
            loss = loss + self.enc_w * ar
            metrics["encoder_loss"] = float(ar.detach())
        return LossOutput(loss, batch.n_tokens, n_sup, metrics)

    # ---- output
    def save_final(self, module: AdaptModule, tokenizer, info, out_dir: Path, record: dict) -> Path:
        from dslbench.models.diffusiongemma import save_diffusiongemma

        return save_diffusiongemma(module.backbone, tokenizer, out_dir)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "uniform_eps": self.eps, "self_conditioning_p": self.sc_p,
                "encoder_loss_weight": self.enc_w, "freeze_router": self.freeze_router,
                "loss": "flat CE over all supervised canvas positions + encoder_loss_weight x encoder AR CE"}
