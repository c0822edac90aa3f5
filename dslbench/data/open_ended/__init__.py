"""The released open-ended generation data (see README.md here): 200 instruction prompts and 200
WikiText-103 prefix / continuation pairs, checked against their published checksums on load, and
a seeded synthetic prefix set of the same shape for the embedded default."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dslbench.data.synth import make_summarization_examples

HERE = Path(__file__).resolve().parent
SHA256 = {
    "sde_prompts_200.json": "befcb6c864e90c9d8cb2478840aff706264f5a22a88b93239570efd947f7b8fc",
    "wikitext_prefix_200.json": "8b27c95a4ddb22c87a3590097d66e0ab82b560960d412e58b703ebcc59f3cd3f",
}
SYNTH_PREFIX_SENTENCES = 2  # the subject line and the first sentence make the prefix


def _load(name: str) -> list[dict]:
    path = HERE / name
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256[name]:
        raise ValueError(f"{path}: sha256 {digest} differs from the released file's {SHA256[name]}; reinstall dslbench")
    return json.loads(data)


def load_prompts() -> list[dict]:
    """``{"id", "category", "prompt"}`` x 200, in the released order."""
    return _load("sde_prompts_200.json")


def load_prefixes() -> list[dict]:
    """``{"id", "prefix", "continuation", "full_text", "prefix_words"}`` x 200, in the released order."""
    return _load("wikitext_prefix_200.json")


def synth_prefixes(n: int, seed: int = 42) -> list[dict]:
    """``n`` synthetic ``{"id", "prefix", "continuation"}`` pairs: the synthetic test documents
    (:func:`dslbench.data.synth.make_summarization_examples`) cut after their first sentences."""
    rows = []
    for i, row in enumerate(make_summarization_examples(int(n), seed=int(seed), split="test")):
        sentences = [s.strip() + "." for s in row["document"].split(".") if s.strip()]
        rows.append({
            "id": i,
            "prefix": " ".join(sentences[:SYNTH_PREFIX_SENTENCES]),
            "continuation": " ".join(sentences[SYNTH_PREFIX_SENTENCES:]),
        })
    return rows
