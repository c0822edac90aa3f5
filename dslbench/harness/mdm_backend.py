"""``mdm_llada``: the masked-diffusion control, iterative unmasking with LLaDA's semantics.

Paper baselines as model args: "LLaDA" = the defaults (low_confidence, temperature 0, one
block of the whole generation, steps = NFE); "LLaDA+EOS+Block" = ``logits_eos_inf=true,
block_length=32``.

Few-step controls (#17): ``remasking=entropy|margin`` (Dream's orders), ``parallel=threshold``
(Fast-dLLM) and ``parallel=eb`` (EB-sampler), under the same hard NFE cap; with an adaptive rule
each sample records the calls it needed (``nfe``) and the batch's calls (``batch_nfe``).
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
from dslbench.diffusion.remdm import RemdmConfig
from dslbench.harness.args import AT_LEAST_1, NON_NEGATIVE, UNIT, Arg, Range
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
    "remdm": Arg("none", str, ("none", "cap", "rescale", "conf", "loop"), "ReMDM remasking strategy"),
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
}


@register_model("mdm_llada")
class MDMLLaDA(DiffusionBackend):
    NAME = "mdm_llada"
    SAMPLER_ARGS = MDM_ARGS

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._unmasking(self.args)  # refuse a bad default before any request runs

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

    def _sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, opts: dict, generator: torch.Generator) -> SampleResult:
        return self._run_mdm(prompt_ids, prompt_mask, opts, generator)
