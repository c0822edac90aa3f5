"""``dsl_llada``: DSL-LLaDA decoding by stochastic localization (continuous denoising in the
noise-embedding space; every response position evolves jointly, hard tokens only at the end).

Loads a checkpoint written by :func:`dslbench.models.dsl_checkpoint.save_dsl_checkpoint` (or a
published DSL-LLaDA release directory). Model args on top of the common ones:

- ``nfe`` (16): hard cap on denoiser calls per sample, the final argmax pass included
  (``accounting=strict``); ``accounting=published`` runs the released script's ``nfe // 2`` Heun
  steps + 1 final pass instead (NFE + 1 calls). The measured count is what gets recorded.
- ``sampler`` (sde | euler | ode), ``noise_scale`` (default: the published value for the budget;
  0 for ode), ``beta`` (default: 2 x the learned converter beta), ``topk`` (512),
  ``gen_length`` (128), ``one_call_step`` (exponential | plain).
- ``snr_schedule`` (sensitive | uniform) and ``numerics`` (dslbench | released): the released
  open-ended script is ``accounting=published,numerics=released`` with ``snr_schedule=sensitive``
  for its beta-1 models and ``uniform`` for the others. ``numerics=released`` seeds every prompt
  with ``seed`` itself (the recorded ``sample_seed``), as the released script does.
- ``response_cut`` defaults to ``none`` here: the published decoding of the whole span with
  special tokens skipped and no cut at the first EOS; ``response_cut=eos`` cuts there. The choice
  is recorded in every per-sample record.
- ``repair_path`` (token | converter): the repair tasks' published protocol feeds the corrupted
  token ids to the backbone (no converter), one forward, argmax; ``converter`` (with
  ``repair_snr``) is a dslbench variant, recorded as such in every repair record.

Likelihood requests are refused: the DSL model's likelihood is an integral over SNRs, not the
masked-diffusion bound the shared implementation computes.
"""

from __future__ import annotations

from typing import Any

import torch
from lm_eval.api.registry import register_model

from dslbench.diffusion.sde import ACCOUNTINGS, ONE_CALL_STEPS, SAMPLERS, dsl_generate, dsl_repair
from dslbench.diffusion.sde_released import NUMERICS, SNR_SCHEDULES
from dslbench.diffusion.repair import TOKEN_PATH, repair_protocol
from dslbench.harness.args import AT_LEAST_1, NON_NEGATIVE, POSITIVE, Arg
from dslbench.harness.base import DiffusionBackend, SampleResult

REPAIR_PATHS = (TOKEN_PATH, "converter")

DSL_ARGS: dict[str, Arg] = {
    "nfe": Arg(16, int, help="forward-pass budget per sample, the final argmax pass included", valid=AT_LEAST_1),
    "gen_length": Arg(128, int, help="generated tokens (response span length)", valid=AT_LEAST_1),
    "sampler": Arg("sde", str, SAMPLERS, "sde: Heun SDE; ode: Heun, no noise; euler: one call per step"),
    "noise_scale": Arg(None, float, help="SDE noise scale (default: 0.1 / 0.05 / 0.01 / 0.005 by budget; 0 for ode)", valid=NON_NEGATIVE),
    "beta": Arg(None, float, help="converter beta at inference (default: 2 x the learned beta)", valid=POSITIVE),
    "topk": Arg(512, int, help="posterior mean over the top-k renormalised probabilities", valid=AT_LEAST_1),
    "accounting": Arg("strict", str, ACCOUNTINGS, "strict: nfe caps every call; published: nfe//2 Heun steps + 1 final pass"),
    "one_call_step": Arg("exponential", str, ONE_CALL_STEPS, "form of the one-call steps (euler sampler, odd budgets)"),
    "snr_schedule": Arg("sensitive", str, SNR_SCHEDULES,
                        "sensitive: 0.01->7->74->100 in 5%/90%/5% of the steps (the released script's grid for its "
                        "beta-1 models); uniform: log-spaced 0.01->100 (its grid for every other model)"),
    "numerics": Arg("dslbench", str, NUMERICS,
                    "dslbench: float64 state and draws, one seed per prompt (hash of seed and prompt ids); released: "
                    "the released open-ended loop's float32 arithmetic, converter and top-k mean, and every prompt "
                    "seeded with seed itself (all start from the same noise, as released); rows are decoded one at a "
                    "time without padding, as released (batch-invariant tokens, no batching speed-up). The released "
                    "loop is accounting=published,numerics=released"),
    "repair_path": Arg("token", str, REPAIR_PATHS,
                       "token: the published repair protocol (the corrupted ids' token embeddings straight into the "
                       "backbone, one forward, argmax); converter: a dslbench variant, not the published protocol "
                       "(the corrupted tokens enter through the converter at repair_snr)"),
    "repair_snr": Arg(100.0, float, help="with repair_path=converter: SNR at which the corrupted tokens enter the converter",
                      valid=POSITIVE),
}

DEFAULT_RESPONSE_CUT = "none"


@register_model("dsl_llada")
class DSLLLaDA(DiffusionBackend):
    NAME = "dsl_llada"
    SAMPLER_ARGS = DSL_ARGS

    def __init__(self, **kwargs: Any) -> None:
        # The published DSL decoding keeps the whole span (no cut at the first EOS).
        kwargs.setdefault("response_cut", DEFAULT_RESPONSE_CUT)
        super().__init__(**kwargs)

    def _load(self, pretrained: str) -> None:
        from dslbench.diffusion.dsl_denoiser import DSLDenoiser
        from dslbench.models.dsl_checkpoint import load_dsl_checkpoint

        self.model, self.dsl, self.tokenizer, self.info, self.dsl_config = load_dsl_checkpoint(
            pretrained, dtype=self.args["dtype"], device=str(self._device)
        )
        self.denoiser = DSLDenoiser(
            model=self.model,
            dsl=self.dsl,
            mask_id=self.info.mask_id,
            eos_id=self.info.eos_id,
            eos_ids=self.info.eos_ids,
            vocab_size=self.info.vocab_size,
        )
        self.max_length = self.args["max_length"] or getattr(self.model.config, "max_sequence_length", 4096)

    def _beta_scale(self, opts: dict) -> tuple[float, float]:
        """(beta used, scale relative to the learned beta)."""
        learned = self.dsl.beta
        if opts["beta"] is None:
            factor = float(self.dsl_config.get("beta_infer_factor", 2.0))
            return factor * learned, factor
        if learned == 0:
            raise ValueError(f"{self.NAME}: the checkpoint's converter beta is 0; beta cannot be rescaled")
        return float(opts["beta"]), float(opts["beta"]) / learned

    def _row_seeds(self, contexts: list[list[int]], opts: dict) -> tuple[list[int], Any]:
        """``numerics=released``: every row's generator is seeded with ``seed`` itself, on the
        model's device (where the released script draws), so all prompts share their start noise
        and a row still draws from its own generator (batch-invariant)."""
        if opts["numerics"] != "released":
            return super()._row_seeds(contexts, opts)
        if opts.get("prompt_format") == "none":
            raise ValueError(f"{self.NAME}: numerics=released seeds every prompt alike, so every unconditional "
                             "sample would be the same; use numerics=dslbench for the dsl_uncond_* tasks")
        return [self.args["seed"]] * len(contexts), self.device

    def _sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, opts: dict, generator: torch.Generator) -> SampleResult:
        beta, beta_scale = self._beta_scale(opts)
        if opts["numerics"] == "released" and self.args["prompt_cache"]:
            raise ValueError(f"{self.NAME}: numerics=released decodes each prompt alone and uncached; use prompt_cache=false")
        out = dsl_generate(
            self._seam(prompt_ids.shape[1]),
            prompt_ids,
            prompt_mask,
            gen_length=opts["gen_length"],
            nfe=opts["nfe"],
            sampler=opts["sampler"],
            noise_scale=opts["noise_scale"],
            beta_scale=beta_scale,
            topk=opts["topk"],
            accounting=opts["accounting"],
            one_call_step=opts["one_call_step"],
            snr_schedule=opts["snr_schedule"],
            numerics=opts["numerics"],
            generator=generator,
        )
        if opts["accounting"] == "strict" and out.nfe > opts["nfe"]:
            raise RuntimeError(f"{self.NAME} used {out.nfe} forward passes, over the budget nfe={opts['nfe']}")
        extra = {
            "nfe_budget": opts["nfe"],
            "accounting": opts["accounting"],
            "sampler": opts["sampler"],
            "steps": out.plan.steps,
            "heun_steps": out.plan.heun,
            "one_call_steps": out.plan.euler,
            "noise_scale": out.noise_scale,
            "beta": beta,
            "topk": opts["topk"],
            "snr_final": float(out.plan.grid[-1]),
            "snr_schedule": opts["snr_schedule"],
            "numerics": opts["numerics"],
        }
        return SampleResult(out.tokens, out.nfe, extra)

    def _repair(self, ids: torch.Tensor, mask: torch.Tensor, editable: torch.Tensor, opts: dict) -> SampleResult:
        """Repair mode: the published token path by default; ``repair_path=converter`` (a variant)
        lets the visible corrupted tokens enter through the converter at ``repair_snr``."""
        if opts["repair_path"] == TOKEN_PATH:
            result = super()._repair(ids, mask, editable, opts)
            result.extra["repair_path"] = TOKEN_PATH
            return result
        beta, beta_scale = self._beta_scale(opts)
        passes = int(opts["repair"]["nfe"])
        repaired, nfe = dsl_repair(
            self.denoiser, ids, mask, editable, passes=passes, snr=opts["repair_snr"], beta_scale=beta_scale
        )
        extra = {"repair_protocol": repair_protocol(opts["repair_path"], passes), "repair_path": opts["repair_path"],
                 "repair_passes": passes, "repair_snr": opts["repair_snr"], "beta": beta}
        return SampleResult(repaired, nfe, extra)

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            f"{self.NAME}: loglikelihood (multiple-choice tasks) is not supported: a DSL model's likelihood "
            "is an integral over SNRs of the continuous channel, not the masked-diffusion bound; use "
            "generation tasks, or mdm_llada for likelihood-based tasks"
        )
