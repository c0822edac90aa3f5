"""The evaluator causal LM behind GenPPL and MAUVE (GPT-2-large as published; any causal LM by hub
id or local folder).

- :func:`load_evaluator` loads it once per process per ``(name, device)``; ``device=None`` is the
  device the dslbench backends announced with :func:`set_default_device` (else CPU).
- :meth:`Evaluator.score`: per text ``(mean token NLL, n_tokens)`` on the released 128-word cut,
  exactly HF's ``model(ids, labels=ids).loss``, batched; ``None`` for a text that is not scored.
- :meth:`Evaluator.score_chunked`: per text ``(summed NLL, scored tokens)`` as ReMDM's
  ``compute_generative_perplexity`` scores unconditional samples (whole text, chunks of the
  evaluator's context, EOS rule), for a token-pooled GenPPL.
- :meth:`Evaluator.features`: MAUVE features, computed by mauve-text's own featurizer.
- :func:`mauve_score` / :func:`released_mauve`: MAUVE on those features (mauve-text defaults).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

DEFAULT_EVALUATOR = "gpt2-large"
_default_device: Any = None
_cache: dict[tuple[str, str], "Evaluator"] = {}


def set_default_device(device) -> None:
    """The device ``load_evaluator(device=None)`` uses: the backends call this with the model's."""
    global _default_device
    _default_device = device


def _resolve_device(device):
    import torch

    return torch.device(device if device is not None else (_default_device or "cpu"))


def load_evaluator(name_or_path: str = DEFAULT_EVALUATOR, device=None) -> "Evaluator":
    """The evaluator (eval mode, float32), loaded at most once per process per ``(name, device)``.

    Raises ValueError (one line) when the model is neither a local folder nor loadable from the hub
    or its cache (e.g. offline)."""
    dev = _resolve_device(device)
    local = os.path.isdir(os.path.expanduser(str(name_or_path)))
    name = os.path.realpath(os.path.expanduser(str(name_or_path))) if local else str(name_or_path)
    key = (name, str(dev))
    if key not in _cache:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
            model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
        except OSError as err:
            if local:
                raise  # a broken local folder: its own error is the useful one
            raise ValueError(
                f"evaluator model {name!r} is not a local folder and cannot be loaded from the hub or its "
                f"cache (offline?); point at a local copy with --metadata '{{\"ppl_model\": \"/path/to/folder\"}}'"
            ) from err
        _cache[key] = Evaluator(name, model.to(dev).eval(), tokenizer, dev)
    return _cache[key]


@dataclass
class Evaluator:
    name: str
    model: Any
    tokenizer: Any
    device: Any

    @property
    def pad_id(self) -> int:
        # Any id works under right padding (masked out, after the real tokens); pad, else eos, else 0.
        for tid in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if tid is not None:
                return int(tid)
        return 0

    def score(self, texts: Sequence[str], max_words: int = 128, max_tokens: int = 1024,
              batch_size: int = 16) -> list[tuple[float, int] | None]:
        """Per text ``(mean NLL over its n-1 shifted positions, n tokens)`` on
        ``" ".join(text.split()[:max_words])`` tokenized with the tokenizer's defaults (truncated
        at ``max_tokens``); ``None`` when the cut is empty or has < 2 tokens (the released skips)."""
        out: list[tuple[float, int] | None] = [None] * len(texts)
        encoded = {}
        for i, text in enumerate(texts):
            cut = " ".join(text.split()[:max_words])
            if cut:
                ids = self.tokenizer(cut, truncation=True, max_length=max_tokens)["input_ids"]
                if len(ids) >= 2:
                    encoded[i] = ids
        order = sorted(encoded, key=lambda i: len(encoded[i]), reverse=True)  # similar lengths share a batch
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            for i, nll in zip(rows, self._mean_nll([encoded[i] for i in rows])):
                out[i] = (nll, len(encoded[i]))
        return out

    def _mean_nll(self, rows: list[list[int]]) -> list[float]:
        import torch
        import torch.nn.functional as F

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):  # right padding: real tokens keep positions 0..n-1
            ids[k, :len(r)] = torch.tensor(r)
            mask[k, :len(r)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()  # no KV cache to build
            nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
            keep = mask[:, 1:].float()
            return ((nll * keep).sum(1) / keep.sum(1)).tolist()

    @property
    def context_size(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None) or 1024)

    def score_chunked(self, texts: Sequence[str], max_length: int,
                      batch_size: int = 8) -> list[tuple[float, int]]:
        """Per text ``(summed NLL, scored tokens)`` as kuleshov-group/remdm's
        ``compute_generative_perplexity`` scores them; GenPPL = exp(sum of NLLs / sum of tokens).

        All texts are tokenized together (truncated at ``max_length``, right-padded with EOS to the
        longest), split into chunks of the evaluator's context, each chunk scored alone with no
        BOS (its first token is never a target). A target counts when it is not EOS, or when it is
        the chunk's first EOS: so a text shorter than the longest also scores the EOS that the
        padding puts after it, as released. Departure: the chunk is the evaluator's own context
        (:attr:`context_size`), where the release hard-codes 1,024 (GPT-2's, so equal there)."""
        import torch

        if not texts:
            return []
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ValueError(f"evaluator {self.name}: its tokenizer has no EOS token, which the ReMDM GenPPL needs")
        rows = [self.tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
        width = max(max(len(r) for r in rows), 1)
        ids = torch.full((len(rows), width), eos, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):
            ids[k, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[k, :len(r)] = 1
        out = []
        for start in range(0, len(rows), batch_size):
            sums = torch.zeros(min(batch_size, len(rows) - start), dtype=torch.float64)
            counts = torch.zeros_like(sums, dtype=torch.long)
            for chunk, chunk_mask in zip(torch.split(ids[start:start + batch_size], self.context_size, dim=-1),
                                         torch.split(mask[start:start + batch_size], self.context_size, dim=-1)):
                nll, keep = self._chunk_nll(chunk, chunk_mask, eos)
                sums += torch.where(keep.bool(), nll, 0.0).sum(-1).double().cpu()  # an all-padding row's NaN is no target
                counts += keep.sum(-1).cpu()
            out += [(float(s), int(c)) for s, c in zip(sums, counts)]
        return out

    def _chunk_nll(self, chunk, chunk_mask, eos: int):
        """Per-target NLL of one chunk and the released mask (non-EOS targets and the first EOS)."""
        import torch
        import torch.nn.functional as F

        chunk, chunk_mask = chunk.to(self.device), chunk_mask.to(self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=chunk, attention_mask=chunk_mask, use_cache=False).logits.float()
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), chunk[:, 1:], reduction="none")
        first_eos = (chunk == eos).cumsum(-1) == 1
        keep = (first_eos | (chunk != eos))[:, 1:]
        return nll, keep.long()

    def tokenize_for_mauve(self, texts: Sequence[str], max_tokens: int = 256) -> list:
        """Exactly mauve-text's ``get_features_from_input`` tokenization: ``(1, n)`` LongTensors."""
        return [self.tokenizer.encode(t, return_tensors="pt", truncation=True, max_length=max_tokens)
                for t in texts]

    def features(self, texts: Sequence[str], max_tokens: int = 256, batch_size: int = 16):
        """MAUVE features ``(len(texts), hidden)``: the last layer's hidden state at each text's final
        token, by mauve-text's own ``featurize_tokens_from_model``. The backbone (``base_model``) is
        what mauve's ``AutoModel`` loads: the same last hidden state, without computing logits."""
        from mauve.utils import featurize_tokens_from_model

        tokens = self.tokenize_for_mauve(texts, max_tokens)
        with warnings.catch_warnings():  # mauve-text's own call style; nothing a user can act on
            warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
            feats = featurize_tokens_from_model(self.model.base_model, tokens, batch_size, name="evaluator")
        return feats.float().numpy()


def mauve_score(p_texts: Sequence[str], q_texts: Sequence[str], evaluator: Evaluator,
                max_text_length: int = 256, batch_size: int = 16, **kw) -> float:
    """``mauve.compute_mauve(...).mauve`` on the evaluator's features; ``kw`` go to compute_mauve
    (its defaults otherwise: seed 25, ...). Empty strings are dropped, as mauve's text path does."""
    import mauve

    from dslbench.console import filtered_stderr

    p = evaluator.features([t for t in p_texts if len(t) > 0], max_text_length, batch_size)
    q = evaluator.features([t for t in q_texts if len(t) > 0], max_text_length, batch_size)
    with filtered_stderr():  # faiss's "clustering N points" line (C stderr) on the tasks' small samples
        return float(mauve.compute_mauve(p_features=p, q_features=q, **kw).mauve)


def released_mauve(generations: Sequence[str], references: Sequence[str], evaluator: Evaluator,
                   max_text_length: int = 256, **kw) -> float:
    """MAUVE with the released pairing: p = the non-empty references among the FIRST n_valid
    references (n_valid = number of non-empty generations), q = that many non-empty generations.

    Quirk kept on purpose: the references are the first n_valid in document order, not those of
    the non-empty generations. NaN (no figure) when either side has < 2 texts: mauve cannot run."""
    valid = [g for g in generations if g.strip()]
    ref_valid = [r for r in references[:len(valid)] if r.strip()]
    q = valid[:len(ref_valid)]
    if len(ref_valid) < 2 or len(q) < 2:
        return math.nan
    return mauve_score(ref_valid, q, evaluator, max_text_length=max_text_length, **kw)
