"""``softmask``: soft-mask adaptation (DESIGN.md, section Soft-masking).

The masked-diffusion loss of the ``mdm`` objective (same forward process ``mdm_corrupt``, same
weighting ``mdm_loss``, same ``--mask-eps`` / ``--mdm-loss-weight`` options: this class *is* an
``MDMObjective``), trained on soft-masked inputs:

1. corrupt the batch exactly as ``mdm`` does (the same generator draws come first, so with
   ``--softmask-prob 0`` the loss is bit for bit the ``mdm`` loss);
2. draw whether soft-masking applies, with probability ``p_sm`` (``--softmask-prob``), **per
   micro-batch** by default (``--softmask-per batch``: one draw, the whole batch takes the
   two-pass route or the plain one) or per sequence (``--softmask-per sequence``: one draw per
   row; the first pass then runs on the selected rows only);
3. soft-masked rows: a first pass on the masked input **without gradient** (``torch.no_grad``:
   no graph is recorded, so nothing reaches the backbone through the first-pass logits), then
   the input embeddings of the masked positions are replaced by the blend of
   :func:`dslbench.diffusion.softmask.blend_inputs` (top-k of the first-pass logits, lambda from
   their entropy through the three learned scalars; differentiable in the scalars and in the
   embedding table), and the **second pass** on those inputs carries the ``mdm`` loss;
   other rows: one plain pass on the masked ids (the ``mdm`` step).

Trainable: the backbone as in ``mdm`` (output head trained unless ``--freeze-head yes``) and the
three scalars (:class:`SoftMaskParams`, stored unconstrained, saved in the resume state with the
model as ``extras.softmask.*``). The scalars get their own AdamW group: learning rate
``--softmask-lr`` (default 1e-2), no weight decay; the loop's warm-up factor applies to every group.
No parameter is decayed by default (``--weight-decay-params none``). The scalars always enter the
loss graph (a ``0 * sum(raw)`` term on plain batches), so data-parallel wrappers see the same used
parameters on every rank whichever route a rank draws.

The final checkpoint is the backbone in its evaluation layout plus ``softmask.safetensors`` /
``softmask_config.json`` (:func:`save_softmask`, with the training top-k), which the
``softmask_llada`` backend reads. A base checkpoint that already has ``softmask.safetensors``
starts from its scalars; ``--softmask-init-{scale,centre,steepness}`` override the initial values
(default: the release's scale 1e-6, centre -0.75, steepness 6.66). Note that with that default a
model whose predictions are near-uniform (entropy close to log V, e.g. a random tiny model) gets
a vanishing lambda: the scalars' gradients vanish and they barely move until the model is confident.

Against the released code (IBM's soft-masking repository, ``coding/train``: ``TransparencyHead``,
``dLLMTrainer`` and the five base configs of the Dream runs, read in a fork that keeps the code):

- blend, top-k softmax weights and the lambda formula: as released (``diffusion/softmask.py``);
- scalars: ``sigmoid`` / ``-softplus - 1e-6`` / ``softplus + 1e-6``; initial scale from
  ``logit(0, eps=1e-6)`` = 1e-6, centre -0.75, steepness 6.66 (the configs; the dataclass
  default is 10/1.5); k = 1 for Dream (the configs), 3 for the 169M model;
- share of soft-masked batches: one draw per batch (the trainer's ``_do_softmasking``), with
  ``softmasking_prob`` 0.5 in every released Dream config (the dataclass default, 0.8, is
  overridden); the 169M runs (``language/``, k = 3) use 0.8 (``--softmask-prob 0.8``);
- optimiser: the trainer's own AdamW, base group at the run's learning rate, the scalars at 1e-2,
  weight decay 0 on both groups (the 169M runs: scalars at 0.01 in their scripts, over a
  config default of 1e-3; weight decay 0).

Not taken over (the loop's recipe, not the objective's; say so when comparing): the release
draws one masking time per batch ``t ~ U[0.2, 0.8]`` and weights the token-mean cross-entropy
by ``1/t`` (here the ``mdm`` loss: one ``t ~ U(0, 1)`` per row, LLaDA's per-row normalisation);
it fine-tunes DoRA adapters (r 16 on q/k/v/o) rather than the full backbone, with a cosine
schedule and a gradient clip of 7. Ambiguous in the code: the Dream trainer's dataclass
defaults (p_sm 0.8, k 3, steepness 10/1.5) differ from the configs it was run with (0.5, 1,
6.66); the configs are taken as the released values.

On an MDLM-format base (``algo: mdlm_sm`` of IBM's ``language/`` code, read in the fork
ishnbl/soft-masked-diffusion-language-models): MDLM's own forward process and loss
(:mod:`dslbench.training.mdlm_loss`, via the ``mdm`` objective); the first pass's logits go
through SUBS (the [MASK] logit at -1e6) before the top-k and the entropy, as the release feeds
its ``log_x_theta`` to the ``TransparencyHead``; k = 3 (``mixinputs_k``); the two-pass step runs
only when the batch-mean time lies in ``[sm_t_min, sm_t_max] = [0.2, 0.8]``
(``--softmask-t-band``, the release's ``optim`` defaults) and the gate draw passes with
``sm_prob`` 0.5. Not taken over: the fork's training-time rescaling of the centre by
``current_nll_ema / initial_nll`` (it is off on the release's first step, where the two agree;
afterwards the centre here is the learned scalar alone), its ``slerp_sm`` / reliability variants
(off in ``mdlm_sm.yaml``) and its rank-identical gate generator seeded by the global step (here the
gate is a draw of the step's generator, also identical on every rank).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from dslbench.diffusion.softmask import (
    INIT_CENTRE,
    INIT_SCALE,
    INIT_STEEPNESS,
    SoftMaskParams,
    blend_inputs,
    read_softmask,
    save_softmask,
)
from dslbench.training.data import Batch
from dslbench.training.mdlm_loss import subs_logits
from dslbench.training.mdm_objective import MDMObjective, is_mdlm
from dslbench.training.objective import AdaptModule, LossOutput, ObjectiveError, draw_uniform, save_backbone

SOFTMASK_PROB = 0.5  # softmasking_prob of every released config
SOFTMASK_LR = 1e-2  # the released trainer's learning rate for the scalars
SOFTMASK_K = 1
MDLM_SOFTMASK_K = 3  # mdlm_sm.yaml: mixinputs_k
MDLM_T_BAND = (0.2, 0.8)  # the language/ config's optim.sm_t_min / sm_t_max
K_AUTO = "auto (1; 3 on an MDLM base)"
BAND_AUTO = "auto (0.2-0.8 on an MDLM base, else none)"
SOFTMASK_PER = ("batch", "sequence")
EXTRA_NAME = "softmask"


def _opt(options: dict, key: str, default):
    value = options.get(key)
    return default if value is None else value


class SoftMaskObjective(MDMObjective):
    name = "softmask"
    freeze_head_default = False
    weight_decay_default = "none"  # the released trainer decays no parameter

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        try:
            self.k_auto = self.options.get("softmask_k") is None
            self.k = int(_opt(self.options, "softmask_k", SOFTMASK_K))
            self.prob = float(_opt(self.options, "softmask_prob", SOFTMASK_PROB))
            self.lr = float(_opt(self.options, "softmask_lr", SOFTMASK_LR))
        except (TypeError, ValueError) as err:
            raise ObjectiveError(f"--softmask-k / --softmask-prob / --softmask-lr: {err}") from None
        self.per = _opt(self.options, "softmask_per", "batch")
        self.band = parse_t_band(_opt(self.options, "softmask_t_band", "auto"))
        if self.k < 1:
            raise ObjectiveError(f"--softmask-k {self.k} must be >= 1 (1 for Dream, 3 for the 169M model)")
        if not 0.0 <= self.prob <= 1.0:
            raise ObjectiveError(f"--softmask-prob {self.prob} must lie in [0, 1] (released: 0.5)")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ObjectiveError(f"--softmask-lr {self.lr} must be > 0")
        if self.per not in SOFTMASK_PER:
            raise ObjectiveError(f"--softmask-per {self.per!r} is not valid; allowed: {', '.join(SOFTMASK_PER)}")
        self.init = {}
        for key in ("scale", "centre", "steepness"):
            value = self.options.get(f"softmask_init_{key}")
            if value is not None:
                self.init[key] = float(value)
        if "scale" in self.init and not 0.0 < self.init["scale"] < 1.0:
            raise ObjectiveError(f"--softmask-init-scale {self.init['scale']} must lie in (0, 1)")
        try:
            SoftMaskParams(**self.init)
        except ValueError as err:
            raise ObjectiveError(f"--softmask-init-*: {err}") from None
        self.continued_from_softmask = False
        self.built = False

    @classmethod
    def add_arguments(cls, parser) -> None:
        # The mdm options (--mask-eps, --mdm-loss-weight) apply too; MDMObjective adds them.
        g = parser.add_argument_group("softmask objective (also uses the mdm options)")
        g.add_argument("--softmask-k", type=int, default=None,
                       help="top-k predictions blended into a masked position (default: 1 on LLaDA / Dream bases, "
                       "as the Dream configs; 3 on an MDLM base, as mdlm_sm.yaml)")
        g.add_argument("--softmask-t-band", default="auto",
                       help="LO,HI: run the two-pass step only when the batch-mean time lies in [LO, HI] (auto: "
                       "0.2,0.8 on an MDLM base, the language/ config's sm_t_min / sm_t_max; no band on LLaDA / Dream)")
        g.add_argument("--softmask-prob", type=float, default=SOFTMASK_PROB,
                       help="p_sm: probability of the two-pass soft-masked step (default 0.5, the released Dream runs; "
                       "the released 169M runs use 0.8)")
        g.add_argument("--softmask-per", default="batch",
                       help="draw p_sm per micro-batch (batch, default, as released) or per sequence (sequence, a departure)")
        g.add_argument("--softmask-lr", type=float, default=SOFTMASK_LR,
                       help="learning rate of the three soft-mask scalars (default 1e-2, as released; no weight decay)")
        g.add_argument("--softmask-init-scale", type=float, default=None,
                       help=f"initial scale in (0, 1) (default: the base checkpoint's, else {INIT_SCALE})")
        g.add_argument("--softmask-init-centre", type=float, default=None,
                       help=f"initial entropy centre < 0 (default: the base checkpoint's, else {INIT_CENTRE})")
        g.add_argument("--softmask-init-steepness", type=float, default=None,
                       help=f"initial steepness > 0 (default: the base checkpoint's, else {INIT_STEEPNESS})")

    # ---- set-up
    def build(self, backbone, tokenizer, info, base_dir: Path | None = None, preloaded=None):
        mdlm = getattr(info, "family", "") == "mdlm"
        self.built = True
        if self.k_auto and mdlm:
            self.k = MDLM_SOFTMASK_K
        if self.band is None and mdlm:
            self.band = MDLM_T_BAND
        params = None
        if preloaded and isinstance(preloaded.get(EXTRA_NAME), SoftMaskParams):
            params = preloaded[EXTRA_NAME]
        elif base_dir is not None:
            ckpt = read_softmask(base_dir)
            params = ckpt.params if ckpt is not None else None
        self.continued_from_softmask = params is not None
        if params is None:
            params = SoftMaskParams(**self.init)
        elif self.init:  # explicit --softmask-init-* values win over the checkpoint's
            params = params.with_overrides(**self.init)
        return {EXTRA_NAME: params.float().train()}

    def configure_trainable(self, module: AdaptModule) -> None:
        super().configure_trainable(module)
        for p in module.extras[EXTRA_NAME].parameters():
            p.requires_grad_(True)

    def param_groups(self, module: AdaptModule, lr: float, weight_decay: float) -> list[dict]:
        """The default groups without the scalars, then one group for the scalars
        (``--softmask-lr``, no weight decay)."""
        scalars = [p for p in module.extras[EXTRA_NAME].parameters() if p.requires_grad]
        ids = {id(p) for p in scalars}
        groups = []
        for g in super().param_groups(module, lr, weight_decay):
            rest = [p for p in g["params"] if id(p) not in ids]
            if rest:
                groups.append({**g, "params": rest})
        if scalars:
            groups.append({"params": scalars, "weight_decay": 0.0, "lr": self.lr, "name": "softmask"})
        return groups

    # ---- training
    def loss(self, module: AdaptModule, batch: Batch, generator) -> LossOutput:
        ids, am = batch.input_ids, batch.attention_mask
        noisy, masked, level = self.corrupt(module, batch, generator)
        params: SoftMaskParams = module.extras[EXTRA_NAME]
        B = ids.shape[0]
        if self.per == "batch":
            rows = (draw_uniform((1,), generator, ids.device) < self.prob).expand(B)
        else:
            rows = draw_uniform((B,), generator, ids.device) < self.prob
        if self.band is not None:  # the release's time band, on the batch-mean time
            lo, hi = self.band
            rows = rows & bool(lo <= float(level.float().mean()) <= hi)
        blend_at = masked & rows[:, None]
        n_rows = int(rows.sum())
        if bool(blend_at.any()):
            sel = rows.nonzero(as_tuple=True)[0]
            all_rows = n_rows == B
            sub_ids = noisy if all_rows else noisy[sel]
            sub_am = am if all_rows else am[sel]
            with torch.no_grad():  # first pass: no graph, so no gradient through its logits
                first = module.logits(input_ids=sub_ids, attention_mask=sub_am)
                if is_mdlm(module):  # the release blends from SUBS log-probabilities: no [MASK] guess
                    first = subs_logits(first, module.mask_id)
            sub_in = blend_inputs(module, sub_ids, first, blend_at if all_rows else blend_at[sel], params, self.k)
            del first
            inputs = sub_in if all_rows else module.embed(noisy).index_put((sel,), sub_in)
            logits = module.logits(inputs_embeds=inputs, attention_mask=am)
            passes = 2
        else:
            logits = module.logits(input_ids=noisy, attention_mask=am)
            passes = 1
        loss = self.masked_loss(module, logits, batch, masked, level)
        # Keep the scalars in the graph on every route (zero contribution): DDP needs the same
        # used parameters on every rank.
        loss = loss + 0.0 * sum(q.sum() for q in params.parameters())
        values = params.values()
        n_resp = max(1, int(batch.response_mask.sum()))
        metrics = {
            "mask_rate": float(masked.sum()) / n_resp,
            "softmask_rows": n_rows / max(1, B),
            "softmask_passes": float(passes),
            "softmask_scale": values["scale"],
            "softmask_centre": values["centre"],
            "softmask_steepness": values["steepness"],
        }
        return LossOutput(loss, batch.n_tokens, int(masked.sum()), metrics)

    # ---- output
    def save_final(self, module: AdaptModule, tokenizer, info, out_dir: Path, record: dict) -> Path:
        path = save_backbone(module.backbone, tokenizer, info, out_dir, record.get("base_dir"))
        save_softmask(module.extras[EXTRA_NAME], out_dir, self.k)
        return path

    def config(self) -> dict[str, Any]:
        # before build (the run record) an automatic k / band is not decided yet: say so
        return {**super().config(), "softmask_k": self.k if self.built or not self.k_auto else K_AUTO,
                "softmask_t_band": list(self.band) if self.band else (None if self.built else BAND_AUTO), "softmask_prob": self.prob, "softmask_per": self.per,
                "softmask_lr": self.lr, "continued_from_softmask_checkpoint": self.continued_from_softmask,
                "softmask_init": {**SoftMaskParams().values(), **self.init} if not self.continued_from_softmask
                else "base checkpoint" + (f" with {self.init}" if self.init else ""),
                "two_pass": "first pass under no_grad on the masked input; second pass on blended inputs carries the mdm loss"}


def parse_t_band(text) -> tuple[float, float] | None:
    """``auto`` -> None (decided by the base's family); ``LO,HI`` with 0 <= LO <= HI <= 1."""
    if text in (None, "auto"):
        return None
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = str(text).split(",")
    try:
        lo, hi = (float(x) for x in parts)
    except (TypeError, ValueError):
        raise ObjectiveError(f"--softmask-t-band {text!r} is not valid; allowed: auto or LO,HI with "
                             "0 <= LO <= HI <= 1") from None
    if not 0.0 <= lo <= hi <= 1.0:
        raise ObjectiveError(f"--softmask-t-band {text!r} is not valid; allowed: auto or LO,HI with 0 <= LO <= HI <= 1")
    return lo, hi


__all__ = ["SoftMaskObjective", "parse_t_band", "SOFTMASK_PROB", "SOFTMASK_LR", "SOFTMASK_K", "SOFTMASK_PER"]
