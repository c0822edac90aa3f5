"""Repair requests (tasks/repair): the context is a clean passage that the backend corrupts in its
own token space, repairs in its repair mode (by default the published protocol: one forward pass,
argmax everywhere) and scores through the per-sample record."""

from __future__ import annotations

import logging
import time

import torch

from dslbench.harness.result import SampleResult
from dslbench.metrics.sample_stats import attach_stats

log = logging.getLogger(__name__)

# Generation kwargs of a repair request.
REPAIR_KEYS = {"repair_mode", "repair_rate", "repair_seed", "repair_nfe"}


def repair_options(gen_kwargs: dict) -> dict | None:
    """The repair spec of a request's generation kwargs (validated), or None for a generation request."""
    if gen_kwargs.get("repair_mode") is None:
        return None
    from dslbench.diffusion.corruption import CORRUPTION_MODES

    mode = gen_kwargs["repair_mode"]
    if mode not in CORRUPTION_MODES:
        raise ValueError(f"repair_mode={mode!r}; allowed: {', '.join(CORRUPTION_MODES)}")
    return {
        "mode": mode,
        "rate": float(gen_kwargs.get("repair_rate", 0.1)),
        "seed": int(gen_kwargs.get("repair_seed", 1234)),
        "nfe": int(gen_kwargs.get("repair_nfe", 1)),
    }


class RepairMixin:
    """``_repair_batch`` for the backend's ``generate_until``; a backend with its own repair mode
    overrides ``_repair``."""

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
