"""Seeded synthetic corpus for the embedded default (no download, no shared data).

Each *document* names a subject, then mixes several key facts about that subject with
distractor sentences about other people; the reference *summary* restates the key facts in
order. A model must therefore (1) find the subject, (2) keep only its sentences and (3) write
several facts of 8-12 words each, so a summary is 40-60 tokens long: short enough for a tiny
model to learn in minutes on a CPU, long enough that a 4-16 step budget has to commit several
tokens per step (where few-step decoders show the length / repetition trade-off).

Clean passages for the repair tasks are built from the same sentence grammar.
Everything is a pure function of ``(seed, split)``: same seed, same corpus; the splits draw
from disjoint random streams.
"""

from __future__ import annotations

import json
import os
import random
import zlib
from pathlib import Path
from typing import Iterable

from dslbench import fsio

FIRST = ["alice", "bruno", "chen", "dara", "emil", "farah", "goran", "hana", "ivan", "jade",
         "kofi", "lena", "marco", "nadia", "omar", "petra", "quinn", "rosa", "sami", "tomas",
         "uma", "vera", "wen", "yusuf"]
LAST = ["moreau", "okafor", "lindqvist", "tanaka", "garcia", "novak", "haddad", "kowalski",
        "silva", "brennan", "ito", "mensah", "petrov", "larsen", "costa", "weber"]
VERBS = ["visited", "repaired", "painted", "sold", "bought", "cleaned", "photographed",
         "designed", "inspected", "rebuilt", "measured", "delivered"]
OBJECTS = ["an old bridge", "a red boat", "the city library", "a small bakery", "the north tower",
           "a wooden cabin", "the river mill", "a stone church", "the harbour crane",
           "a blue tram", "the market hall", "a glass greenhouse", "the village school",
           "a steam engine"]
PLACES = ["lyon", "accra", "oslo", "kyoto", "lima", "porto", "riga", "quito", "hanoi", "perth",
          "tunis", "graz", "cork", "dakar"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WITH = ["with a friend", "with two helpers", "alone", "with the family", "with a colleague"]
FILLER = ["the weather stayed mild all week", "local shops opened later than usual",
          "a long train of trucks crossed the valley", "the evening news covered the harvest",
          "several roads were closed for repairs", "tourists filled the main square",
          "a storm was expected near the coast", "the museum announced new opening hours"]

SPLITS = ("train", "validation", "test")


def _rng(seed: int, split: str, stream: str) -> random.Random:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return random.Random(zlib.crc32(f"{seed}/{split}/{stream}".encode()))


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _fact(rng: random.Random, who: str) -> str:
    return (f"{who} {rng.choice(VERBS)} {rng.choice(OBJECTS)} in {rng.choice(PLACES)} "
            f"on {rng.choice(DAYS)} {rng.choice(WITH)}.")


def make_summarization_examples(
    n: int,
    seed: int = 0,
    split: str = "test",
    n_facts: tuple[int, int] = (3, 4),
    n_distractors: tuple[int, int] = (2, 4),
) -> list[dict]:
    """``n`` rows ``{"id", "document", "summary"}``; key facts keep their document order."""
    rng = _rng(seed, split, "summ")
    rows = []
    for i in range(n):
        subject = _name(rng)
        others = [o for o in (_name(rng) for _ in range(4)) if o != subject] or ["someone else"]
        facts = [_fact(rng, subject) for _ in range(rng.randint(*n_facts))]
        distractors = [
            _fact(rng, rng.choice(others)) if rng.random() < 0.7 else rng.choice(FILLER) + "."
            for _ in range(rng.randint(*n_distractors))
        ]
        # Interleave: facts keep their order, distractors are dropped in at random slots.
        body = list(facts)
        for d in distractors:
            body.insert(rng.randint(0, len(body)), d)
        document = f"this report is about {subject}. " + " ".join(body)
        rows.append({"id": f"synth-{split}-{seed}-{i}", "document": document, "summary": " ".join(facts)})
    return rows


def make_repair_passages(n: int, seed: int = 0, split: str = "test", n_sentences: tuple[int, int] = (3, 5)) -> list[dict]:
    """Clean passages ``{"id", "text"}`` for the selective-corruption repair tasks."""
    rng = _rng(seed, split, "repair")
    rows = []
    for i in range(n):
        sents = [_fact(rng, _name(rng)) for _ in range(rng.randint(*n_sentences))]
        rows.append({"id": f"synth-repair-{split}-{seed}-{i}", "text": " ".join(sents)})
    return rows


def tokenizer_corpus(seed: int = 0, n_docs: int = 2000) -> list[str]:
    """Texts to train the tiny tokenizer on: documents, summaries, passages and the task prompts."""
    texts: list[str] = []
    for row in make_summarization_examples(n_docs, seed=seed, split="train"):
        texts += [row["document"], row["summary"]]
    texts += [r["text"] for r in make_repair_passages(n_docs // 4, seed=seed, split="train")]
    texts += ["Summarize the following text in one sentence:",
              "Summarize the following news article in 2-3 sentences:",
              "Summarize the following scientific paper in a concise abstract:",
              "Summarize the following research paper in a concise abstract:",
              "Summarize the following text:"] * 20
    return texts


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write rows atomically (temp file + rename), so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    fsio.replace(tmp, path)
    return path
