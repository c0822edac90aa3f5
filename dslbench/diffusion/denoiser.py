"""The denoiser seam between models and samplers.

A sampler sees only this interface. Every ``forward`` call is one network function evaluation
(NFE) for every row of the batch, and is counted here, at the seam, so that reported budgets are
measured rather than assumed.

Samplers read the logits of the generated positions only; :func:`logits_from` asks a seam whose
``forward`` takes ``logits_from`` for those alone, so the output head (a ~126k-wide matmul per
position at LLaDA-8B size) skips the prompt, and slices the whole-canvas logits of any other seam.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import torch


@runtime_checkable
class Denoiser(Protocol):
    mask_id: int
    eos_id: int
    eos_ids: tuple[int, ...]  # every id that ends a response (EOS first, then end-of-turn, ...)
    vocab_size: int
    nfe: int  # forward calls so far

    def embed(self, ids: torch.Tensor) -> torch.Tensor: ...

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor: ...


@dataclass
class ModelDenoiser:
    """Wraps a network with ``get_input_embeddings()`` and ``forward(inputs_embeds=, attention_mask=)``.

    ``shift_logits`` handles Dream-format models, whose position i-1 predicts token i: the logits
    are shifted right by one so that, at the seam, position i always predicts token i.
    """

    model: torch.nn.Module
    mask_id: int
    eos_id: int
    eos_ids: tuple[int, ...]
    vocab_size: int
    shift_logits: bool = False
    never_predict: tuple[int, ...] = ()  # ids whose logits are -inf at the seam (MDLM's mask: its substitution parameterization)
    nfe: int = 0
    on_forward: list[Callable[[torch.Tensor], None]] = field(default_factory=list)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def forward(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, logits_from: int = 0
    ) -> torch.Tensor:
        """Logits ``[B, L - logits_from, V]`` of positions ``logits_from..L-1``, position i
        predicting token i. Models with ``supports_logits_to_keep`` run their head on those
        positions only (one more for a shifted model, whose position i reads output i-1)."""
        self.nfe += 1
        length = inputs_embeds.shape[1]
        check_logits_from(logits_from, length)
        wanted = length - logits_from + (1 if self.shift_logits and logits_from else 0)
        kwargs = {"logits_to_keep": wanted} if logits_from and getattr(self.model, "supports_logits_to_keep", False) else {}
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
        logits = out.logits if hasattr(out, "logits") else out
        logits = logits[:, logits.shape[1] - wanted :, : self.vocab_size]
        if self.never_predict:
            logits = logits.clone()
            logits[..., list(self.never_predict)] = float("-inf")
        if self.shift_logits:
            if logits_from:
                logits = logits[:, :-1]
            else:  # position 0 has no predecessor: it keeps its own output
                logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        for hook in self.on_forward:
            hook(logits)
        return logits

    def reset_count(self) -> int:
        n, self.nfe = self.nfe, 0
        return n


def check_logits_from(logits_from: int, length: int) -> None:
    """A seam's ``forward(..., logits_from)`` must leave at least one of the canvas's positions."""
    if not 0 <= logits_from < length:
        raise ValueError(f"logits_from={logits_from} must lie in [0, {length}) for a canvas of {length} positions")


def logits_from(denoiser, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, start: int) -> torch.Tensor:
    """One counted call's logits for positions ``start..L-1`` (``[B, L - start, V]``): asked of
    the seam when its ``forward`` takes ``logits_from``, sliced from the whole canvas otherwise
    (the signature, not an attribute, decides: a delegating wrapper must not inherit the claim)."""
    return logits_reader(denoiser, start)(inputs_embeds, attention_mask)


def logits_reader(denoiser, start: int) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """:func:`logits_from` with the seam's signature read once: ``(inputs_embeds, attention_mask)
    -> logits`` of positions ``start..L-1``, for a loop of calls on one seam (reading a signature
    costs tens of microseconds a call)."""
    forward = denoiser.forward
    if start and "logits_from" in inspect.signature(forward).parameters:
        return lambda inputs_embeds, attention_mask: forward(inputs_embeds, attention_mask, logits_from=start)
    if not start:
        return forward
    return lambda inputs_embeds, attention_mask: forward(inputs_embeds, attention_mask)[:, start:]
