"""``softmask_llada``: masked-diffusion decoding with soft-masked inputs.

Same contract as ``mdm_llada`` (all of its sampler args, per-request budgets, per-sample
records, repair mode), plus ``k`` (top-k of the blend) and overrides of the three learned
scalars. The scalars come from the checkpoint's ``softmask.safetensors`` when it has one, else
from their initial values (scale ~ 0: an unadapted model decodes almost like ``mdm_llada``); a
model arg given explicitly wins over both.
"""

from __future__ import annotations

import logging

import torch
from lm_eval.api.registry import register_model

from dslbench.diffusion.mdlm_sampler import SOFTMASK_BAND
from dslbench.diffusion.softmask import SoftMaskParams, read_softmask, softmask_embeds_fn
from dslbench.diffusion.softmask_mdlm import released_blend_fn
from dslbench.harness.args import AT_LEAST_1, POSITIVE, UNIT, Arg, Range
from dslbench.harness.base import SampleResult
from dslbench.harness.mdm_backend import MDM_ARGS, MDMLLaDA

log = logging.getLogger(__name__)

SOFTMASK_ARGS: dict[str, Arg] = {
    **MDM_ARGS,
    "k": Arg(None, int, help="top-k predictions blended into a masked position (default: the checkpoint's k, else 1)", valid=AT_LEAST_1),
    "scale": Arg(None, float, help="soft-mask scale in [0, 1) (default: from the checkpoint, else the initial value)", valid=Range(0, 1, high_open=True)),
    "centre": Arg(None, float, help="soft-mask entropy centre < 0 (default: from the checkpoint, else -0.75)", valid=Range(high=0, high_open=True)),
    "steepness": Arg(None, float, help="soft-mask steepness > 0 (default: from the checkpoint, else 6.66)", valid=POSITIVE),
    "sm_t_min": Arg(SOFTMASK_BAND[0], float, valid=UNIT, help=(
        "sampler=ddpm_cache (MDLM): feedback only at times t >= sm_t_min, as IBM's MDLM_SM (language/ config optim.sm_t_min)")),
    "sm_t_max": Arg(SOFTMASK_BAND[1], float, valid=UNIT, help=(
        "sampler=ddpm_cache (MDLM): feedback only at times t <= sm_t_max (optim.sm_t_max)")),
}


@register_model("softmask_llada", "softmask")
class SoftMaskLLaDA(MDMLLaDA):
    NAME = "softmask_llada"
    SAMPLER_ARGS = SOFTMASK_ARGS

    def _load(self, pretrained: str) -> None:
        super()._load(pretrained)
        ckpt = read_softmask(self.info.path) if self.info.path else None
        self.softmask_source = "checkpoint" if ckpt is not None else "init"
        self.checkpoint_params = ckpt.params if ckpt is not None else SoftMaskParams()
        self.checkpoint_k = ckpt.k if ckpt is not None else None
        log.info("%s: soft-mask scalars from %s: %s", self.NAME, self.softmask_source, self.checkpoint_params.values())
        self._params_cache: dict[tuple, SoftMaskParams] = {}

    def softmask_params(self, opts: dict) -> tuple[SoftMaskParams, int]:
        """The scalars and top-k for one request (checkpoint / init values with overrides); the
        default k is the published one: 3 at the 169M MDLM scale, 1 on the large models."""
        default_k = 3 if getattr(self.info, "family", "") == "mdlm" else 1
        k = opts["k"] if opts["k"] is not None else (self.checkpoint_k or default_k)
        if k < 1:
            raise ValueError(f"{self.NAME}: k={k} must be >= 1")
        key = (opts["scale"], opts["centre"], opts["steepness"])
        if key not in self._params_cache:
            try:
                params = self.checkpoint_params.with_overrides(*key)
            except ValueError as err:
                raise ValueError(f"{self.NAME}: {err}") from None
            self._params_cache[key] = params.to(self.device).requires_grad_(False)
        return self._params_cache[key], k

    def _sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, opts: dict, generator: torch.Generator) -> SampleResult:
        params, k = self.softmask_params(opts)
        if self._sampler(opts) == "ddpm_cache":  # MDLM_SM as released: its arithmetic, its time band
            if opts["sm_t_min"] > opts["sm_t_max"]:
                raise ValueError(f"{self.NAME}: sm_t_min={opts['sm_t_min']} must be <= sm_t_max={opts['sm_t_max']}")
            extra = {"input_embeds_fn": released_blend_fn(self.denoiser, params, k),
                     "softmask_band": (opts["sm_t_min"], opts["sm_t_max"])}
        else:
            extra = {"input_embeds_fn": softmask_embeds_fn(self.denoiser, params, k)}
        result = self._run_mdm(prompt_ids, prompt_mask, opts, generator, **extra)
        values = params.values()
        result.extra.update({
            "softmask_k": k,
            "softmask_scale": values["scale"],
            "softmask_centre": values["centre"],
            "softmask_steepness": values["steepness"],
            "softmask_source": self.softmask_source,
        })
        return result
