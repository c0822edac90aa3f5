"""Approximate prompt cache (as in Fast-dLLM's prefix KV cache), as a wrapper of the denoiser seam.

A diffusion sampler re-reads the whole canvas (prompt + generated span) on every call. With a
long prompt most of that work recomputes the prompt, whose inputs never change during a
generation. :class:`PromptCachedDenoiser` runs the first call of a generation in full, keeps
the prompt's per-layer keys / values, and answers later calls by running only the generated
positions against them.

The approximation: under bidirectional attention the prompt's hidden states depend on the
generated tokens too, so cached keys / values go stale as the span evolves (the prompt no
longer "sees" it). ``refresh_every=N`` re-runs a full call every N calls of a cache entry
(N = 1 is exact: every call is full). The generated positions themselves always see the whole
canvas, and each call, full or cached, counts exactly one NFE on the wrapped seam's counter.

Cache entries are keyed by the prompt's input embeddings and attention mask, so a call whose
prompt differs (CFG's prompt-masked unconditional copy) gets its own entry instead of the
conditional prompt's keys / values; a prompt that changes under the cache can never be served
stale keys of another prompt. Returned logits cover positions ``logits_from..`` (the whole
canvas by default; samplers ask for the generated rows only); prompt rows, when asked for, come
from the entry's last full call. Use one wrapper per generation batch (the backends do).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dslbench.diffusion.denoiser import check_logits_from

MAX_ENTRIES = 2  # the conditional prompt and CFG's prompt-masked copy


@dataclass
class _Entry:
    prompt: torch.Tensor  # inputs_embeds[:, :P] at caching time (the key)
    mask: torch.Tensor | None  # attention mask at caching time (part of the key)
    kv: object  # the model's prefix keys / values (dslbench.models.llada.PrefixKV)
    prompt_logits: torch.Tensor | None  # [B, P, V] of the last full call, None when it skipped them
    calls: int = 0  # calls served by this entry, full and cached


def supports_prompt_cache(denoiser) -> bool:
    """Whether ``denoiser`` wraps a network with the prefix-cache forward (not Dream's shifted logits)."""
    model = getattr(denoiser, "model", None)
    return bool(getattr(model, "supports_prefix_cache", False)) and not getattr(denoiser, "shift_logits", False)


class PromptCachedDenoiser:
    """The seam of ``inner`` (a :class:`~dslbench.diffusion.denoiser.ModelDenoiser` or
    :class:`~dslbench.diffusion.dsl_denoiser.DSLDenoiser`) with an approximate prompt cache for
    one generation whose first ``prompt_len`` canvas positions are the prompt.

    Everything but ``forward`` (``embed``, ``convert``, ``noise_embedding``, ids ...) is the inner
    seam's; ``nfe`` *is* the inner counter, so a sampler or backend reading either sees one count.
    """

    def __init__(self, inner, prompt_len: int, refresh_every: int = 0) -> None:
        if not supports_prompt_cache(inner):
            raise ValueError(
                f"prompt cache: {type(getattr(inner, 'model', inner)).__name__} has no prefix-cache forward "
                "(supported: dslbench's native LLaDA-format model)"
            )
        if prompt_len < 1:
            raise ValueError(f"prompt cache: prompt_len={prompt_len} must be >= 1")
        if refresh_every < 0:
            raise ValueError(f"prompt cache: refresh_every={refresh_every} must be >= 0 (0: only the first call)")
        self.inner = inner
        self.prompt_len = int(prompt_len)
        self.refresh_every = int(refresh_every)
        self.full_calls = 0
        self.cached_calls = 0
        self._entries: list[_Entry] = []

    def __getattr__(self, name: str):
        # Only reached for attributes not set on the wrapper: the inner seam's interface.
        return getattr(self.__dict__["inner"], name)

    @property
    def nfe(self) -> int:
        return self.inner.nfe

    @nfe.setter
    def nfe(self, value: int) -> None:
        self.inner.nfe = value

    def reset(self) -> None:
        """Forget every cached prompt (a new generation batch)."""
        self._entries.clear()

    def forward(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, logits_from: int = 0
    ) -> torch.Tensor:
        P, length = self.prompt_len, inputs_embeds.shape[1]
        if length <= P:
            raise ValueError(f"prompt cache: canvas of {length} positions has no room after a {P}-token prompt")
        check_logits_from(logits_from, length)
        self.inner.nfe += 1  # one network evaluation, full or cached
        prompt = inputs_embeds[:, :P]
        entry = self._lookup(prompt, attention_mask)
        model, vocab = self.inner.model, self.inner.vocab_size
        wants_prompt_rows = logits_from < P
        stale = entry is not None and self.refresh_every and entry.calls % self.refresh_every == 0
        if entry is None or stale or (wants_prompt_rows and entry.prompt_logits is None):
            out = model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, keep_prefix=P,
                        logits_to_keep=length - logits_from if logits_from else 0)
            logits = out.logits[..., :vocab]
            if entry is None:
                entry = _Entry(prompt.detach().clone(), None if attention_mask is None else attention_mask.clone(), None, None)
                self._entries = (self._entries + [entry])[-MAX_ENTRIES:]
            entry.kv, entry.prompt_logits = out.prefix_kv, (logits[:, :P] if logits_from == 0 else None)
            self.full_calls += 1
        else:
            out = model(inputs_embeds=inputs_embeds[:, P:], attention_mask=attention_mask, prefix_kv=entry.kv,
                        logits_to_keep=length - logits_from if logits_from > P else 0)
            logits = out.logits[..., :vocab]
            if wants_prompt_rows:
                logits = torch.cat([entry.prompt_logits[:, logits_from:], logits], dim=1)
            self.cached_calls += 1
        entry.calls += 1
        for hook in getattr(self.inner, "on_forward", ()):
            hook(logits)
        return logits

    def _lookup(self, prompt: torch.Tensor, mask: torch.Tensor | None) -> _Entry | None:
        for entry in self._entries:
            same_mask = (mask is None and entry.mask is None) or (
                mask is not None and entry.mask is not None and torch.equal(mask, entry.mask)
            )
            if same_mask and torch.equal(prompt, entry.prompt):
                return entry
        return None

    def record(self) -> dict:
        """What a per-sample record says about the cache."""
        return {
            "prompt_cache": True,
            "prompt_cache_refresh": self.refresh_every,
            "prompt_cache_full_calls": self.full_calls,
            "prompt_cache_cached_calls": self.cached_calls,
        }


__all__ = ["PromptCachedDenoiser", "supports_prompt_cache"]
