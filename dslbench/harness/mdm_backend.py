"""``mdm_llada``: the masked-diffusion control, iterative unmasking with LLaDA's semantics.

Paper baselines as model args: "LLaDA" = the defaults (low_confidence, temperature 0, one
block of the whole generation, steps = NFE); "LLaDA+EOS+Block" = ``logits_eos_inf=true,
block_length=32``.
"""

from __future__ import annotations

import torch
from lm_eval.api.registry import register_model

from dslbench.diffusion.mdm import mdm_generate, steps_for_budget
from dslbench.diffusion.remdm import RemdmConfig
from dslbench.harness.args import Arg
from dslbench.harness.base import DiffusionBackend, SampleResult

MDM_ARGS: dict[str, Arg] = {
    "nfe": Arg(16, int, help="forward-pass budget per sample (steps = nfe, or nfe // 2 with cfg)"),
    "steps": Arg(None, int, help="explicit step count (overrides the nfe budget)"),
    "gen_length": Arg(128, int, help="generated tokens (masked canvas length)"),
    "block_length": Arg(None, int, help="semi-autoregressive block length (default: gen_length, one block)"),
    "remasking": Arg("low_confidence", str, ("low_confidence", "random")),
    "temperature": Arg(0.0, float, help="Gumbel-max temperature (float64 noise); 0 = argmax"),
    "cfg": Arg(0.0, float, help="classifier-free guidance scale (prompt masked in the unconditional pass)"),
    "logits_eos_inf": Arg(False, bool, help="EOS logit set to -inf"),
    "confidence_eos_eot_inf": Arg(False, bool, help="EOS / EoT never win confidence"),
    "remdm": Arg("none", str, ("none", "cap", "rescale", "conf", "loop"), "ReMDM remasking strategy"),
    "remdm_eta": Arg(0.02, float),
    "remdm_t_on": Arg(0.55, float),
    "remdm_t_off": Arg(0.05, float),
    "remdm_alpha_on": Arg(0.9, float),
}


@register_model("mdm_llada")
class MDMLLaDA(DiffusionBackend):
    NAME = "mdm_llada"
    SAMPLER_ARGS = MDM_ARGS

    def _run_mdm(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, opts: dict, generator: torch.Generator, **sampler_extra) -> SampleResult:
        """``mdm_generate`` with this request's options; ``sampler_extra`` reaches the sampler
        (soft-masking passes its ``input_embeds_fn`` here)."""
        steps = opts["steps"] or steps_for_budget(opts["nfe"], opts["cfg"])
        remdm = None
        if opts["remdm"] != "none":
            remdm = RemdmConfig(
                strategy=opts["remdm"], eta=opts["remdm_eta"], t_on=opts["remdm_t_on"],
                t_off=opts["remdm_t_off"], alpha_on=opts["remdm_alpha_on"],
            )
        out = mdm_generate(
            self._seam(prompt_ids.shape[1]),
            prompt_ids,
            prompt_mask,
            gen_length=opts["gen_length"],
            steps=steps,
            block_length=opts["block_length"] or opts["gen_length"],
            temperature=opts["temperature"],
            cfg_scale=opts["cfg"],
            remasking=opts["remasking"],
            logits_eos_inf=opts["logits_eos_inf"],
            confidence_eos_eot_inf=opts["confidence_eos_eot_inf"],
            remdm=remdm,
            generator=generator,
            **sampler_extra,
        )
        budget = None if opts["steps"] else opts["nfe"]
        if budget is not None and out.nfe > budget:
            raise RuntimeError(f"{self.NAME} used {out.nfe} forward passes, over the budget nfe={budget}")
        return SampleResult(out.tokens, out.nfe, {"steps": out.steps, "block_length": opts["block_length"] or opts["gen_length"]})

    def _sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, opts: dict, generator: torch.Generator) -> SampleResult:
        return self._run_mdm(prompt_ids, prompt_mask, opts, generator)
