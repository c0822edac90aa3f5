"""``diffusiongemma``: transformers' DiffusionGemma block-diffusion models, measured at fixed budgets.

The model is transformers' ``DiffusionGemmaForBlockDiffusion`` (its encoder, decoder and output
head, driven through :class:`~dslbench.models.diffusiongemma.CanvasDecoderSeam`); the sampling
loop is :func:`~dslbench.diffusion.entropy_bound.entropy_bound_generate`, ``generate``'s loop step
for step (entropy-bound sampler, linear temperature schedule, self-conditioning, adaptive
stopping, EOS end; a batch of one is token-identical to ``generate``) with one random stream per
row, so a document's sample does not depend on its batch.

* One NFE = one canvas-decoder evaluation (a denoising step of one canvas, self-conditioning
  included: it is an input of the same call), counted per row while the row is denoising.
  Prompt-encoder passes are recorded apart (``encoder_passes``).
* A generation of ``gen_length`` tokens takes ``ceil(gen_length / canvas_length)`` canvases; the
  budget ``nfe`` is split evenly: ``max_denoising_steps = nfe / canvases`` per canvas (it must
  divide). Tokens of the last canvas beyond ``gen_length`` are generated but not kept.
* ``stopping=native``: the checkpoint's generation config as is (adaptive stopping may end a canvas
  early, EOS ends the generation early); the measured NFE is recorded and is <= ``nfe``.
* ``stopping=none``: exactly ``nfe`` decoder evaluations: no adaptive stopping, and EOS does not
  end the generation (the text is still cut at the first EOS afterwards).
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
    "draw": Arg("all", str, ("all", "accepted"),
                "all: a token drawn at every canvas position each step, as transformers' generate does; "
                "accepted (named departure, for speed): drawn only where the entropy bound accepts: the same "
                "distribution with fewer random numbers, not the same tokens as generate"),
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


def sampler_config(generation_config, steps: int | None, stopping: str, draw: str, pad_id: int):
    """The entropy-bound sampler's settings: the checkpoint's generation config (the values
    ``generate`` would use, transformers' defaults where the checkpoint sets none), ``steps``
    decoder evaluations per canvas; ``stopping=none`` turns adaptive stopping and the EOS end off."""
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import DiffusionGemmaGenerationConfig

    from dslbench.diffusion.entropy_bound import EntropyBoundConfig

    defaults = DiffusionGemmaGenerationConfig._get_default_generation_params()

    def value(name):
        own = getattr(generation_config, name, None)
        return own if own is not None else defaults.get(name)

    eos = value("eos_token_id")
    eos_ids = None if eos is None else tuple(int(e) for e in ([eos] if isinstance(eos, int) else eos))
    native = stopping == "native"
    pad = value("pad_token_id")
    return EntropyBoundConfig(
        steps=steps if steps is not None else value("max_denoising_steps"),
        entropy_bound=value("sampler_config").entropy_bound,
        t_min=value("t_min"),
        t_max=value("t_max"),
        stability_threshold=value("stability_threshold") if native else None,
        confidence_threshold=value("confidence_threshold") if native else None,
        eos_ids=eos_ids if native else None,
        pad_id=int(pad if pad is not None else pad_id),
        draw=draw,
    )


@register_model("diffusiongemma")
class DiffusionGemma(DiffusionBackend):
    NAME = "diffusiongemma"
    SAMPLER_ARGS = DIFFUSIONGEMMA_ARGS
    # a token is drawn over the whole vocabulary at every canvas position and step: draw where the
    # model is (one CPU stream per row would move canvas x vocabulary numbers to the GPU each step)
    RNG_ON_MODEL_DEVICE = True

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

    def _sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, opts: dict, generator) -> SampleResult:
        from dslbench.diffusion.entropy_bound import entropy_bound_generate

        if opts.get("prompt_format") == "none":
            raise ValueError(f"{self.NAME}: unconditional generation (prompt_format=none, the dsl_uncond_* tasks) is "
                             "not supported: this encoder-decoder needs a prompt to encode")
        gen_length, stopping = opts["gen_length"], opts["stopping"]
        canvases, steps = plan_canvases(gen_length, opts["nfe"], self.info.canvas_length, stopping)
        cfg = sampler_config(self.model.generation_config, steps, stopping, opts["draw"], self.info.pad_id)
        seam = self.denoiser
        seam.reset()
        out = entropy_bound_generate(seam, prompt_ids, prompt_mask, canvases, cfg, generator)
        if seam.nfe != out.calls:  # the sampler's count against the hooks on the decoder module
            raise RuntimeError(f"{self.NAME}: the decoder ran {seam.nfe} times, the sampler counted {out.calls}")
        if opts["nfe"] and max(out.nfe) > opts["nfe"]:
            raise RuntimeError(f"{self.NAME} used {max(out.nfe)} decoder evaluations, over the budget nfe={opts['nfe']}")
        if stopping == "none" and set(out.nfe) != {opts["nfe"]}:
            raise RuntimeError(f"{self.NAME}: stopping=none made {out.nfe} decoder evaluations, not nfe={opts['nfe']}")
        extra = {
            "stopping": stopping,
            "draw": cfg.draw,
            "canvases": canvases,
            "canvas_length": self.info.canvas_length,
            "steps_per_canvas": cfg.steps,
        }
        # a row's own encoder passes: the prompt prefill, then one per canvas it went on to
        rows = [{"canvases_denoised": c, "encoder_passes": c} for c in out.canvases]
        return SampleResult(out.tokens[:, :gen_length], out.nfe, extra, rows)

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
