"""Reference texts of the unconditional-generation tasks' MAUVE (``dsl_uncond_*``).

ReMDM scores its samples against held-out OpenWebText: 1,024-token chunks of its validation split
decoded with the GPT-2 tokenizer. They are not redistributable here, so a user supplies them as
``$DSLBENCH_DATA_DIR/owt_references.jsonl`` (or in an immediate sub-folder): one JSON object a
line, ``{"text": "..."}`` (an ``id`` is optional), at least as many lines as samples generated;
the first N are used, in file order.
"""

from __future__ import annotations

from dslbench.data.jsonl import DATA_DIR_ENV, DataFormatError, local_data_file, read_jsonl

REFERENCES_FILE = "owt_references.jsonl"
_cache: dict[tuple, list[str]] = {}


class MissingReferences(FileNotFoundError):
    """The reference file is absent or too short; the message names the variable and the file."""


def reference_texts() -> list[str]:
    """Every reference text of the file, in order (read once per process per file version)."""
    path = local_data_file(REFERENCES_FILE)
    if path is None:
        raise MissingReferences(
            f"{REFERENCES_FILE} not found under ${DATA_DIR_ENV}: the dsl_uncond_* tasks need held-out reference "
            f"texts for MAUVE, one {{\"text\": ...}} a line (see tasks/uncond/README.md); set {DATA_DIR_ENV} to its folder"
        )
    key = (str(path), path.stat().st_mtime_ns, path.stat().st_size)
    if key not in _cache:
        _cache.clear()
        _cache[key] = [r["text"] for r in read_jsonl(path, ("text",), text_fields=("text",), id_field=None)]
    return _cache[key]


def load_references(n: int) -> list[str]:
    """The first ``n`` reference texts of ``$DSLBENCH_DATA_DIR/owt_references.jsonl``."""
    texts = reference_texts()
    if len(texts) < n:
        raise MissingReferences(
            f"{local_data_file(REFERENCES_FILE)}: {len(texts)} reference text(s), {n} needed (one per generated "
            f"sample); add references or generate fewer samples (--limit, metadata num_samples)"
        )
    return texts[:n]


__all__ = ["REFERENCES_FILE", "MissingReferences", "DataFormatError", "load_references", "reference_texts"]
