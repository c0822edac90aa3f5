"""Training data for ``dslbench adapt``: sources, prompt formatting, masks, padding and packing.

A data *spec* (``--data``) names one source:

- ``synth`` or ``synth:N``: dslbench's own seeded summarization corpus
  (:func:`dslbench.data.synth.make_summarization_examples`, **train** split, N documents,
  default 5000); disjoint from the test split the ``dsl_summ_synth_*`` tasks evaluate on; its
  responses default to 64 tokens (EOS-filled), the tasks' generation length;
- ``PATH.jsonl``: local JSON lines, every record of one kind:
  ``{"id", "document", "summary"}`` (optional ``"instruction"``; otherwise the published
  instruction of the dataset the file is named after, e.g. ``xsum.jsonl``, else the synthetic
  one), ``{"prompt", "response"}``, or ``{"text"}`` (plain text, packed);
- ``PATH.txt``: plain text, one document per blank-line-separated paragraph, packed;
- ``hf:NAME[:CONFIG[:SPLIT]]``: a hub dataset streamed with ``datasets`` (the published recipe
  streams ``hf:HuggingFaceFW/fineweb-edu:sample-10BT``), its ``text`` field packed.

Two row layouts come out of it, both as :class:`Batch` tensors:

- **prompt / response** rows (summarization and prompt/response records): the prompt is written
  exactly as the evaluation tasks write it (:mod:`dslbench.data.prompts`): ``plain`` (BOS +
  ``"<instruction>\\n\\n<document>"``, what ``lm_eval`` sends without
  ``--apply_chat_template``) or ``chat`` (the tokenizer's chat template with the generation
  prompt, for ``--apply_chat_template`` runs). The response is the reference followed by its end
  token (end-of-turn in ``chat`` format, else EOS) and then **EOS fill** up to ``response_len``
  (or to the longest response of the batch): as in LLaDA's SFT, the fill is part of the response
  and trained, which is how a masked diffusion model learns to end its answer inside a fixed
  generation length. Rows are **left**-padded with the pad token (attention mask 0, no loss), the
  same way the backends pad prompts at evaluation time;
- **packed** rows (plain text): documents joined with EOS and cut into ``seq_len`` blocks; every
  position is a response position (continued pre-training).

Order is deterministic: epoch ``e`` visits the rows in a permutation drawn from ``(seed, e)``;
global row ``i`` of the run is row ``perm_e[i % n]`` with ``e = i // n``. Process ``r`` of ``W``
takes rows ``r*B .. r*B+B-1`` of each global micro-batch, so the *data position* of a run is just
the number of micro-batches consumed and a resumed run reads exactly the rows it would have read.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

DEFAULT_SYNTH_DOCS = 5000
# Response length for ``synth`` when --response-len is not given: the generation length of the
# dsl_summ_synth_* tasks, so the training canvas is the evaluation canvas.
SYNTH_RESPONSE_LEN = 64
PROMPT_FORMATS = ("plain", "chat")


class DataSpecError(ValueError):
    """A ``--data`` spec or one of its files is unusable; the message names the file and line."""


@dataclass
class Batch:
    """One micro-batch. ``response_mask`` marks the positions that carry the loss; prompt
    positions are ``attention_mask & ~response_mask``."""

    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long, 1 = real token
    response_mask: torch.Tensor  # [B, T] bool

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device))

    @property
    def prompt_mask(self) -> torch.Tensor:
        return self.attention_mask.bool() & ~self.response_mask

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())


@dataclass(frozen=True)
class TokenIds:
    bos: int | None
    eos: int
    eot: int | None
    pad: int

    @classmethod
    def from_tokenizer(cls, tokenizer, info) -> "TokenIds":
        pad = getattr(info, "pad_id", None)
        if pad is None:
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else info.eos_id
        return cls(tokenizer.bos_token_id, int(info.eos_id), getattr(info, "eot_id", None), int(pad))


# ---------------------------------------------------------------------------------------------
# Sources -> records


def parse_spec(spec: str) -> dict[str, Any]:
    """``{"kind": "synth"|"jsonl"|"text"|"hub", ...}`` for a ``--data`` spec (no file is read)."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataSpecError("--data is empty; allowed: synth, synth:N, PATH.jsonl, PATH.txt, hf:NAME[:CONFIG[:SPLIT]]")
    spec = spec.strip()
    if spec == "synth" or spec.startswith("synth:"):
        n = DEFAULT_SYNTH_DOCS
        if spec != "synth":
            text = spec.split(":", 1)[1]
            try:
                n = int(text)
            except ValueError:
                raise DataSpecError(f"--data {spec!r}: N in synth:N must be a positive integer, got {text!r}") from None
            if n < 1:
                raise DataSpecError(f"--data {spec!r}: N in synth:N must be >= 1")
        return {"kind": "synth", "n": n}
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        if not parts[0] or len(parts) > 3:
            raise DataSpecError(f"--data {spec!r}: expected hf:NAME[:CONFIG[:SPLIT]]")
        return {"kind": "hub", "name": parts[0], "config": (parts[1] or None) if len(parts) > 1 else None,
                "split": parts[2] if len(parts) > 2 and parts[2] else "train"}
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataSpecError(
            f"--data {spec!r}: no such file; allowed: synth, synth:N, PATH.jsonl, PATH.txt, hf:NAME[:CONFIG[:SPLIT]]"
        )
    if path.is_dir():
        raise DataSpecError(f"--data {spec!r} is a directory; pass a .jsonl or .txt file")
    if path.suffix.lower() in (".jsonl", ".json"):
        return {"kind": "jsonl", "path": str(path)}
    if path.suffix.lower() in (".txt", ".text", ".md"):
        return {"kind": "text", "path": str(path)}
    raise DataSpecError(f"--data {spec!r}: unknown file type {path.suffix!r}; allowed: .jsonl, .txt")


_KINDS = {
    "summarization": ("document", "summary"),
    "prompt_response": ("prompt", "response"),
    "text": ("text",),
}


def read_records(path: str | Path) -> tuple[str, list[dict]]:
    """``(kind, records)`` of a JSONL file; every record must be of the first record's kind.
    Errors name the file and the line."""
    path = Path(path)
    kind: str | None = None
    rows: list[dict] = []
    from dslbench.data.jsonl import decode_line

    with path.open("rb") as fh:
        offset = 0
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}, line {lineno}"
            line = decode_line(raw, where, offset, first=lineno == 1, what="an --data file")
            offset += len(raw)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataSpecError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataSpecError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            this = next((k for k, fields in _KINDS.items() if all(f in obj for f in fields)), None)
            if this is None:
                raise DataSpecError(
                    f"{where}: a record needs the fields {{id, document, summary}}, {{prompt, response}} "
                    f"or {{text}}; got {sorted(obj)}"
                )
            if kind is None:
                kind = this
            elif this != kind:
                raise DataSpecError(f"{where}: a {this} record in a file of {kind} records (line 1 set the kind)")
            for field in _KINDS[kind]:
                value = obj[field]
                if not isinstance(value, str) or not value.strip():
                    raise DataSpecError(f"{where}: field {field!r} must be a non-empty string")
            if "instruction" in obj and not isinstance(obj["instruction"], str):
                raise DataSpecError(f"{where}: field 'instruction' must be a string")
            rows.append(obj)
    if not rows:
        raise DataSpecError(f"{path}: no records (empty file)")
    return kind, rows


def _default_instruction(path: Path | None) -> str:
    from dslbench.data.prompts import SUMMARIZATION_INSTRUCTIONS, SYNTH_INSTRUCTION

    if path is not None:
        stem = path.stem.lower().split("_")[0].split("-")[0]
        if stem in SUMMARIZATION_INSTRUCTIONS:
            return SUMMARIZATION_INSTRUCTIONS[stem]
    return SYNTH_INSTRUCTION


def load_pairs_or_texts(spec: dict[str, Any], data_seed: int, instruction: str | None = None) -> tuple[str, list]:
    """``("pairs", [(prompt_text, response_text)])`` or ``("texts", [text])`` for a local spec."""
    from dslbench.data.prompts import SYNTH_INSTRUCTION, summarization_prompt

    if spec["kind"] == "synth":
        from dslbench.data.synth import make_summarization_examples

        rows = make_summarization_examples(spec["n"], seed=data_seed, split="train")
        instr = instruction or SYNTH_INSTRUCTION
        return "pairs", [(summarization_prompt(instr, r["document"]), r["summary"]) for r in rows]
    if spec["kind"] == "jsonl":
        path = Path(spec["path"])
        kind, rows = read_records(path)
        if kind == "summarization":
            default = instruction or _default_instruction(path)
            return "pairs", [(summarization_prompt(r.get("instruction") or default, r["document"]), r["summary"]) for r in rows]
        if kind == "prompt_response":
            return "pairs", [(r["prompt"], r["response"]) for r in rows]
        return "texts", [r["text"] for r in rows]
    if spec["kind"] == "text":
        path = Path(spec["path"])
        from dslbench.data.jsonl import decode_utf8

        text = decode_utf8(path.read_bytes(), path, "an --data file")
        docs = [p.strip() for p in text.split("\n\n") if p.strip()]
        if not docs:
            raise DataSpecError(f"{path}: no text")
        return "texts", docs
    raise DataSpecError(f"data kind {spec['kind']!r} is not a local source")


# ---------------------------------------------------------------------------------------------
# Tokenisation


def _fit_prompt(ids: list[int], budget: int, tail: int = 32) -> list[int]:
    """Cut an over-long prompt in the middle (keep its head and the last ``tail`` tokens), as the
    evaluation backends do."""
    if len(ids) <= budget:
        return ids
    tail = min(tail, budget // 4)
    return ids[: budget - tail] + (ids[-tail:] if tail else [])


def encode_pairs(
    pairs: list[tuple[str, str]],
    tokenizer,
    ids: TokenIds,
    prompt_format: str = "plain",
) -> list[tuple[list[int], list[int]]]:
    """Token ids ``(prompt, response)`` per pair; the response ends with its end token (EoT in
    chat format when the tokenizer has one, else EOS), before any EOS fill."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"--prompt-format {prompt_format!r} is not valid; allowed: {', '.join(PROMPT_FORMATS)}")
    if prompt_format == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("--prompt-format chat: the base checkpoint's tokenizer has no chat template; use plain")
        prompts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p, _ in pairs
        ]
        end = ids.eot if ids.eot is not None else ids.eos
    else:
        prompts = [p for p, _ in pairs]
        end = ids.eos
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer([r for _, r in pairs], add_special_tokens=False)["input_ids"]
    out = []
    for p, r in zip(p_ids, r_ids):
        p = list(p)
        # Same rule as the backends' _encode_context: a BOS unless the text already starts with one.
        if ids.bos is not None and (not p or p[0] != ids.bos):
            p = [ids.bos, *p]
        out.append((p, [*r, end]))
    return out


def pack_texts(texts: list[str] | Iterator[str], tokenizer, eos: int, seq_len: int) -> Iterator[list[int]]:
    """Documents joined with EOS and cut into blocks of exactly ``seq_len`` tokens (the tail that
    does not fill a block is dropped)."""
    buf: list[int] = []
    chunk: list[str] = []

    def flush(chunk):
        for row in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            buf.extend(row)
            buf.append(eos)

    for text in texts:
        chunk.append(text)
        if len(chunk) >= 256:
            flush(chunk)
            chunk = []
        while len(buf) >= seq_len:
            yield buf[:seq_len]
            del buf[:seq_len]
    if chunk:
        flush(chunk)
    while len(buf) >= seq_len:
        yield buf[:seq_len]
        del buf[:seq_len]


# ---------------------------------------------------------------------------------------------
# Collation


def collate_pairs(
    rows: list[tuple[list[int], list[int]]],
    ids: TokenIds,
    seq_len: int,
    response_len: int | None = None,
) -> Batch:
    """Left-padded ``[pad][prompt][response + EOS fill]`` rows (vectorised tensor writes per row,
    no per-token Python work). The response is cut or EOS-filled to ``response_len`` when given,
    else EOS-filled to the batch's longest response; the prompt is cut in the middle to fit
    ``seq_len``."""
    if response_len is not None:
        resp_len = int(response_len)
    else:
        resp_len = max(len(r) for _, r in rows)
    resp_len = min(resp_len, seq_len - 1)
    prompts = [_fit_prompt(p, seq_len - resp_len) for p, _ in rows]
    width = max(len(p) for p in prompts) + resp_len
    B = len(rows)
    input_ids = torch.full((B, width), ids.pad, dtype=torch.long)
    attention = torch.zeros((B, width), dtype=torch.long)
    response = torch.zeros((B, width), dtype=torch.bool)
    for b, (p, (_, r)) in enumerate(zip(prompts, rows)):
        r = r[:resp_len] + [ids.eos] * (resp_len - min(len(r), resp_len))
        start = width - resp_len - len(p)
        input_ids[b, start:] = torch.tensor(p + r, dtype=torch.long)
        attention[b, start:] = 1
        response[b, width - resp_len:] = True
    return Batch(input_ids, attention, response)


def collate_blocks(rows: list[list[int]]) -> Batch:
    input_ids = torch.tensor(rows, dtype=torch.long)
    ones = torch.ones_like(input_ids)
    return Batch(input_ids, ones, ones.bool())


# ---------------------------------------------------------------------------------------------
# Datasets with a deterministic, resumable order


def permutation(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(f"dslbench-adapt/{seed}/{epoch}").shuffle(order)
    return order


class TrainData:
    """Rows in memory with a seeded per-epoch order; ``micro_batch(k, rank, world)`` is the
    ``rank``'s share of global micro-batch ``k``."""

    def __init__(self, rows: list, layout: str, ids: TokenIds, seq_len: int, batch_size: int,
                 seed: int, response_len: int | None = None, description: str = "") -> None:
        if not rows:
            raise DataSpecError(f"{description or 'the data'}: no training rows")
        self.rows = rows
        self.layout = layout  # "pairs" | "blocks"
        self.ids = ids
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.response_len = response_len
        self.description = description
        self._perm_cache: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def _row(self, i: int):
        n = len(self.rows)
        epoch, j = divmod(i, n)
        if epoch not in self._perm_cache:
            self._perm_cache = {epoch: permutation(n, self.seed, epoch)}
        return self.rows[self._perm_cache[epoch][j]]

    def micro_batch(self, k: int, rank: int = 0, world: int = 1) -> Batch:
        first = (k * world + rank) * self.batch_size
        rows = [self._row(first + j) for j in range(self.batch_size)]
        if self.layout == "pairs":
            return collate_pairs(rows, self.ids, self.seq_len, self.response_len)
        return collate_blocks(rows)

    def describe(self) -> dict[str, Any]:
        return {"rows": len(self.rows), "layout": self.layout, "source": self.description}


class StreamData:
    """A streamed hub dataset, packed on the fly; one pass, in the stream's order. Resuming skips
    the rows already consumed (re-reading the stream up to there)."""

    def __init__(self, spec: dict, tokenizer, ids: TokenIds, seq_len: int, batch_size: int, seed: int) -> None:
        self.spec, self.tokenizer, self.ids = spec, tokenizer, ids
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.layout = "blocks"
        self._iter: Iterator[list[int]] | None = None
        self._next_row = 0

    def _open(self) -> Iterator[list[int]]:
        try:
            import datasets

            ds = datasets.load_dataset(self.spec["name"], self.spec["config"], split=self.spec["split"], streaming=True)
        except Exception as err:  # offline, unknown name, ...
            raise DataSpecError(
                f"--data hf:{self.spec['name']}: could not stream it from the Hugging Face Hub "
                f"({type(err).__name__}: {err}); use a local .jsonl/.txt file or synth instead"
            ) from err
        texts = (row["text"] for row in ds)
        return pack_texts(texts, self.tokenizer, self.ids.eos, self.seq_len)

    def micro_batch(self, k: int, rank: int = 0, world: int = 1) -> Batch:
        first = (k * world + rank) * self.batch_size
        if self._iter is None or first < self._next_row:
            self._iter, self._next_row = self._open(), 0
        while self._next_row < first:
            next(self._iter)
            self._next_row += 1
        rows = []
        for _ in range(self.batch_size):
            try:
                rows.append(next(self._iter))
            except StopIteration:
                raise DataSpecError(f"hf:{self.spec['name']}: the stream ended before max-steps was reached") from None
            self._next_row += 1
        return collate_blocks(rows)

    def describe(self) -> dict[str, Any]:
        return {"rows": None, "layout": "blocks", "source": f"hf:{self.spec['name']}"}


def build_data(
    spec_text: str,
    tokenizer,
    info,
    *,
    seq_len: int,
    batch_size: int,
    seed: int,
    prompt_format: str = "plain",
    response_len: int | None = None,
    instruction: str | None = None,
):
    """The training data of a ``--data`` spec for this tokenizer."""
    spec = parse_spec(spec_text)
    ids = TokenIds.from_tokenizer(tokenizer, info)
    if spec["kind"] == "hub":
        return StreamData(spec, tokenizer, ids, seq_len, batch_size, seed)
    layout, items = load_pairs_or_texts(spec, seed, instruction)
    if spec["kind"] == "synth" and response_len is None:
        response_len = min(SYNTH_RESPONSE_LEN, seq_len - 1)
    if layout == "pairs":
        rows = encode_pairs(items, tokenizer, ids, prompt_format)
        return TrainData(rows, "pairs", ids, seq_len, batch_size, seed, response_len, spec_text)
    blocks = list(pack_texts(items, tokenizer, ids.eos, seq_len))
    if not blocks:
        n_tokens = sum(len(x) for x in tokenizer(items, add_special_tokens=False)["input_ids"])
        raise DataSpecError(f"--data {spec_text!r}: {n_tokens} tokens do not fill one block of --seq-len {seq_len}")
    return TrainData(blocks, "blocks", ids, seq_len, batch_size, seed, None, spec_text)


def tokens_per_epoch(data) -> int | None:
    if isinstance(data, TrainData):
        if data.layout == "blocks":
            return len(data.rows) * data.seq_len
        return sum(len(p) + len(r) for p, r in data.rows)
    return None


def epochs_for(data, micro_batches: int, world: int = 1) -> float | None:
    if isinstance(data, TrainData):
        return micro_batches * world * data.batch_size / len(data.rows)
    return None


__all__ = [
    "Batch", "DataSpecError", "TokenIds", "TrainData", "StreamData", "build_data", "parse_spec", "read_records",
    "encode_pairs", "collate_pairs", "collate_blocks", "pack_texts", "PROMPT_FORMATS", "DEFAULT_SYNTH_DOCS",
]
