"""Shared lm-eval plumbing of the dslbench backends.

A backend subclass declares its sampler arguments and implements ``_sample`` (prompt batch ->
generated token ids, measured NFE). Everything else lives here once: model-arg parsing, model
loading, batching with lm-eval's ``Collator``, per-request generation kwargs, EOS / ``until``
cuts and per-sample efficiency records; composed with the mixins of the neighbouring modules:
data parallel (:mod:`~dslbench.harness.distributed`), chat template and prompt fitting
(:mod:`~dslbench.harness.prompts`), repair requests (:mod:`~dslbench.harness.repair`) and the
Monte-Carlo log-likelihood (:mod:`~dslbench.harness.likelihood`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.models.utils import Collator
from tqdm import tqdm

from dslbench.diffusion.denoiser import ModelDenoiser
from dslbench.harness.args import AT_LEAST_1, Arg, Range, convert, parse_args
from dslbench.harness.distributed import DistributedMixin
from dslbench.harness.likelihood import LikelihoodMixin
from dslbench.harness.prompts import UNCONDITIONAL, PromptMixin, check_prompt_format
from dslbench.harness.repair import REPAIR_KEYS, RepairMixin, repair_options
from dslbench.harness.result import SampleResult
from dslbench.metrics.sample_stats import attach_stats

__all__ = ["COMMON_ARGS", "DiffusionBackend", "SampleResult"]

log = logging.getLogger(__name__)

# keep: the whole span decoded as is, special tokens included (MDLM / ReMDM's ``batch_decode(row)``
# of an unconditional sample, whose EOS marks the evaluator then re-reads as EOS)
RESPONSE_CUTS = ("eos", "none", "keep")

COMMON_ARGS: dict[str, Arg] = {
    "pretrained": Arg(None, str, help="local checkpoint directory or hub id"),
    "dtype": Arg("auto", str, ("auto", "float32", "bfloat16", "float16"), "auto: bf16 on GPU, fp32 on CPU"),
    "device": Arg("auto", str, help="auto, cpu, cuda, cuda:N"),
    "batch_size": Arg(1, int, help="prompts decoded together", valid=AT_LEAST_1),
    "max_batch_size": Arg(None, int, help="accepted for lm-eval compatibility; batch_size is used", valid=AT_LEAST_1),
    "seed": Arg(1234, int, help="seed of every random draw of the sampler", ceiling=None),
    "max_length": Arg(None, int, help="max prompt + generation tokens (default: the model's max_sequence_length)", valid=Range(2)),
    "response_cut": Arg("eos", str, RESPONSE_CUTS, "eos: text ends at the first EOS/EoT; none: whole span, special tokens skipped (published decoding); keep: whole span, special tokens kept (MDLM / ReMDM unconditional samples)"),
    "mc_num": Arg(128, int, help="Monte-Carlo samples for loglikelihood", valid=AT_LEAST_1),
    "mc_batch_size": Arg(32, int, help="Monte-Carlo samples per forward for loglikelihood", valid=AT_LEAST_1),
    "prompt_cache": Arg(False, bool, help="approximate prompt K/V cache for generation (Fast-dLLM style): the prompt no longer sees the evolving span"),
    "batch_invariant": Arg(False, bool, help=(
        "decode each prompt of a batch alone, unpadded (no batching speed-up): padding moves float32 "
        "logits by ~1e-6, which flips near-ties at temperature > 0, so only this makes a document's "
        "sample exactly independent of the batch it is decoded in")),
    "prompt_cache_refresh": Arg(0, int, help="with prompt_cache: a full pass every N calls (0: only the first call of a generation)"),
}

# Generation kwargs every backend understands besides its sampler args.
# ``prompt_format`` and ``response_cut`` let a task ask for the released prompt and decoding of
# its experiment (the open-ended tasks: :data:`~dslbench.harness.prompts.PROMPT_FORMATS`).
_REQUEST_KEYS = {"until", "max_gen_toks", "do_sample", "return_stats", "prompt_format", "response_cut"}


class DiffusionBackend(DistributedMixin, PromptMixin, RepairMixin, LikelihoodMixin, LM):
    NAME = "diffusion"
    SAMPLER_ARGS: dict[str, Arg] = {}
    # where the per-row generators live: the CPU (the released samplers' streams), or the model's
    # device for a sampler that draws over the whole vocabulary at every step
    RNG_ON_MODEL_DEVICE = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        specs = {**COMMON_ARGS, **self.SAMPLER_ARGS}
        if isinstance(kwargs.get("batch_size"), str) and kwargs["batch_size"].startswith("auto"):
            raise ValueError(f"{self.NAME}: batch_size=auto is not supported; give a number")
        self.args = parse_args(self.NAME, specs, kwargs)
        if not self.args["pretrained"]:
            raise ValueError(f"{self.NAME}: model arg 'pretrained' is required (a checkpoint directory or hub id)")
        self.defaults = {k: self.args[k] for k in self.SAMPLER_ARGS}
        self._given = {k for k in kwargs if k in self.SAMPLER_ARGS}  # sampler args the user set
        self._given_common = {k for k in kwargs if k in COMMON_ARGS}
        self._setup_distributed()
        self._load(self.args["pretrained"])
        self._check_context()
        # the open-ended tasks' evaluator (GenPPL, MAUVE) runs on the model's device
        from dslbench.metrics.evaluator import set_default_device

        set_default_device(self._device)
        self.batch_size = self.args["batch_size"]
        self._check_prompt_cache()
        self._cache_seam = None

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict | None = None):
        # lm-eval always passes its CLI defaults (batch_size=1, device=cuda:0) as additional
        # config; a value the user wrote in --model_args wins instead of colliding with them.
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    def _load(self, pretrained: str) -> None:
        from dslbench.models.loading import load_model

        self.model, self.tokenizer, self.info = load_model(
            pretrained, dtype=self.args["dtype"], device=str(self._device)
        )
        self.model.eval()
        eos_ids = tuple(i for i in (self.info.eos_id, self.info.eot_id) if i is not None)
        self.denoiser = ModelDenoiser(
            self.model,
            mask_id=self.info.mask_id,
            eos_id=self.info.eos_id,
            eos_ids=eos_ids,
            vocab_size=self.info.vocab_size,
            shift_logits=getattr(self.info, "family", "llada") == "dream",
        )
        cfg_max = getattr(self.model.config, "max_sequence_length", None) or getattr(
            self.model.config, "max_position_embeddings", 4096
        )
        self.max_length = self.args["max_length"] or cfg_max

    def _check_context(self) -> None:
        """The token counts the user gave fit the model's context (named in the error)."""
        from dslbench.harness.args import CONTEXT_ARGS, check_context, model_context

        found = model_context(self.model.config)
        if found is None:
            return
        given = self._given | self._given_common
        args = {k: self.args[k] for k in ("max_length", *CONTEXT_ARGS) if k in given and k in self.args}
        where = getattr(self.info, "path", "") or self.args["pretrained"]
        check_context(self.NAME, args, found[0], f"{found[1]}={found[0]} in {where}/config.json")

    def _check_prompt_cache(self) -> None:
        from dslbench.diffusion.prompt_cache import supports_prompt_cache

        refresh = self.args["prompt_cache_refresh"]
        if refresh is None or refresh < 0:
            raise ValueError(
                f"{self.NAME}: model arg prompt_cache_refresh={refresh!r} is not allowed; "
                "choose 0 (only the first call of a generation) or N >= 1 (a full pass every N calls)"
            )
        if not self.args["prompt_cache"]:
            if refresh:
                raise ValueError(f"{self.NAME}: model arg prompt_cache_refresh={refresh} needs prompt_cache=true")
            return
        if not supports_prompt_cache(self.denoiser):
            family = getattr(self.info, "family", type(self.model).__name__)
            raise ValueError(
                f"{self.NAME}: model arg prompt_cache=true is not supported for the {family} family "
                f"({type(self.model).__name__} has no prefix-cache forward; only LLaDA-format models do): "
                "use prompt_cache=false"
            )

    def _seam(self, prompt_len: int):
        """The denoiser seam for one generation batch: the plain seam, or with ``prompt_cache``
        a fresh :class:`~dslbench.diffusion.prompt_cache.PromptCachedDenoiser` sharing its NFE counter."""
        if not self.args["prompt_cache"]:
            return self.denoiser
        from dslbench.diffusion.prompt_cache import PromptCachedDenoiser

        self._cache_seam = PromptCachedDenoiser(self.denoiser, prompt_len, self.args["prompt_cache_refresh"])
        return self._cache_seam

    # ------------------------------------------------------------------ lm-eval hooks
    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "tokenizer")).replace("/", "__")

    # ------------------------------------------------------------------ per-request options
    def request_options(self, gen_kwargs: dict) -> dict:
        """Backend defaults overridden by a task's generation kwargs (validated)."""
        gen_kwargs = dict(gen_kwargs or {})
        allowed = set(self.SAMPLER_ARGS) | _REQUEST_KEYS | REPAIR_KEYS
        unknown = sorted(set(gen_kwargs) - allowed)
        if unknown:
            raise ValueError(
                f"{self.NAME}: unsupported generation kwarg(s) {', '.join(unknown)}; "
                f"supported: {', '.join(sorted(allowed))}"
            )
        opts = dict(self.defaults)
        for key, value in gen_kwargs.items():
            if key in self.SAMPLER_ARGS:
                opts[key] = convert(key, self.SAMPLER_ARGS[key], value)
        # lm-eval's generic length key; an explicit gen_length wins.
        if "gen_length" not in gen_kwargs and gen_kwargs.get("max_gen_toks") is not None:
            opts["gen_length"] = convert("max_gen_toks", self.SAMPLER_ARGS["gen_length"], gen_kwargs["max_gen_toks"])
        self._warn_overrides(opts)
        if gen_kwargs.get("do_sample") and not opts.get("temperature"):
            raise ValueError(f"{self.NAME}: do_sample=true needs temperature > 0")
        until = gen_kwargs.get("until") or []
        opts["until"] = [until] if isinstance(until, str) else list(until)
        opts["return_stats"] = bool(gen_kwargs.get("return_stats", False))
        opts["repair"] = repair_options(gen_kwargs)
        opts["prompt_format"] = check_prompt_format(self.NAME, gen_kwargs.get("prompt_format"))
        opts["response_cut"] = self._response_cut(gen_kwargs.get("response_cut"))
        return opts

    def _response_cut(self, requested: str | None) -> str | None:
        """The task's ``response_cut`` (its experiment's released decoding) wins over the model
        arg; said once when they differ, since the model arg is then not what runs. None: the
        task sets none, the model arg applies."""
        if requested is None:
            return None
        if requested not in RESPONSE_CUTS:
            raise ValueError(f"{self.NAME}: generation kwarg response_cut={requested!r}; allowed: {', '.join(RESPONSE_CUTS)}")
        warned = self.__dict__.setdefault("_overrides_warned", set())
        if "response_cut" in getattr(self, "_given_common", ()) and requested != self.args["response_cut"] \
                and "response_cut" not in warned:
            warned.add("response_cut")
            log.warning("%s: model arg response_cut=%r is overridden by the task's generation kwargs (response_cut=%r is used)",
                        self.NAME, self.args["response_cut"], requested)
        return requested

    def _warn_overrides(self, opts: dict) -> None:
        """A task's own value (its ``nfe``, ``gen_length``, ...) wins over the same model arg: say
        so once per arg, since the model arg the user wrote is then not what runs."""
        warned = self.__dict__.setdefault("_overrides_warned", set())
        for key in sorted(getattr(self, "_given", ())):
            if key not in warned and opts.get(key) != self.defaults[key]:
                warned.add(key)
                log.warning(
                    "%s: model arg %s=%r is overridden by the task's generation kwargs (%s=%r is used)",
                    self.NAME, key, self.defaults[key], key, opts[key],
                )

    # ------------------------------------------------------------------ generation
    def _sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, opts: dict, generator: list[torch.Generator]) -> SampleResult:
        """Decode a batch; ``generator`` holds one generator per row (pass it on to the sampler)."""
        raise NotImplementedError

    def _decode(self, row: torch.Tensor, response_cut: str | None = None) -> tuple[str, int]:
        """Text of one generated span and its token count (before EOS when cutting there)."""
        ids = row.tolist()
        cut = response_cut or self.args["response_cut"]
        special = set(self.tokenizer.all_special_ids)
        if cut == "keep":
            return self.tokenizer.decode(ids, skip_special_tokens=False), sum(1 for t in ids if t not in special)
        if cut == "eos":
            ends = [ids.index(e) for e in self.denoiser.eos_ids if e in ids]
            if ends:
                ids = ids[: min(ends)]
        n_tokens = sum(1 for t in ids if t not in special)
        return self.tokenizer.decode(ids, skip_special_tokens=True), n_tokens

    @staticmethod
    def _cut_until(text: str, until: list[str]) -> str:
        cuts = [text.find(u) for u in until if u and u in text]
        return text[: min(cuts)] if cuts else text

    @staticmethod
    def _padding_mask(requests: list) -> list[bool]:
        """True for the duplicate requests lm-eval appends to even out data-parallel ranks.

        lm-eval pads a rank by repeating its last Instance object ``repeats`` times more; a
        request object seen more often than its ``repeats`` is such padding. It still gets a
        response (copied), but is neither decoded again nor counted in any efficiency figure.
        """
        seen: Counter = Counter()
        flags = []
        for req in requests:
            seen[id(req)] += 1
            flags.append(seen[id(req)] > getattr(req, "repeats", 1))
        return flags

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        if not requests:
            return []
        padding = self._padding_mask(requests)
        self._truncated = [0, 0]  # prompts cut / prompts decoded by this call (one warning at the end)
        real = [(i, req) for i, req in enumerate(requests) if not padding[i]]
        # the prompt string as tokenized: a task asking for prompt_format=chat gets the template here
        prompts = {i: self._format_prompt(req.args[0], (req.args[1] or {}).get("prompt_format")) for i, req in real}
        contexts = [self._encode_context(prompts[i], (req.args[1] or {}).get("prompt_format")) for i, req in real]
        items = [(i, ctx, req.args[1]) for (i, req), ctx in zip(real, contexts)]
        collator = Collator(
            items,
            sort_fn=lambda x: (-len(x[1]), x[0]),  # longest first: less padding, OOM shows early
            group_fn=lambda x: x[2],
            group_by="gen_kwargs",
        )
        outputs: dict[int, str] = {}
        bar = tqdm(total=len(items), desc=f"{self.NAME} generate", disable=disable_tqdm or self.rank != 0)
        for batch in collator.get_batched(n=self.batch_size):
            opts = self.request_options(batch[0][2])
            if opts["repair"] is not None:
                texts = self._repair_batch([requests[i].args[0] for i, _, _ in batch], opts)
            else:
                texts = self._generate_batch(
                    [ctx for _, ctx, _ in batch], opts, prompts=[prompts[i] for i, _, _ in batch]
                )
            for (i, _, _), text in zip(batch, texts):
                outputs[i] = text
            bar.update(len(batch))
        bar.close()
        self._warn_truncated()
        results = []
        last_real: dict[int, str] = {}
        for i, req in enumerate(requests):
            if padding[i]:
                results.append(last_real[id(req)])
            else:
                results.append(outputs[i])
                last_real[id(req)] = outputs[i]
                self.cache_hook.add_partial("generate_until", req.args, outputs[i])
        return results

    def _row_seeds(self, contexts: list[list[int]], opts: dict) -> tuple[list[int], Any]:
        """(one seed per row, the device of the rows' generators): by default each row's seed is
        derived from the run's ``seed`` and its own prompt ids (recorded as ``sample_seed``)."""
        from dslbench.diffusion.rng import prompt_seed

        seeds = [prompt_seed(c, self.args["seed"]) for c in contexts]
        return seeds, self.device if self.RNG_ON_MODEL_DEVICE else "cpu"

    def _sample_recorded(self, prompt_ids, prompt_mask, opts: dict, generators) -> SampleResult:
        """``_sample`` on one batch, with the prompt cache's record when one was used."""
        self._cache_seam = None
        with torch.inference_mode():  # no autograd bookkeeping: the sampler's tensors never need it
            result = self._sample(prompt_ids, prompt_mask, opts, generators)
        if self._cache_seam is not None:
            result.extra.update(self._cache_seam.record())
            self._cache_seam = None  # its keys / values belong to this batch only
        return result

    def _sample_rows(self, prompt_ids, prompt_mask, opts: dict, generators) -> SampleResult:
        """``batch_invariant``: each row decoded alone, its left padding dropped (the rows' own
        generators, as in a batch), so its logits are those of a batch of one; one result back.
        Each row's calls and record are its own (``nfe`` per row, ``extra`` per row)."""
        results = []
        for row in range(prompt_ids.shape[0]):
            ids = prompt_ids[row : row + 1, prompt_mask[row].bool()]
            results.append(self._sample_recorded(ids, torch.ones_like(ids), opts, generators[row : row + 1]))
        nfe = tuple(r.nfe if isinstance(r.nfe, int) else r.nfe[0] for r in results)
        row_extra = [{**r.extra, **(r.row_extra[0] if r.row_extra else {}), "batch_invariant": True} for r in results]
        # rows of a sampler with adaptive length (DiffusionGemma's canvases) may differ in width:
        # padded with EOS, a special token, so neither the text nor the token count changes
        width = max(r.tokens.shape[1] for r in results)
        eos = self.denoiser.eos_id if getattr(self.denoiser, "eos_id", None) is not None else self.info.eos_id
        tokens = torch.cat([F.pad(r.tokens, (0, width - r.tokens.shape[1]), value=eos) for r in results])
        return SampleResult(tokens, nfe, {}, row_extra)

    def _generate_batch(self, contexts: list[list[int]], opts: dict, prompts: list[str] | None = None) -> list[str]:
        """Decode one batch. Each row draws from its own generator, seeded from the model arg
        ``seed`` and the row's own prompt token ids (:func:`dslbench.diffusion.rng.prompt_seed`),
        so a document's sample is the same whatever batch, ``--limit`` or rank it is decoded in.
        ``prompts``: the prompt strings (to name the text dropped from an over-long prompt)."""
        from dslbench.diffusion.rng import row_generators

        gen_length = opts["gen_length"]
        unconditional = opts.get("prompt_format") == UNCONDITIONAL
        budget = self.max_length - gen_length
        if budget < (0 if unconditional else 1):
            raise ValueError(f"gen_length={gen_length} leaves no room for a prompt within max_length={self.max_length}")
        cuts = [self._cut_range(len(c), budget) for c in contexts]
        # unconditional rows have no prompt ids: each is seeded from its sample's name instead
        seed_keys = [list(p.encode("utf-8")) for p in prompts] if unconditional and prompts is not None else contexts
        seeds, rng_device = self._row_seeds(seed_keys, opts)
        dropped_text = [
            self._dropped_text(prompts[i], contexts[i], *cut) if prompts is not None else ""
            for i, cut in enumerate(cuts)
        ]
        fitted = [c[:start] + c[stop:] for c, (start, stop) in zip(contexts, cuts)]
        counts = getattr(self, "_truncated", None) or [0, 0]
        self._truncated = [counts[0] + sum(stop > start for start, stop in cuts), counts[1] + len(cuts)]
        prompt_ids, prompt_mask = self._left_pad(fitted)
        generators = row_generators(seeds, device=rng_device)
        start = time.perf_counter()
        if self.args["batch_invariant"] and len(contexts) > 1:
            result = self._sample_rows(prompt_ids, prompt_mask, opts, generators)
        else:
            result = self._sample_recorded(prompt_ids, prompt_mask, opts, generators)
        decoded = [self._decode(row, opts.get("response_cut")) for row in result.tokens]
        seconds = (time.perf_counter() - start) / len(contexts)
        texts = []
        for row, (text, n_tokens) in enumerate(decoded):
            text = self._cut_until(text, opts["until"])
            if opts["return_stats"]:
                stats = {
                    "backend": self.NAME,
                    "nfe": result.nfe[row] if isinstance(result.nfe, tuple) else result.nfe,
                    "gen_tokens": n_tokens,
                    "gen_length": gen_length,
                    "seconds": seconds,
                    "batch_size": len(contexts),
                    "response_cut": opts.get("response_cut") or self.args["response_cut"],
                    "rank": self.rank,
                    "world_size": self.world_size,
                    "sample_seed": seeds[row],
                    "prompt_tokens": len(fitted[row]),
                    "prompt_tokens_dropped": cuts[row][1] - cuts[row][0],
                    "prompt_dropped_text": dropped_text[row],
                    **result.extra,
                    **(result.row_extra[row] if result.row_extra else {}),
                }
                if unconditional:  # the whole span's ids: the released per-sample token entropy reads them
                    stats["gen_ids"] = result.tokens[row].tolist()
                text = attach_stats(text, stats)
            texts.append(text)
        return texts


