"""The objective interface: what is trained, how a micro-batch becomes a loss, how the result is saved.

An objective is a small class registered in :data:`dslbench.training.objectives.OBJECTIVES`
(``register_objective`` adds one; the soft-masking issue adds ``softmask`` this way). The training loop
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

Weight decay (``--weight-decay-params``): ``released`` is the rule of the released HF Trainer
(transformers 4.57.1, the version the release pins): decay on every trainable parameter except
those inside an ``nn.LayerNorm`` or whose name contains ``bias``, ``layernorm``, ``rmsnorm`` or a
``norm`` / ``_norm`` component (LLaDA: ``attn_norm`` / ``ff_norm`` and the converter's two
biases are not decayed; ``ln_f``, ``wte`` and the converter's beta are). ``matrices``: decay on
tensors with two or more dimensions only. ``none``: no decay (the soft-masking release).
Defaults: ``released`` for dsl, ``matrices`` for mdm, ``none`` for softmask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dslbench.diffusion import rng
from dslbench.training.data import Batch

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
        # MDLM's substitution parameterization: its mask is never a prediction (logit -inf), in
        # training as in the released sampler
        self.never_predict = self.mask_id if getattr(info, "family", "") == "mdlm" else None

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
        if self.never_predict is not None:
            column = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
            column[self.never_predict] = True
            logits = logits.masked_fill(column, float("-inf"))
        return logits

    def forward(self, input_ids, attention_mask, response_mask, generator: torch.Generator | None = None) -> LossOutput:
        return self.objective.loss(self, Batch(input_ids, attention_mask, response_mask), generator)


def draw_uniform(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Uniform draws made on the generator's device, then moved to ``device``."""
    return rng.rand(shape, generator, device=device)


def head_parameters(backbone: nn.Module) -> list[nn.Parameter]:
    """The output head's parameters (empty when the head is tied to the input embedding)."""
    get = getattr(backbone, "get_output_embeddings", None)
    head = get() if get is not None else None
    if head is None:  # MDLM's DiT: its unembedding is output_layer.linear (the analogue of LLaDA's ff_out)
        head = getattr(getattr(getattr(backbone, "backbone", None), "output_layer", None), "linear", None)
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
        """Default: the backbone in its own evaluation layout (LLaDA, Dream or MDLM)."""
        return save_backbone(module.backbone, tokenizer, info, out_dir, record.get("base_dir"))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "freeze_head": self.freeze_head, "weight_decay_params": self.weight_decay_rule}


def save_backbone(backbone: nn.Module, tokenizer, info, out_dir: Path, base_dir: str | None = None) -> Path:
    """Write the backbone as an evaluation checkpoint (atomic) in the layout of its family."""
    if getattr(info, "family", "llada") == "mdlm":  # the released mdlm-owt layout
        from dslbench.models.mdlm_checkpoint import save_mdlm_checkpoint

        return save_mdlm_checkpoint(backbone, tokenizer, out_dir)
    if getattr(info, "family", "llada") == "dream":
        import json

        from dslbench.models.dream import save_dream_checkpoint

        if base_dir is None:
            raise ObjectiveError("saving a Dream-format model needs the base checkpoint's config.json")
        raw = json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8"))
        return save_dream_checkpoint(backbone, raw, tokenizer, out_dir)
    from dslbench.models.tiny import save_checkpoint

    return save_checkpoint(backbone, tokenizer, out_dir)
