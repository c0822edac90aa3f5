"""``mdm_llada``: the masked-diffusion control, iterative unmasking with LLaDA's semantics.

Paper baselines as model args: "LLaDA" = the defaults (low_confidence, temperature 0, one
block of the whole generation, steps = NFE); "LLaDA+EOS+Block" = ``logits_eos_inf=true,
block_length=32``.

Few-step controls (#17): ``remasking=entropy|margin`` (Dream's orders), ``parallel=threshold``
(Fast-dLLM) and ``parallel=eb`` (EB-sampler), under the same hard NFE cap; with an adaptive rule
each sample records the calls it needed (``nfe``) and the batch's calls (``batch_nfe``).

MDLM-format checkpoints (#28; also under the family-neutral name ``mdm``): ``sampler=auto``
runs MDLM's released cached ancestral sampler (``ddpm_cache``,
:mod:`dslbench.diffusion.mdlm_sampler`) on them, with ``remdm=cap|rescale|conf|loop`` as
kuleshov-group/remdm runs those strategies, and LLaDA's unmasking on every other family
(unchanged). An empty prompt samples unconditionally from an all-mask canvas of
``gen_length``, as MDLM / ReMDM sample.
"""

from __future__ import annotations

import torch
from lm_eval.api.registry import register_model

from dslbench.diffusion.mdm import (
    PARALLEL_RULES,
    REMASKING_RULES,
    ParallelConfig,
    check_combination,
    eos_confidence_mode,
    mdm_generate,
    steps_for_budget,
)
from dslbench.diffusion.mdlm_sampler import CACHE_MODES, mdlm_generate
from dslbench.diffusion.remdm import RemdmConfig
from dslbench.harness.args import AT_LEAST_1, NON_NEGATIVE, UNIT, Arg, Range

SAMPLERS = ("auto", "llada", "ddpm_cache")
from dslbench.harness.base import DiffusionBackend, SampleResult

MDM_ARGS: dict[str, Arg] = {
    "nfe": Arg(16, int, help="forward-pass budget per sample (steps = nfe, or nfe // 2 with cfg)", valid=AT_LEAST_1),
    "steps": Arg(None, int, help="explicit step count (overrides the nfe budget)", valid=AT_LEAST_1),
    "gen_length": Arg(128, int, help="generated tokens (masked canvas length)", valid=AT_LEAST_1),
    "block_length": Arg(None, int, help="semi-autoregressive block length (default: gen_length, one block)", valid=AT_LEAST_1),
    "remasking": Arg("low_confidence", str, REMASKING_RULES, help=(
        "order of commits: low_confidence / random (LLaDA), entropy (lowest entropy first, Dream's "
        "'entropy') or margin (largest top-1 minus top-2 probability first, Dream's 'topk_margin')")),
    "temperature": Arg(0.0, float, help="Gumbel-max temperature (float64 noise); 0 = argmax", valid=NON_NEGATIVE),
    "cfg": Arg(0.0, float, help="classifier-free guidance scale (prompt masked in the unconditional pass)", valid=NON_NEGATIVE),
    "logits_eos_inf": Arg(False, bool, help="EOS logit set to -inf"),
    "confidence_eos_eot_inf": Arg(False, None, help=(
        "true (= released): as LLaDA's generate.py, EOS and EoT leave the confidence softmax at "
        "temperature 0, only EoT at temperature > 0, nothing with random remasking; both: every "
        "EOS / EoT id leaves it in every case and ranks last (stricter than the release)")),
    "remdm": Arg("none", str, ("none", "cap", "rescale", "conf", "loop"), (
        "ReMDM remasking strategy; with sampler=ddpm_cache exactly as kuleshov-group/remdm diffusion.py runs "
        "remdm-cap / -rescale / -conf / -loop, with sampler=llada adapted to LLaDA's block schedule "
        "(dslbench/diffusion/remdm.py)")),
    "remdm_eta": Arg(0.02, float, valid=NON_NEGATIVE),
    "remdm_t_on": Arg(0.55, float, valid=Range(0, 1, high_open=True)),
    "remdm_t_off": Arg(0.05, float, valid=Range(0, 1, high_open=True)),
    "remdm_alpha_on": Arg(0.9, float, valid=Range(0, 1, low_open=True, high_open=True)),
    "parallel": Arg("fixed", str, PARALLEL_RULES, help=(
        "positions committed per step: fixed (LLaDA's schedule), threshold (Fast-dLLM: every masked "
        "position of the block with probability >= threshold, at least one) or eb (EB-sampler: the "
        "longest prefix of the order whose entropy sum minus its max is <= eb_gamma); adaptive rules "
        "stop early and never exceed nfe")),
    "threshold": Arg(0.9, float, help="parallel=threshold: probability a position needs (Fast-dLLM's default 0.9)",
                     valid=UNIT),
    "eb_gamma": Arg(0.1, float, help="parallel=eb: entropy budget in nats (0: one position a step)", valid=NON_NEGATIVE),
    "sampler": Arg("auto", str, SAMPLERS, help=(
        "auto: ddpm_cache for MDLM-format checkpoints, llada otherwise; llada: LLaDA's iterative unmasking; "
        "ddpm_cache: MDLM's cached ancestral sampler as released (kuleshov-group/mdlm and remdm diffusion.py "
        "_ddpm_caching_update: T = steps (default nfe - 1), linspace(1, 1e-5) time grid, float64 Gumbel, nucleus_p, "
        "a final noise-removal pass; NFE counts only the calls that ran)")),
    "nucleus_p": Arg(1.0, float, help="sampler=ddpm_cache: top-p of the released sampler (the ReMDM scripts use 0.9)",
                     valid=Range(0, 1, low_open=True)),
    "noise_removal": Arg(True, bool, help="sampler=ddpm_cache: the released final argmax pass over the positions still masked (one call)"),
    "mdlm_cache": Arg("batch", str, CACHE_MODES, help=(
        "sampler=ddpm_cache: batch = the release's cache (the network runs on the whole batch unless nothing changed); "
        "row = only the rows that changed run (fewer evaluations, counted per row; a smaller batch can move float32 "
        "logits by ~1e-6, so a draw may differ from the release's)")),
}

_DDPM_ONLY = {"nucleus_p": 1.0, "noise_removal": True, "mdlm_cache": "batch"}
# LLaDA-sampler args ddpm_cache has no use for, with their neutral values (anything else is refused)
_LLADA_ONLY = {"block_length": None, "remasking": "low_confidence", "temperature": 0.0, "cfg": 0.0,
               "logits_eos_inf": False, "confidence_eos_eot_inf": False, "parallel": "fixed"}


@register_model("mdm_llada", "mdm")
class MDMLLaDA(DiffusionBackend):
    NAME = "mdm_llada"
    SAMPLER_ARGS = MDM_ARGS

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._unmasking(self.args)  # refuse a bad default before any request runs
        self._sampler(self.args)

    def _sampler(self, opts: dict) -> str:
        """The sampler of a request (``auto`` resolved by the checkpoint's family), its options checked."""
        sampler = opts["sampler"]
        if sampler == "auto":
            sampler = "ddpm_cache" if getattr(self.info, "family", "") == "mdlm" else "llada"
        unused = _LLADA_ONLY if sampler == "ddpm_cache" else _DDPM_ONLY
        for key, neutral in unused.items():
            if opts[key] != neutral and not (key == "block_length" and opts[key] == opts["gen_length"]):
                raise ValueError(f"{self.NAME}: {key}={opts[key]!r} has no meaning with sampler={sampler} "
                                 f"(allowed: {neutral!r}); it belongs to sampler={'llada' if sampler == 'ddpm_cache' else 'ddpm_cache'}")
        return sampler

    def _unmasking(self, opts: dict) -> tuple[str, ParallelConfig, RemdmConfig | None]:
        """The EOS mode, the parallel rule and ReMDM of a request, checked together."""
        try:
            mode = eos_confidence_mode(opts["confidence_eos_eot_inf"])
            parallel = ParallelConfig(opts["parallel"], threshold=opts["threshold"], eb_gamma=opts["eb_gamma"])
            remdm = None
            if opts["remdm"] != "none":
                remdm = RemdmConfig(
                    strategy=opts["remdm"], eta=opts["remdm_eta"], t_on=opts["remdm_t_on"],
                    t_off=opts["remdm_t_off"], alpha_on=opts["remdm_alpha_on"],
                )
            check_combination(opts["remasking"], parallel, remdm)
        except ValueError as err:
            raise ValueError(f"{self.NAME}: {err}") from None
        return mode, parallel, remdm

    def _run_mdm(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, opts: dict, generator: torch.Generator, **sampler_extra) -> SampleResult:
        """``mdm_generate`` with this request's options; ``sampler_extra`` reaches the sampler
        (soft-masking passes its ``input_embeds_fn`` here)."""
        if self._sampler(opts) == "ddpm_cache":
            return self._run_ddpm_cache(prompt_ids, prompt_mask, opts, generator, **sampler_extra)
        # None (not 0: refused by the declared range) means "derive from the budget / one block".
        steps = opts["steps"] if opts["steps"] is not None else steps_for_budget(opts["nfe"], opts["cfg"])
        block_length = opts["block_length"] if opts["block_length"] is not None else opts["gen_length"]
        eos_mode, parallel, remdm = self._unmasking(opts)
        out = mdm_generate(
            self._seam(prompt_ids.shape[1]),
            prompt_ids,
            prompt_mask,
            gen_length=opts["gen_length"],
            steps=steps,
            block_length=block_length,
            temperature=opts["temperature"],
            cfg_scale=opts["cfg"],
            remasking=opts["remasking"],
            logits_eos_inf=opts["logits_eos_inf"],
            confidence_eos_eot_inf=eos_mode,
            remdm=remdm,
            parallel=parallel,
            generator=generator,
            **sampler_extra,
        )
        budget = None if opts["steps"] is not None else opts["nfe"]
        if budget is not None and out.nfe > budget:
            raise RuntimeError(f"{self.NAME} used {out.nfe} forward passes, over the budget nfe={budget}")
        extra = {"steps": out.steps, "block_length": block_length}
        if parallel.rule == "fixed":
            return SampleResult(out.tokens, out.nfe, extra)
        # Rows stop at different steps: each sample records the calls it needed, the batch's too.
        extra.update({"parallel": parallel.rule, "batch_nfe": out.nfe})
        return SampleResult(out.tokens, out.row_nfe, extra)

    def _run_ddpm_cache(self, prompt_ids, prompt_mask, opts: dict, generator, **sampler_extra) -> SampleResult:
        """MDLM's released sampler: T steps (default: the budget less the noise-removal call);
        the cache can only lower the calls, so the budget holds."""
        _, _, remdm = self._unmasking(opts)
        steps = opts["steps"] if opts["steps"] is not None else opts["nfe"] - int(opts["noise_removal"])
        if steps < 1:
            raise ValueError(f"{self.NAME}: nfe={opts['nfe']} leaves no step for sampler=ddpm_cache "
                             "(one call is the noise-removal pass): use nfe >= 2 or noise_removal=false")
        out = mdlm_generate(
            self._seam(prompt_ids.shape[1]), prompt_ids, prompt_mask, gen_length=opts["gen_length"], steps=steps,
            nucleus_p=opts["nucleus_p"], remdm=remdm, noise_removal=opts["noise_removal"], cache=opts["mdlm_cache"],
            generator=generator, **sampler_extra,
        )
        budget = None if opts["steps"] is not None else opts["nfe"]
        if budget is not None and max(out.row_nfe) > budget:
            raise RuntimeError(f"{self.NAME} used {max(out.row_nfe)} forward passes, over the budget nfe={budget}")
        extra = {"steps": out.steps, "sampler": "ddpm_cache", "nucleus_p": opts["nucleus_p"], "batch_nfe": out.nfe,
                 "mdlm_cache": opts["mdlm_cache"]}
        return SampleResult(out.tokens, out.row_nfe, extra)

    def _sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, opts: dict, generator: torch.Generator) -> SampleResult:
        return self._run_mdm(prompt_ids, prompt_mask, opts, generator)
