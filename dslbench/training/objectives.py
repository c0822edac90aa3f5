"""Adaptation objectives: what is trained, how a micro-batch becomes a loss, how the result is saved.

An objective is a small class registered in :data:`OBJECTIVES` (``register_objective`` adds
one; the soft-masking issue adds ``softmask`` this way). The training loop
(:mod:`dslbench.training.loop`) knows nothing else about it. The hooks:

- ``add_arguments(parser)`` (classmethod): objective-specific CLI options;
- ``build(backbone, tokenizer, info, base_dir)`` -> extra modules (a dict of ``nn.Module``) that
  train next to the backbone (DSL: the noise embedding and the converter; soft-mask: its three
  scalars). They live in :class:`AdaptModule` with the backbone, so DDP / DeepSpeed / FSDP, the
  optimiser and the resume state see them without special cases;
- ``configure_trainable(module)``: freezing policy (``requires_grad``);
- ``param_groups(module, lr, weight_decay)``: optimiser groups (which parameters decay:
  ``--weight-decay-params``, see below; an objective may add groups with their own learning rate);
- ``loss(module, batch, generator)`` -> :class:`LossOutput`; all randomness from ``generator``;
- ``save_final(module, tokenizer, info, out_dir, record)``: the evaluation-layout checkpoint;
- ``config()``: what ``adapt_config.json`` records about the objective.

Objectives shipped here:

``mdm``: LLaDA's SFT masked-diffusion loss (also the same-compute control "MDM-CPT"). Per row
``t ~ U(0, 1)``, ``p = (1 - eps) t + eps``; each *response* position is masked independently
with probability ``p`` (prompt and pad positions never); the loss is
``(1/B) sum_b sum_{i masked} CE_bi / (p_b * len_b)`` with ``len_b`` the row's response length
(EOS fill included). ``--mdm-loss-weight none`` drops the ``1/p`` factor (a plain mean over the
masked tokens per row, still length-normalised) — not the published semantics, offered because
it learns faster on tiny models.

``dsl``: Discrete Stochastic Localization (DESIGN.md, section DSL), by default the released
DSL-LLaDA training step (``dsl_llada/train/llada_cpt_dsl.py`` on top of LLaDA-XDLM's
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

Weight decay (``--weight-decay-params``): ``released`` is the rule of the released HF Trainer
(transformers 4.57.1, the version the release pins): decay on every trainable parameter except
those inside an ``nn.LayerNorm`` or whose name contains ``bias``, ``layernorm``, ``rmsnorm`` or a
``norm`` / ``_norm`` component (LLaDA: ``attn_norm`` / ``ff_norm`` and the converter's two
biases are not decayed; ``ln_f``, ``wte`` and the converter's beta are). ``matrices``: decay on
tensors with two or more dimensions only. ``none``: no decay (the soft-masking release).
Defaults: ``released`` for dsl, ``matrices`` for mdm, ``none`` for softmask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dslbench.training.data import Batch

MDM_EPS = 1e-3  # LLaDA's forward process: p = (1 - eps) t + eps
FREEZE_HEAD_CHOICES = ("auto", "yes", "no")
WEIGHT_DECAY_RULES = ("released", "matrices", "none")
# Names the released HF Trainer keeps out of weight decay (transformers 4.57.1,
# ``Trainer.get_decay_parameter_names``), matched against the lower-cased parameter name.
TRAINER_NO_DECAY_NAMES = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")


class ObjectiveError(ValueError):
    """An objective cannot run with these arguments or on this checkpoint."""


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, float32, carries the graph
    n_tokens: int  # non-pad tokens the forward saw
    n_loss_tokens: int  # positions that entered the loss
    metrics: dict[str, float] = field(default_factory=dict)


class AdaptModule(nn.Module):
    """The backbone plus the objective's extra modules, as one module for accelerate.

    ``forward(input_ids, attention_mask, response_mask, generator)`` runs the objective's loss, so
    a DDP / FSDP / DeepSpeed wrapper around this module sees every trainable parameter used in
    its own forward. State-dict keys: ``backbone.*`` and ``extras.<name>.*``.
    """

    def __init__(self, backbone: nn.Module, extras: dict[str, nn.Module], objective: "Objective", info) -> None:
        super().__init__()
        self.backbone = backbone
        self.extras = nn.ModuleDict(extras)
        self.objective = objective  # a plain object (no parameters of its own)
        self.info = info
        self.vocab_size = int(info.vocab_size)
        self.mask_id = None if info.mask_id is None else int(info.mask_id)  # uniform-state models have none
        self.shift_logits = bool(getattr(info, "shift_logits", False) or getattr(info, "family", "") == "dream")

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.backbone.get_input_embeddings()(ids)

    def logits(self, input_ids=None, inputs_embeds=None, attention_mask=None) -> torch.Tensor:
        """``[B, T, vocab]`` with position i predicting token i (Dream's shift undone)."""
        if attention_mask is not None and bool(attention_mask.bool().all()):
            attention_mask = None
        out = self.backbone(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        logits = (out.logits if hasattr(out, "logits") else out)[..., : self.vocab_size]
        if self.shift_logits:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits

    def forward(self, input_ids, attention_mask, response_mask, generator: torch.Generator | None = None) -> LossOutput:
        return self.objective.loss(self, Batch(input_ids, attention_mask, response_mask), generator)


def _rand(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def head_parameters(backbone: nn.Module) -> list[nn.Parameter]:
    """The output head's parameters (empty when the head is tied to the input embedding)."""
    get = getattr(backbone, "get_output_embeddings", None)
    head = get() if get is not None else None
    if head is None:
        return []
    tied = backbone.get_input_embeddings()
    if tied is not None and getattr(head, "weight", None) is tied.weight:
        return []
    return list(head.parameters())


def decay_parameter_names(module: nn.Module, rule: str) -> set[str]:
    """Names of ``module``'s parameters that get weight decay under ``rule`` (see the module
    docstring); ``released`` goes through transformers' own ``get_parameter_names``."""
    if rule == "released":
        from transformers.trainer_pt_utils import get_parameter_names

        return set(get_parameter_names(module, [nn.LayerNorm], list(TRAINER_NO_DECAY_NAMES)))
    if rule == "matrices":
        return {n for n, p in module.named_parameters() if p.dim() >= 2}
    if rule == "none":
        return set()
    raise ObjectiveError(f"--weight-decay-params {rule!r} is not valid; allowed: auto, {', '.join(WEIGHT_DECAY_RULES)}")


class Objective:
    """Base class; see the module docstring for the hooks."""

    name = ""
    freeze_head_default = False
    weight_decay_default = "matrices"

    def __init__(self, **options: Any) -> None:
        self.options = dict(options)
        freeze = self.options.get("freeze_head", "auto")
        if freeze not in FREEZE_HEAD_CHOICES:
            raise ObjectiveError(f"--freeze-head {freeze!r} is not valid; allowed: {', '.join(FREEZE_HEAD_CHOICES)}")
        self.freeze_head = self.freeze_head_default if freeze == "auto" else freeze == "yes"
        rule = self.options.get("weight_decay_params") or "auto"
        if rule != "auto" and rule not in WEIGHT_DECAY_RULES:
            raise ObjectiveError(
                f"--weight-decay-params {rule!r} is not valid; allowed: auto, {', '.join(WEIGHT_DECAY_RULES)}"
            )
        self.weight_decay_rule = self.weight_decay_default if rule == "auto" else rule

    @classmethod
    def add_arguments(cls, parser) -> None:  # pragma: no cover - default: none
        return None

    # ---- set-up
    def build(self, backbone: nn.Module, tokenizer, info, base_dir: Path | None = None,
              preloaded: dict[str, nn.Module] | None = None) -> dict[str, nn.Module]:
        """Extra modules to train. ``preloaded`` holds modules found in the base checkpoint
        itself (a DSL checkpoint's ``dsl``), for objectives that continue them."""
        return {}

    def configure_trainable(self, module: AdaptModule) -> None:
        for p in module.backbone.parameters():
            p.requires_grad_(True)
        if self.freeze_head:
            for p in head_parameters(module.backbone):
                p.requires_grad_(False)

    def param_groups(self, module: AdaptModule, lr: float, weight_decay: float) -> list[dict]:
        """AdamW groups: ``weight_decay`` on the parameters ``--weight-decay-params`` names, 0 on
        the rest (trainable parameters only)."""
        names = decay_parameter_names(module, self.weight_decay_rule)
        decay, no_decay = [], []
        for n, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (decay if n in names else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay, "lr": lr, "name": "decay"},
                  {"params": no_decay, "weight_decay": 0.0, "lr": lr, "name": "no_decay"}]
        return [g for g in groups if g["params"]]

    # ---- training
    def loss(self, module: AdaptModule, batch: Batch, generator: torch.Generator | None) -> LossOutput:
        raise NotImplementedError

    # ---- output
    def save_final(self, module: AdaptModule, tokenizer, info, out_dir: Path, record: dict) -> Path:
        """Default: the backbone in its own evaluation layout (LLaDA or Dream)."""
        return save_backbone(module.backbone, tokenizer, info, out_dir, record.get("base_dir"))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "freeze_head": self.freeze_head, "weight_decay_params": self.weight_decay_rule}


def save_backbone(backbone: nn.Module, tokenizer, info, out_dir: Path, base_dir: str | None = None) -> Path:
    """Write the backbone as an evaluation checkpoint (atomic) in the layout of its family."""
    if getattr(info, "family", "llada") == "dream":
        import json

        from dslbench.models.dream import save_dream_checkpoint

        if base_dir is None:
            raise ObjectiveError("saving a Dream-format model needs the base checkpoint's config.json")
        raw = json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8"))
        return save_dream_checkpoint(backbone, raw, tokenizer, out_dir)
    from dslbench.models.tiny import save_checkpoint

    return save_checkpoint(backbone, tokenizer, out_dir)


# ---------------------------------------------------------------------------------------------
# Masked diffusion (LLaDA SFT semantics)

MDM_LOSS_WEIGHTS = ("inv_p", "none")


def mdm_corrupt(
    input_ids: torch.Tensor,
    response_mask: torch.Tensor,
    mask_id: int,
    generator: torch.Generator | None = None,
    eps: float = MDM_EPS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(noisy_ids, masked [B,T] bool, p [B])``: each response position masked with its row's p."""
    B, T = input_ids.shape
    device = input_ids.device
    t = _rand((B,), generator, device)
    p = (1.0 - eps) * t + eps
    u = _rand((B, T), generator, device)
    masked = (u < p[:, None]) & response_mask.bool()
    noisy = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    return noisy, masked, p


def mdm_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    p: torch.Tensor,
    response_mask: torch.Tensor,
    weighting: str = "inv_p",
) -> torch.Tensor:
    """``(1/B) sum_b sum_{i masked} CE_bi * w_b / len_b`` in float32, ``w_b = 1/p_b`` (LLaDA)
    or 1 (``weighting="none"``); ``len_b`` = the row's number of response positions."""
    B = input_ids.shape[0]
    lengths = response_mask.sum(dim=1).clamp(min=1).float()  # [B]
    if weighting == "inv_p":
        row_w = 1.0 / (p.float() * lengths)
    elif weighting == "none":
        row_w = 1.0 / lengths
    else:
        raise ObjectiveError(f"--mdm-loss-weight {weighting!r} is not valid; allowed: {', '.join(MDM_LOSS_WEIGHTS)}")
    if not bool(masked.any()):
        return logits.float().sum() * 0.0  # keeps the graph (every rank must run backward)
    ce = F.cross_entropy(logits[masked].float(), input_ids[masked], reduction="none")
    w = row_w[:, None].expand_as(masked)[masked]
    return (ce * w).sum() / B


class MDMObjective(Objective):
    name = "mdm"
    freeze_head_default = False

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.eps = float(self.options.get("mask_eps", MDM_EPS))
        if not 0.0 <= self.eps < 1.0:
            raise ObjectiveError(f"--mask-eps {self.eps} must lie in [0, 1)")
        self.weighting = self.options.get("mdm_loss_weight", "inv_p")
        if self.weighting not in MDM_LOSS_WEIGHTS:
            raise ObjectiveError(
                f"--mdm-loss-weight {self.weighting!r} is not valid; allowed: {', '.join(MDM_LOSS_WEIGHTS)}"
            )

    @classmethod
    def add_arguments(cls, parser) -> None:
        g = parser.add_argument_group("mdm objective")
        g.add_argument("--mask-eps", type=float, default=MDM_EPS, help="p = (1-eps) t + eps (default 1e-3, LLaDA)")
        g.add_argument("--mdm-loss-weight", default="inv_p", help="inv_p (LLaDA: CE / p) or none (plain mean)")

    def loss(self, module: AdaptModule, batch: Batch, generator) -> LossOutput:
        noisy, masked, p = mdm_corrupt(batch.input_ids, batch.response_mask, module.mask_id, generator, self.eps)
        logits = module.logits(input_ids=noisy, attention_mask=batch.attention_mask)
        loss = mdm_loss(logits, batch.input_ids, masked, p, batch.response_mask, self.weighting)
        return LossOutput(loss, batch.n_tokens, int(masked.sum()), {"mask_rate": float(masked.sum()) / max(1, int(batch.response_mask.sum()))})

    def config(self) -> dict[str, Any]:
        return {**super().config(), "mask_eps": self.eps, "loss_weight": self.weighting,
                "normalisation": "per-row response length (LLaDA SFT)"}


# ---------------------------------------------------------------------------------------------
# DSL

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

    @classmethod
    def add_arguments(cls, parser) -> None:
        g = parser.add_argument_group("dsl objective (defaults: the released DSL-LLaDA training)")
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

        if getattr(info, "family", "llada") != "llada":
            raise ObjectiveError(
                f"--objective dsl needs a LLaDA-format base checkpoint (DSL checkpoints are LLaDA-format); got {info.family}"
            )
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
        d_model = int(backbone.config.d_model)
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
                "continued_from_dsl_checkpoint": self.resumed_from_dsl}


# ---------------------------------------------------------------------------------------------
# Registry

# Name -> class, or a lazy "module:Class" string (imported only when that objective runs). The
# soft-masking objective is added here (or through register_objective) by its own module.
OBJECTIVES: dict[str, type[Objective] | str] = {
    "dsl": DSLObjective,
    "mdm": MDMObjective,
    "softmask": "dslbench.training.softmask_objective:SoftMaskObjective",
    "uniform": "dslbench.training.uniform_objective:UniformObjective",
}


def register_objective(name: str, cls: type[Objective] | str) -> None:
    """Add an objective (a class, or a lazy ``"module:Class"`` string)."""
    OBJECTIVES[name] = cls


def objective_class(name: str) -> type[Objective]:
    if name not in OBJECTIVES:
        raise ObjectiveError(f"--objective {name!r} is not valid; allowed: {', '.join(sorted(OBJECTIVES))}")
    target = OBJECTIVES[name]
    if isinstance(target, str):
        import importlib

        module_name, cls_name = target.split(":")
        target = getattr(importlib.import_module(module_name), cls_name)
        OBJECTIVES[name] = target
    return target


def make_objective(name: str, **options: Any) -> Objective:
    return objective_class(name)(**options)

__all__ = [
    "AdaptModule", "LossOutput", "Objective", "MDMObjective", "DSLObjective", "OBJECTIVES", "ObjectiveError",
    "register_objective", "objective_class", "make_objective", "mdm_corrupt", "mdm_loss", "head_parameters",
    "place_response_values", "response_token_loss", "decay_parameter_names", "save_backbone", "MDM_EPS",
]
