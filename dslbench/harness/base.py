"""Shared lm-eval plumbing of the dslbench backends.

A backend subclass declares its sampler arguments and implements ``_sample`` (prompt batch ->
generated token ids, measured NFE). Everything else lives here once: model-arg parsing, model
loading, chat template, batching with lm-eval's ``Collator``, per-request generation kwargs,
EOS / ``until`` cuts, per-sample efficiency records, the Monte-Carlo log-likelihood, and the
data-parallel hooks lm-eval >= 0.4.12 calls.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from lm_eval.api.model import LM
from lm_eval.models.utils import Collator
from tqdm import tqdm

from dslbench.diffusion.denoiser import ModelDenoiser
from dslbench.harness.args import AT_LEAST_1, Arg, Range, convert, parse_args
from dslbench.harness.stats import attach_stats

log = logging.getLogger(__name__)

COMMON_ARGS: dict[str, Arg] = {
    "pretrained": Arg(None, str, help="local checkpoint directory or hub id"),
    "dtype": Arg("auto", str, ("auto", "float32", "bfloat16", "float16"), "auto: bf16 on GPU, fp32 on CPU"),
    "device": Arg("auto", str, help="auto, cpu, cuda, cuda:N"),
    "batch_size": Arg(1, int, help="prompts decoded together", valid=AT_LEAST_1),
    "max_batch_size": Arg(None, int, help="accepted for lm-eval compatibility; batch_size is used", valid=AT_LEAST_1),
    "seed": Arg(1234, int, help="seed of every random draw of the sampler"),
    "max_length": Arg(None, int, help="max prompt + generation tokens (default: the model's max_sequence_length)", valid=Range(2)),
    "response_cut": Arg("eos", str, ("eos", "none"), "eos: text ends at the first EOS/EoT; none: whole span, special tokens skipped (published decoding)"),
    "mc_num": Arg(128, int, help="Monte-Carlo samples for loglikelihood", valid=AT_LEAST_1),
    "mc_batch_size": Arg(32, int, help="Monte-Carlo samples per forward for loglikelihood", valid=AT_LEAST_1),
    "prompt_cache": Arg(False, bool, help="approximate prompt K/V cache for generation (Fast-dLLM style): the prompt no longer sees the evolving span"),
    "prompt_cache_refresh": Arg(0, int, help="with prompt_cache: a full pass every N calls (0: only the first call of a generation)"),
}

# Generation kwargs every backend understands besides its sampler args.
_REQUEST_KEYS = {"until", "max_gen_toks", "do_sample", "return_stats"}
# Repair requests (tasks/repair): the context is a clean passage that the backend corrupts in its
# own token space, repairs in its repair mode and scores through the per-sample record.
_REPAIR_KEYS = {"repair_mode", "repair_rate", "repair_seed", "repair_nfe"}


@dataclass
class SampleResult:
    tokens: torch.Tensor  # [B, gen_length] generated span
    # denoiser calls made for this batch (each call evaluates every row once), or one count per
    # row when rows stop at different times (adaptive samplers: the calls each row needed)
    nfe: int | tuple[int, ...]
    extra: dict


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"model arg device={device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        # lm-eval's CLI passes device=cuda:0 by default; fall back like its own HF backend does.
        log.warning("device=%s requested but CUDA is not available: using cpu", device)
        return torch.device("cpu")
    return dev


def _launched_world_size() -> int:
    """Processes of this launch, from the launcher's environment (torchrun sets WORLD_SIZE;
    mpirun, which ``accelerate launch --cpu --mpirun_hostfile`` uses, its own variables)."""
    import os

    for var in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        if os.environ.get(var, "").strip().isdigit():
            return int(os.environ[var])
    return 1


class DiffusionBackend(LM):
    NAME = "diffusion"
    SAMPLER_ARGS: dict[str, Arg] = {}

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
        self._setup_distributed()
        self._load(self.args["pretrained"])
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

    # ------------------------------------------------------------------ set-up
    def _setup_distributed(self) -> None:
        """Data parallel under ``torchrun`` / ``accelerate launch``: each rank decodes its share.

        accelerate picks a distributed backend for a launched process only on an accelerator or
        when told ``cpu=True``; without it, every process of a CPU launch believed it was rank 0
        of 1 and decoded every document. So the resolved device decides: CPU ranks meet over gloo
        (MPI under mpirun), GPU ranks over NCCL, each on its own GPU."""
        self.accelerator = None
        device = _resolve_device(self.args["device"])
        launched = _launched_world_size()
        if launched > 1:
            from accelerate import Accelerator

            self.accelerator = Accelerator(cpu=device.type == "cpu")
            self._rank = self.accelerator.process_index
            self._world_size = self.accelerator.num_processes
            if self._world_size != launched:
                raise RuntimeError(
                    f"{self.NAME}: launched as {launched} processes but accelerate set up "
                    f"{self._world_size} ({self.accelerator.distributed_type}); every process would decode "
                    "every document. Launch with torchrun --nproc_per_node N or accelerate launch --multi_gpu"
                )
            if device.type != "cpu":  # accelerate names CPU ranks cpu:N, which safetensors refuses
                device = self.accelerator.device
        self._device = device

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
    def device(self) -> torch.device:
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "tokenizer")).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.tokenizer, "chat_template", None) or ""

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"{self.NAME}: --apply_chat_template was given but {self.args['pretrained']} has no chat template"
            )
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size <= 1:
            return tensor
        return self.accelerator.gather(tensor)

    def gather_object(self, obj: Any, dst: int = 0) -> list | None:
        if self.world_size <= 1:
            return [obj]
        result = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj=obj, object_gather_list=result, dst=dst)
        return result

    def barrier(self) -> None:
        if self.world_size > 1:
            self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ tokenisation
    def _encode_context(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        # Chat templates already start with BOS; plain prompts get one, as in pre-training.
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return ids

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.info.eos_id
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r):] = 1
        return ids.to(self.device), mask.to(self.device)

    # ------------------------------------------------------------------ per-request options
    def request_options(self, gen_kwargs: dict) -> dict:
        """Backend defaults overridden by a task's generation kwargs (validated)."""
        gen_kwargs = dict(gen_kwargs or {})
        allowed = set(self.SAMPLER_ARGS) | _REQUEST_KEYS | _REPAIR_KEYS
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
        opts["repair"] = None
        if gen_kwargs.get("repair_mode") is not None:
            from dslbench.diffusion.corruption import CORRUPTION_MODES

            mode = gen_kwargs["repair_mode"]
            if mode not in CORRUPTION_MODES:
                raise ValueError(f"repair_mode={mode!r}; allowed: {', '.join(CORRUPTION_MODES)}")
            opts["repair"] = {
                "mode": mode,
                "rate": float(gen_kwargs.get("repair_rate", 0.1)),
                "seed": int(gen_kwargs.get("repair_seed", 1234)),
                "nfe": int(gen_kwargs.get("repair_nfe", 1)),
            }
        return opts

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

    def _decode(self, row: torch.Tensor) -> tuple[str, int]:
        """Text of one generated span and its token count (before EOS when cutting there)."""
        ids = row.tolist()
        if self.args["response_cut"] == "eos":
            ends = [ids.index(e) for e in self.denoiser.eos_ids if e in ids]
            if ends:
                ids = ids[: min(ends)]
        special = set(self.tokenizer.all_special_ids)
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
        contexts = [self._encode_context(req.args[0]) for _, req in real]
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
                    [ctx for _, ctx, _ in batch], opts, prompts=[requests[i].args[0] for i, _, _ in batch]
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

    @staticmethod
    def _cut_range(n_tokens: int, budget: int, tail: int = 32) -> tuple[int, int]:
        """The token positions ``[start, stop)`` that :meth:`_fit_prompt` drops (empty when it fits)."""
        if n_tokens <= budget:
            return n_tokens, n_tokens
        tail = min(tail, budget // 4)
        return budget - tail, n_tokens - tail

    @classmethod
    def _fit_prompt(cls, ids: list[int], budget: int, tail: int = 32) -> list[int]:
        """Cut an over-long prompt in the middle: the head holds BOS, the chat header and the
        instruction, the tail the end of the turn and the assistant header; the tokens dropped
        are the end of the source document (their count goes into the per-sample record)."""
        start, stop = cls._cut_range(len(ids), budget, tail)
        return ids[:start] + ids[stop:]

    def _dropped_text(self, prompt: str, ids: list[int], start: int, stop: int) -> str:
        """The exact characters of ``prompt`` behind the dropped token positions ``[start, stop)``
        of ``ids`` (its encoding; a BOS we prepended has no characters). Metrics use it to score
        against the source the model saw; a slow tokenizer without offsets decodes the slice."""
        if start >= stop:
            return ""
        try:
            offsets = self.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        except (NotImplementedError, ValueError, KeyError):
            return self.tokenizer.decode(ids[start:stop], skip_special_tokens=True)
        shift = len(ids) - len(offsets)  # 1 when _encode_context prepended BOS
        return prompt[offsets[start - shift][0] : offsets[stop - 1 - shift][1]]

    def _warn_truncated(self) -> None:
        """One warning per run (per generate_until call) with the count of cut prompts."""
        counts = getattr(self, "_truncated", None)
        if counts and counts[0]:
            log.warning(
                "%s: %d of %d prompts were longer than max_length=%d minus gen_length and were cut in "
                "the middle (the end of the source document dropped); each sample's record holds "
                "prompt_tokens_dropped and the task reports truncated_rate",
                self.NAME, counts[0], counts[1], self.max_length,
            )
        self._truncated = [0, 0]

    def _generate_batch(self, contexts: list[list[int]], opts: dict, prompts: list[str] | None = None) -> list[str]:
        """Decode one batch. Each row draws from its own generator, seeded from the model arg
        ``seed`` and the row's own prompt token ids (:func:`dslbench.diffusion.rng.prompt_seed`),
        so a document's sample is the same whatever batch, ``--limit`` or rank it is decoded in.
        ``prompts``: the prompt strings (to name the text dropped from an over-long prompt)."""
        from dslbench.diffusion.rng import prompt_seed, row_generators

        gen_length = opts["gen_length"]
        budget = self.max_length - gen_length
        if budget < 1:
            raise ValueError(f"gen_length={gen_length} leaves no room for a prompt within max_length={self.max_length}")
        cuts = [self._cut_range(len(c), budget) for c in contexts]
        seeds = [prompt_seed(c, self.args["seed"]) for c in contexts]
        dropped_text = [
            self._dropped_text(prompts[i], contexts[i], *cut) if prompts is not None else ""
            for i, cut in enumerate(cuts)
        ]
        fitted = [c[:start] + c[stop:] for c, (start, stop) in zip(contexts, cuts)]
        counts = getattr(self, "_truncated", None) or [0, 0]
        self._truncated = [counts[0] + sum(stop > start for start, stop in cuts), counts[1] + len(cuts)]
        prompt_ids, prompt_mask = self._left_pad(fitted)
        generators = row_generators(seeds)
        start = time.perf_counter()
        self._cache_seam = None
        with torch.inference_mode():  # no autograd bookkeeping: the sampler's tensors never need it
            result = self._sample(prompt_ids, prompt_mask, opts, generators)
        if self._cache_seam is not None:
            result.extra.update(self._cache_seam.record())
            self._cache_seam = None  # its keys / values belong to this batch only
        decoded = [self._decode(row) for row in result.tokens]
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
                    "response_cut": self.args["response_cut"],
                    "rank": self.rank,
                    "world_size": self.world_size,
                    "sample_seed": seeds[row],
                    "prompt_tokens": len(fitted[row]),
                    "prompt_tokens_dropped": cuts[row][1] - cuts[row][0],
                    "prompt_dropped_text": dropped_text[row],
                    **result.extra,
                }
                text = attach_stats(text, stats)
            texts.append(text)
        return texts

    # ------------------------------------------------------------------ repair
    def _strip_chat(self, text: str) -> str:
        """The passage itself, if lm-eval wrapped it in the chat template (--apply_chat_template)."""
        if not getattr(self.tokenizer, "chat_template", None):
            return text
        sentinel = "\x00dslbench-passage\x00"
        wrapped = self.apply_chat_template([{"role": "user", "content": sentinel}])
        head, _, tail = wrapped.partition(sentinel)
        if head and text.startswith(head) and text.endswith(tail):
            return text[len(head): len(text) - len(tail)]
        return text

    def _repair_corruption_inputs(self, mode: str) -> dict:
        """What ``corrupt`` draws from, built once per backend: the released random-id range
        (``random``) or the unit-normalised input embeddings (``semantic``)."""
        from dslbench.diffusion.corruption import random_replacement_ids, unit_rows

        if getattr(self, "_repair_inputs", None) is None:
            self._repair_inputs: dict[str, dict] = {}
        cache = self._repair_inputs
        if mode not in cache:
            if mode == "random":
                vocab = min(len(self.tokenizer), self.info.vocab_size)
                special = set(self.tokenizer.all_special_ids) | ({self.info.mask_id} - {None})  # uniform-state models have no mask
                cache[mode] = {"random_ids": random_replacement_ids(vocab, special)}
            else:
                cache[mode] = {"unit_embeddings": unit_rows(self.model.get_input_embeddings().weight)}
        return cache[mode]

    def _repair(self, ids: torch.Tensor, mask: torch.Tensor, editable: torch.Tensor, opts: dict) -> SampleResult:
        """The published repair protocol: one forward on the corrupted ids' token embeddings,
        argmax at every position; ``repair_nfe`` > 1 passes is the iterative variant."""
        from dslbench.diffusion.repair import argmax_repair, repair_protocol

        passes = opts["repair"]["nfe"]
        repaired, nfe = argmax_repair(self.denoiser, ids, mask, editable, passes=passes)
        return SampleResult(repaired, nfe, {"repair_protocol": repair_protocol(passes=passes), "repair_passes": passes})

    def _repair_batch(self, contexts: list[str], opts: dict) -> list[str]:
        """Corrupt each passage (as the released evaluation does: its own tokens, no BOS in front),
        repair the batch in the backend's repair mode, attach the per-passage record."""
        from dslbench.diffusion.corruption import corrupt, document_seed

        spec = opts["repair"]
        draw_from = self._repair_corruption_inputs(spec["mode"])
        rows, records = [], []
        for context in contexts:
            passage = self._strip_chat(context)
            ids = self.tokenizer(passage, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError(f"{self.NAME}: a repair passage has no tokens (passage {passage!r}); nothing to corrupt")
            dropped = max(0, len(ids) - self.max_length)
            if dropped:
                log.warning("%s: repair passage of %d tokens cut to max_length=%d (recorded as passage_tokens_dropped)",
                            self.NAME, len(ids), self.max_length)
            original = torch.tensor(ids[: self.max_length], dtype=torch.long)
            corrupted, positions = corrupt(
                original, spec["rate"], spec["mode"], seed=document_seed(passage, spec["seed"]), **draw_from
            )
            rows.append(corrupted.tolist())
            records.append((original, corrupted, positions, dropped))
        ids, mask = self._left_pad(rows)
        width = ids.shape[1]
        editable = mask.bool()
        start = time.perf_counter()
        with torch.inference_mode():
            result = self._repair(ids, mask, editable, opts)
        if "repair_protocol" not in result.extra:
            raise RuntimeError(f"{self.NAME}: its repair mode does not name its repair_protocol")
        seconds = (time.perf_counter() - start) / len(contexts)
        texts = []
        for i, (original, corrupted, positions, dropped) in enumerate(records):
            repaired = result.tokens[i, width - len(original):].cpu()
            text = self.tokenizer.decode(repaired.tolist(), skip_special_tokens=True)
            stats = {
                "backend": self.NAME,
                "nfe": result.nfe,
                "seconds": seconds,
                "repair_mode": spec["mode"],
                "repair_rate": spec["rate"],
                "repair_seed": spec["seed"],
                "rank": self.rank,
                "world_size": self.world_size,
                "original_ids": original.tolist(),
                "corrupted_ids": corrupted.tolist(),
                "repaired_ids": repaired.tolist(),
                "corrupted_positions": positions.tolist(),
                "original_text": self.tokenizer.decode(original.tolist(), skip_special_tokens=True),
                "corrupted_text": self.tokenizer.decode(corrupted.tolist(), skip_special_tokens=True),
                "passage_tokens_dropped": dropped,
                **result.extra,
            }
            texts.append(attach_stats(text, stats) if opts["return_stats"] else text)
        return texts

    # ------------------------------------------------------------------ likelihood
    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        from dslbench.diffusion.elbo import is_greedy, mc_loglikelihood

        out = []
        generator = torch.Generator(device="cpu").manual_seed(self.args["seed"])
        for req in tqdm(requests, desc=f"{self.NAME} loglikelihood", disable=disable_tqdm or self.rank != 0):
            context, continuation = req.args
            # Tokenise the whole string once and split, so merges across the boundary match.
            whole = self._encode_context(context + continuation)
            prefix = self._encode_context(context) if context else whole[:1]
            target = whole[len(prefix):]
            if not target:
                raise ValueError(f"{self.NAME}: empty continuation for context {context[-40:]!r}")
            prefix_t = torch.tensor(prefix, device=self.device)
            target_t = torch.tensor(target, device=self.device)
            ll = mc_loglikelihood(
                self.denoiser, prefix_t, target_t,
                mc_num=self.args["mc_num"], batch_size=self.args["mc_batch_size"],
                cfg_scale=float(self.defaults.get("cfg", 0.0) or 0.0), generator=generator,
            )
            greedy = is_greedy(self.denoiser, prefix_t, target_t)
            out.append((float(ll), bool(greedy)))
            self.cache_hook.add_partial("loglikelihood", req.args, out[-1])
        return out

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError(
            f"{self.NAME}: loglikelihood_rolling (perplexity tasks) is not supported: a masked diffusion "
            "model gives only a Monte-Carlo bound on a sequence's likelihood, not token-by-token rolling "
            "log-probabilities; use generation or multiple-choice tasks"
        )
