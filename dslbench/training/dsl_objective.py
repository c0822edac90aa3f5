"""The ``dsl`` objective: Discrete Stochastic Localization (DESIGN.md, section DSL), by default
the released DSL-LLaDA training step (``dsl_llada/train/llada_cpt_dsl.py`` on top of LLaDA-XDLM's
``llada_cpt.py``). Per row, SNRs for every real (non-pad) position, prompt and response alike,
from the published schedule (:func:`dslbench.diffusion.dsl.sample_training_snr` over the row's
real tokens in order, as the release draws them over its whole block); ``z`` = the channel on
those tokens; inputs = ``dsl.convert(z)`` (float32, autocast off) at every real position, so
the prompt enters noised like the response and the token embedding receives no gradient; the
backbone runs on ``inputs_embeds`` and the loss is the float32 cross-entropy against the clean
tokens on the response positions only, a token mean over the micro-batch
``sum_{b,i in response} CE_bi / N_response`` (the release's ``loss.sum() / (B L - sum prompt)``).
Trainable: the backbone except the output head (optionally a LoRA adapter on the head), and the
converter; the noise embedding never. The converter's linear bias keeps PyTorch's default
initialisation (its weight starts from the base token embeddings), as in the release.
Departures, each a named option: ``--dsl-prompt clean`` (the prompt as clean token embeddings,
the way the sampler feeds it), ``--dsl-loss-norm rows`` (a mean of per-row means),
``--converter-bias-init zero``; released options: ``--head-lora-rank``, ``--converter-grad-scale``.

On an MDLM-format base (the DiT of kuleshov-group/mdlm; the DSL release trains LLaDA only) the
step is the same; :data:`MDLM_OPEN_CHOICES` names what the released material leaves open and
what is done here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dslbench.training.data import Batch
from dslbench.training.objective import AdaptModule, LossOutput, Objective, ObjectiveError

# What the DSL release leaves open for a DiT base, and the choice made (in ``--help``, the docs and
# adapt_config.json).
MDLM_OPEN_CHOICES = (
    "input seam: the converter's output replaces vocab_embed's lookup (inputs_embeds into the DiT), the one "
    "place a DiT takes token vectors, as LLaDA's wte is bypassed; rotary positions are untouched",
    "adaLN conditioning: left as the base runs it, time_conditioning=false, i.e. the constant "
    "silu(sigma_map(0)) (the noise level reaches the network only through the converter, as in DSL-LLaDA, "
    "whose backbone has no time input); feeding the SNR to sigma_map would need time_conditioning=true, which "
    "the released checkpoint lacks; sigma_map and the adaLN projections stay trainable",
    "frozen head (--freeze-head auto): output_layer.linear, the unembedding (LLaDA's ff_out); norm_final and "
    "the final adaLN modulation train, like LLaDA's ln_f",
    "loss: cross-entropy over the vocabulary without [MASK] (its logit -inf, as every MDLM-format objective "
    "and the samplers read it: the SUBS rule that [MASK] is never a prediction; DSL-LLaDA keeps it)",
    "converter init: from vocab_embed.embedding and its [MASK] row (the last id), as from LLaDA's wte",
    "layout: config.json + model.safetensors exactly as mdlm-owt (the released MDLM code loads the backbone), "
    "the DSL tensors under the release's names in dsl.safetensors; no head LoRA",
)

LOGNORMAL_PER = ("token", "sequence")
DSL_PROMPT = ("noised", "clean")
DSL_LOSS_NORM = ("tokens", "rows")
CONVERTER_BIAS_INIT = ("default", "zero")


def place_response_values(values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Scatter ``values`` ``[B, R]`` (one per marked position, in order) into ``[B, T]``
    (zeros elsewhere). Row b uses its first ``len_b`` values."""
    idx = (response_mask.long().cumsum(dim=1) - 1).clamp(min=0, max=values.shape[1] - 1)
    out = torch.gather(values.to(response_mask.device), 1, idx)
    return torch.where(response_mask.bool(), out, torch.zeros_like(out))


def response_token_loss(ce: torch.Tensor, response_mask: torch.Tensor, norm: str = "tokens") -> torch.Tensor:
    """Reduce ``ce`` (one value per response position, in ``response_mask[response_mask]``
    order) to the loss. ``tokens``: ``sum(ce) / N`` over the micro-batch's N response positions
    (the released DSL training); ``rows``: ``(1/B) sum_b mean_{i in row b} ce_bi``."""
    resp = response_mask.bool()
    if norm == "tokens":
        return ce.sum() / max(1, int(resp.sum()))
    if norm == "rows":
        B, T = resp.shape
        row_w = 1.0 / resp.sum(dim=1).clamp(min=1).float()
        return (ce * row_w[:, None].expand(B, T)[resp]).sum() / B
    raise ObjectiveError(f"--dsl-loss-norm {norm!r} is not valid; allowed: {', '.join(DSL_LOSS_NORM)}")


class DSLObjective(Objective):
    name = "dsl"
    freeze_head_default = True
    weight_decay_default = "released"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        opt = self.options.get
        self.noise_dim = int(opt("noise_dim", 100))
        self.beta_init = float(opt("beta_init", 2.0))
        self.noise_seed = int(opt("noise_seed", 0))
        self.roar_prob = float(opt("roar_prob", 0.1))
        self.lognormal_per = opt("lognormal_per", "token")
        self.prompt = opt("dsl_prompt") or "noised"
        self.loss_norm = opt("dsl_loss_norm") or "tokens"
        self.bias_init = opt("converter_bias_init") or "default"
        self.grad_scale = float(1.0 if opt("converter_grad_scale") is None else opt("converter_grad_scale"))
        self.lora_rank = int(opt("head_lora_rank") or 0)
        self.lora_alpha = float(opt("head_lora_alpha") or 128.0)
        if self.noise_dim < 1:
            raise ObjectiveError(f"--noise-dim {self.noise_dim} must be >= 1")
        if not self.beta_init > 0:
            raise ObjectiveError(f"--beta-init {self.beta_init} must be > 0")
        if not 0.0 <= self.roar_prob <= 1.0:
            raise ObjectiveError(f"--roar-prob {self.roar_prob} must lie in [0, 1]")
        for flag, value, allowed in (("--lognormal-per", self.lognormal_per, LOGNORMAL_PER),
                                     ("--dsl-prompt", self.prompt, DSL_PROMPT),
                                     ("--dsl-loss-norm", self.loss_norm, DSL_LOSS_NORM),
                                     ("--converter-bias-init", self.bias_init, CONVERTER_BIAS_INIT)):
            if value not in allowed:
                raise ObjectiveError(f"{flag} {value!r} is not valid; allowed: {', '.join(allowed)}")
        if not (math.isfinite(self.grad_scale) and self.grad_scale > 0):
            raise ObjectiveError(f"--converter-grad-scale {self.grad_scale} must be > 0")
        if self.lora_rank < 0:
            raise ObjectiveError(f"--head-lora-rank {self.lora_rank} must be >= 0 (0: no adapter)")
        if not (math.isfinite(self.lora_alpha) and self.lora_alpha > 0):
            raise ObjectiveError(f"--head-lora-alpha {self.lora_alpha} must be > 0")
        if self.lora_rank and self.options.get("freeze_head", "auto") == "no":
            raise ObjectiveError("--head-lora-rank trains the head through an adapter on a frozen base; "
                                 "it cannot be combined with --freeze-head no")
        self.resumed_from_dsl = False
        self.family = None

    @classmethod
    def add_arguments(cls, parser) -> None:
        g = parser.add_argument_group(
            "dsl objective (defaults: the released DSL-LLaDA training)",
            "On an MDLM-format base, open in the released material and chosen here: "
            + "; ".join(f"({i + 1}) {c}" for i, c in enumerate(MDLM_OPEN_CHOICES)) + ".")
        g.add_argument("--noise-dim", type=int, default=100,
                       help="noise embedding dimension d (default 100, the published DSL-LLaDA-Beta1 checkpoint's; "
                       "the released train_dsl.sh uses 48)")
        g.add_argument("--beta-init", type=float, default=2.0,
                       help="initial converter beta (default 2.0, DESIGN.md; the released script's own default is "
                       "5.0 and the published DSL-LLaDA-Beta1 checkpoint was trained from 1.0)")
        g.add_argument("--noise-seed", type=int, default=0, help="seed of the frozen noise embedding")
        g.add_argument("--roar-prob", type=float, default=0.1, help="share of smoothed random-order SNR draws")
        g.add_argument("--lognormal-per", default="token",
                       help="token (default: DESIGN.md and the release's top-level dsl_modules.py, used by the runs its "
                       "registry calls per-token) or sequence (dsl_llada/core/dsl_modules.py, which the released "
                       "training script imports): the release is ambiguous here")
        g.add_argument("--dsl-prompt", default="noised",
                       help="noised (released: the prompt goes through the channel and the converter like the "
                       "response) or clean (departure: clean token embeddings, the way the sampler feeds the "
                       "prompt at inference; also gives the token embedding gradients the release never gives it)")
        g.add_argument("--dsl-loss-norm", default="tokens",
                       help="tokens (released: cross-entropy summed over the micro-batch's response tokens / "
                       "their number) or rows (departure: mean of per-row means, every row weighs the same)")
        g.add_argument("--converter-bias-init", default="default",
                       help="default (released: the converter Linear's bias keeps PyTorch's U(-1/sqrt(V+1), "
                       "1/sqrt(V+1)) initialisation) or zero (departure: bias 0, so an untrained converter "
                       "maps a clean token exactly onto its embedding)")
        g.add_argument("--converter-grad-scale", type=float, default=1.0,
                       help="multiply the converter's gradients by this (released option DSL_CONVERTER_LR_SCALE, "
                       "default 1; the authors' later runs use 25): a higher effective converter learning rate")
        g.add_argument("--head-lora-rank", type=int, default=0,
                       help="train the frozen output head through a LoRA adapter of this rank (released option "
                       "DSL_FFOUT_LORA_R, default 0 = head frozen; the authors' later runs use 32); saved as "
                       "model.transformer.ff_out.{base.weight,lora_A,lora_B}")
        g.add_argument("--head-lora-alpha", type=float, default=128.0,
                       help="LoRA alpha of the head adapter (default 128, the released adapter's)")

    def build(self, backbone, tokenizer, info, base_dir=None, preloaded=None) -> dict[str, nn.Module]:
        from dslbench.diffusion.dsl import DSLModules

        family = getattr(info, "family", "llada")
        if family not in ("llada", "mdlm"):
            raise ObjectiveError(
                f"--objective dsl needs a LLaDA-format or MDLM-format base checkpoint; got {family}"
            )
        self.family = family
        if self.lora_rank and family == "mdlm":
            raise ObjectiveError("--head-lora-rank is not available on an MDLM-format base (the DSL-LLaDA head "
                                 "adapter's layout names LLaDA's ff_out); use --freeze-head yes|no")
        if self.lora_rank:
            from dslbench.training.head_lora import install_head_lora

            try:
                install_head_lora(backbone, self.lora_rank, self.lora_alpha)
            except ValueError as err:
                raise ObjectiveError(f"--head-lora-rank: {err}") from None
        if preloaded and "dsl" in preloaded:  # continue training a DSL checkpoint: keep its modules
            dsl = preloaded["dsl"]
            dsl.noise_embed.weight.requires_grad_(False)
            self.noise_dim, self.noise_seed = int(dsl.noise_dim), int(dsl.noise_seed)
            self.beta_init = float(dsl.converter.beta.detach())
            self.resumed_from_dsl = True
            return {"dsl": dsl.float().train()}
        d_model = int(backbone.config.hidden_dim if family == "mdlm" else backbone.config.d_model)
        dsl = DSLModules(int(info.vocab_size), self.noise_dim, d_model, beta_init=self.beta_init, noise_seed=self.noise_seed)
        dsl.init_from_backbone(backbone.get_input_embeddings().weight.detach().float(), int(info.mask_id))
        if self.bias_init == "default":
            dsl.reset_linear_bias()
        with torch.no_grad():
            dsl.converter.beta.fill_(self.beta_init)
        dsl.noise_embed.weight.requires_grad_(False)
        return {"dsl": dsl.train()}

    def configure_trainable(self, module: AdaptModule) -> None:
        super().configure_trainable(module)
        dsl = module.extras["dsl"]
        for p in dsl.parameters():
            p.requires_grad_(False)
        for p in dsl.trainable_parameters():
            p.requires_grad_(True)
            if self.grad_scale != 1.0 and not getattr(p, "_dslbench_grad_scaled", False):
                # as the release: a hook on the gradient, so clipping sees the scaled norm
                p.register_hook(lambda grad, s=self.grad_scale: grad * s)
                p._dslbench_grad_scaled = True
        dsl.noise_embed.weight.requires_grad_(False)
        if self.lora_rank:
            head = module.backbone.get_output_embeddings()
            head.base.weight.requires_grad_(False)
            head.lora_A.requires_grad_(True)
            head.lora_B.requires_grad_(True)

    def loss(self, module: AdaptModule, batch: Batch, generator) -> LossOutput:
        from dslbench.diffusion.dsl import channel, sample_training_snr

        dsl = module.extras["dsl"]
        ids, resp = batch.input_ids, batch.response_mask.bool()
        # The positions that go through the channel: every real token (released) or the response.
        noised = batch.attention_mask.bool() if self.prompt == "noised" else resp
        B = ids.shape[0]
        R = max(1, int(noised.sum(dim=1).max()))
        snr_r = sample_training_snr(B, R, generator=generator, roar_prob=self.roar_prob,
                                    lognormal_per=self.lognormal_per)
        snr = place_response_values(snr_r, noised)  # [B, T], 0 elsewhere
        noised_ids = ids[noised]  # [N]
        z = channel(noised_ids[None], snr[noised][None], dsl.noise_embed.weight, generator=generator)[0]  # [N, d]
        # Clean embeddings stay in the graph (pad positions; the prompt with --dsl-prompt clean):
        # with a noised prompt the token embedding then gets a zero gradient, so AdamW still
        # steps (decays) it, as the release's DeepSpeed optimizer does.
        clean = module.embed(ids)
        with torch.autocast(device_type=clean.device.type, enabled=False):
            h = dsl.convert(z.float(), out_dtype=torch.float32)  # [N, D], float32 math
        inputs = clean.masked_scatter(noised[..., None], h.to(clean.dtype))
        logits = module.logits(inputs_embeds=inputs, attention_mask=batch.attention_mask)
        ce = F.cross_entropy(logits[resp].float(), ids[resp], reduction="none")  # float32
        loss = response_token_loss(ce, resp, self.loss_norm)
        return LossOutput(loss, batch.n_tokens, int(resp.sum()), {"beta": float(dsl.converter.beta.detach())})

    def save_final(self, module: AdaptModule, tokenizer, info, out_dir: Path, record: dict) -> Path:
        from dslbench.models.dsl_checkpoint import save_dsl_checkpoint

        dsl = module.extras["dsl"]
        cfg = {
            "objective": "dsl",
            "noise_dim": int(dsl.noise_dim),
            "noise_seed": int(self.noise_seed),
            "beta_init": float(self.beta_init),
            "beta_train": float(dsl.converter.beta.detach()),
            "recipe": record.get("recipe", {}),
            "steps": record.get("steps"),
            "adapt": {k: record[k] for k in ("base", "data", "seed") if k in record},
        }
        if self.lora_rank:  # the loader merges the adapter with this alpha (not stored in the tensors)
            cfg["ffout_lora_alpha"] = self.lora_alpha
        return save_dsl_checkpoint(module.backbone, dsl, tokenizer, out_dir, cfg)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "noise_dim": self.noise_dim, "beta_init": self.beta_init,
                "noise_seed": self.noise_seed, "roar_prob": self.roar_prob, "lognormal_per": self.lognormal_per,
                "dsl_prompt": self.prompt, "dsl_loss_norm": self.loss_norm, "converter_bias_init": self.bias_init,
                "converter_grad_scale": self.grad_scale, "head_lora_rank": self.lora_rank,
                "head_lora_alpha": self.lora_alpha if self.lora_rank else None,
                "continued_from_dsl_checkpoint": self.resumed_from_dsl,
                # after build, on an MDLM base (the final adapt_config.json): the open choices taken
                **({"mdlm_open_choices": list(MDLM_OPEN_CHOICES)} if self.family == "mdlm" else {})}
