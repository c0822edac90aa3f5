"""``diffusiongemma``: transformers' DiffusionGemma block-diffusion models, measured at fixed budgets.

Generation is transformers' own ``model.generate`` (entropy-bound sampler, linear temperature
schedule, self-conditioning, adaptive stopping), steered only through its generation config; the
NFE is counted at the canvas decoder by :class:`~dslbench.models.diffusiongemma.CanvasDecoderSeam`.

* One NFE = one canvas-decoder evaluation (a denoising step of one canvas, self-conditioning
  included: it is an input of the same call). Prompt-encoder passes are recorded apart
  (``encoder_passes``).
* A generation of ``gen_length`` tokens takes ``ceil(gen_length / canvas_length)`` canvases; the
  budget ``nfe`` is split evenly: ``max_denoising_steps = nfe / canvases`` per canvas (it must
  divide). Tokens of the last canvas beyond ``gen_length`` are generated but not kept.
* ``stopping=native``: the checkpoint's generation config as is (adaptive stopping may end a canvas
  early, EOS may end the generation early); the measured NFE is recorded and is <= ``nfe``.
* ``stopping=none``: exactly ``nfe`` decoder evaluations: adaptive stopping can never fire
  (``stability_threshold`` = steps + 1 > the steps there are) and EOS does not end the generation
  early (``eos_token_id=None``; the text is still cut at the first EOS afterwards).
"""

from __future__ import annotations

import math

import torch
from lm_eval.api.registry import register_model

from dslbench.harness.args import Arg
from dslbench.harness.base import DiffusionBackend, SampleResult

DIFFUSIONGEMMA_ARGS: dict[str, Arg] = {
    "nfe": Arg(16, int, help="canvas-decoder evaluations per sample, split evenly over the canvases "
                             "(stopping=none: exactly this many; native: at most); 0 with stopping=native: "
                             "the checkpoint's own max_denoising_steps per canvas"),
    "gen_length": Arg(128, int, help="generated tokens kept (ceil(gen_length / canvas_length) canvases)"),
    "stopping": Arg("native", str, ("native", "none"),
                    "native: the checkpoint's adaptive stopping and EOS end; none: exactly nfe evaluations"),
}


def plan_canvases(gen_length: int, nfe: int, canvas_length: int, stopping: str) -> tuple[int, int | None]:
    """(canvases, denoising steps per canvas) for a request; steps None = the checkpoint's own."""
    if gen_length < 1:
        raise ValueError(f"diffusiongemma: gen_length={gen_length} must be >= 1")
    canvases = math.ceil(gen_length / canvas_length)
    if nfe == 0 and stopping == "native":
        return canvases, None
    if nfe < canvases or nfe % canvases:
        raise ValueError(
            f"diffusiongemma: nfe={nfe} cannot be split evenly over the {canvases} canvas(es) of "
            f"gen_length={gen_length} (canvas_length={canvas_length}); choose a positive multiple of {canvases}"
            + ("" if stopping == "none" else " or nfe=0 for the checkpoint's own steps")
        )
    return canvases, nfe // canvases


def generate_kwargs(gen_length: int, steps: int | None, stopping: str) -> dict:
    """The keyword arguments of ``model.generate`` for one request (the rest is the checkpoint's config)."""
    kwargs: dict = {"max_new_tokens": gen_length, "max_length": None}
    if steps is not None:
        kwargs["max_denoising_steps"] = steps
    if stopping == "none":
        kwargs["stability_threshold"] = steps + 1  # needs more identical steps than there are: never stops
        kwargs["eos_token_id"] = None  # every canvas is generated
    return kwargs


@register_model("diffusiongemma")
class DiffusionGemma(DiffusionBackend):
    NAME = "diffusiongemma"
    SAMPLER_ARGS = DIFFUSIONGEMMA_ARGS

    def _load(self, pretrained: str) -> None:
        from dslbench.models.diffusiongemma import CanvasDecoderSeam, load_diffusiongemma

        for name, low in (("nfe", 0), ("gen_length", 1)):  # before loading: a bad arg fails fast
            if self.args[name] is None or self.args[name] < low:
                raise ValueError(f"diffusiongemma: model arg {name}={self.args[name]!r} must be >= {low}")
        self.model, self.tokenizer, self.info = load_diffusiongemma(
            pretrained, dtype=self.args["dtype"], device=str(self._device)
        )
        self.denoiser = CanvasDecoderSeam(self.model, eos_ids=self.info.eos_ids)
        self.max_length = self.args["max_length"] or self.model.config.text_config.max_position_embeddings
        plan_canvases(self.args["gen_length"], self.args["nfe"], self.info.canvas_length, self.args["stopping"])

    def _check_prompt_cache(self) -> None:
        if self.args["prompt_cache"] or self.args["prompt_cache_refresh"]:
            raise ValueError(
                "diffusiongemma: model args prompt_cache / prompt_cache_refresh do not apply: the prompt "
                "encoder already keeps an exact KV cache of the prompt; leave them unset"
            )

    def _sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, opts: dict, generator: list[torch.Generator]) -> SampleResult:
        gen_length, stopping = opts["gen_length"], opts["stopping"]
        canvases, steps = plan_canvases(gen_length, opts["nfe"], self.info.canvas_length, stopping)
        seam = self.denoiser
        seam.reset()
        # generate draws its canvases and samples for the whole batch from torch's global RNG, so
        # rows cannot have their own streams: seed it from the rows' own seeds (a batch of one is
        # seeded by its document alone, as every other backend; a larger batch's draws depend on
        # which rows share it) and leave the caller's RNG state as it was.
        from dslbench.diffusion.rng import prompt_seed

        gens = [generator] if isinstance(generator, torch.Generator) else list(generator)
        seed = gens[0].initial_seed() if len(gens) == 1 else prompt_seed([g.initial_seed() >> 1 for g in gens], 0)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = self.model.generate(prompt_ids, attention_mask=prompt_mask, **generate_kwargs(gen_length, steps, stopping))
        tokens = out.sequences[:, prompt_ids.shape[1]: prompt_ids.shape[1] + gen_length]
        if opts["nfe"] and seam.nfe > opts["nfe"]:
            raise RuntimeError(f"{self.NAME} used {seam.nfe} decoder evaluations, over the budget nfe={opts['nfe']}")
        if stopping == "none" and seam.nfe != opts["nfe"]:
            raise RuntimeError(f"{self.NAME}: stopping=none made {seam.nfe} decoder evaluations, not nfe={opts['nfe']}")
        extra = {
            "stopping": stopping,
            "encoder_passes": seam.encoder_passes,
            "canvases": canvases,
            "canvas_length": self.info.canvas_length,
            "steps_per_canvas": steps if steps is not None else self.model.generation_config.max_denoising_steps,
        }
        return SampleResult(tokens, seam.nfe, extra)

    # ------------------------------------------------------------------ repair
    def _repair(self, ids: torch.Tensor, mask: torch.Tensor, editable: torch.Tensor, opts: dict) -> SampleResult:
        """The published protocol's analogue: the corrupted passage is the canvas and BOS alone the
        encoded prompt (the decoder needs a prompt; the passage itself gets no BOS, as released); one
        decoder evaluation, argmax at every canvas position."""
        passes = opts["repair"].get("nfe", 1)
        if passes != 1:
            raise ValueError(f"diffusiongemma: repair_nfe={passes}; this backend repairs with the published "
                             "protocol only: one decoder evaluation (repair_nfe=1)")
        bos = self.tokenizer.bos_token_id
        if bos is None:
            raise ValueError("diffusiongemma: repair needs a BOS token to encode before the canvas; the tokenizer has none")
        passages = [ids[i][editable[i]] for i in range(len(ids))]
        prompt_ids, prompt_mask = self._left_pad([[bos] for _ in passages])
        width = max(len(p) for p in passages)
        canvas = torch.full((len(ids), width), self.info.pad_id, dtype=torch.long, device=ids.device)
        canvas_mask = torch.zeros_like(canvas)
        for i, p in enumerate(passages):
            canvas[i, : len(p)] = p
            canvas_mask[i, : len(p)] = 1
        seam = self.denoiser
        seam.reset()
        guess = seam.canvas_logits(prompt_ids, prompt_mask, canvas, canvas_mask).argmax(dim=-1)
        repaired = ids.clone()
        for i, p in enumerate(passages):
            repaired[i, editable[i]] = guess[i, : len(p)]
        extra = {"repair_protocol": "published", "repair_passes": 1, "encoder_passes": seam.encoder_passes}
        return SampleResult(repaired, seam.nfe, extra)

    # ------------------------------------------------------------------ likelihood
    def loglikelihood(self, requests: list, disable_tqdm: bool = False):
        raise NotImplementedError(
            "diffusiongemma: loglikelihood (multiple-choice tasks) is not supported: a uniform-state "
            "block-diffusion model gives no token log-likelihood through transformers' API; use generation tasks"
        )
