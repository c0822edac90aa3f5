"""Local JSONL datasets: where they live and strict reading with errors that name file and line."""

from __future__ import annotations

import json
import os
from pathlib import Path

DATA_DIR_ENV = "DSLBENCH_DATA_DIR"


class DataFormatError(ValueError):
    """A local data file or folder is unusable; the message names the file and the line."""


def data_dirs() -> list[Path]:
    """The folders of ``$DSLBENCH_DATA_DIR`` (``os.pathsep``-separated; [] when unset).
    A folder that does not exist is an error, not a silent fall-back to the hub."""
    value = os.environ.get(DATA_DIR_ENV, "").strip()
    folders = []
    for part in filter(None, (p.strip() for p in value.split(os.pathsep))):
        path = Path(part).expanduser()
        if not path.is_dir():
            raise DataFormatError(f"{DATA_DIR_ENV}={value}: {part} is not a directory")
        folders.append(path)
    return folders


def local_data_file(filename: str) -> Path | None:
    """Where ``filename`` is under ``$DSLBENCH_DATA_DIR``: directly in one of its folders, or in
    an immediate sub-folder (so ``DSLBENCH_DATA_DIR=shared/data`` finds both
    ``summarization/xsum.jsonl`` and ``repair/wikitext_100.jsonl``); None when absent.

    The folders are searched in order and the first holding the file wins; within one folder,
    two copies (e.g. ``a/samsum.jsonl`` and ``b/samsum.jsonl``) are an error naming both, never
    a silent alphabetical pick. A directory with the file's name is an error that says so."""
    for folder in data_dirs():
        candidates = [folder / filename, *sorted(folder.glob(f"*/{filename}"))]
        for candidate in candidates:
            if candidate.is_dir():
                raise DataFormatError(
                    f"{candidate} is a directory, not a data file: {filename} must be a JSONL file "
                    "(one JSON object a line)"
                )
        found = [c for c in candidates if c.is_file()]
        if len(found) > 1:
            raise DataFormatError(
                f"{DATA_DIR_ENV}: {filename} is ambiguous in {folder}: found "
                + " and ".join(str(f) for f in found)
                + "; keep one, or point the variable at the folder that holds the one to use"
            )
        if found:
            return found[0]
    return None


def _not_utf8(where: str, at: int, bad: bytes, reason: str, what: str) -> DataFormatError:
    return DataFormatError(
        f"{where}, byte {at} of the file: not UTF-8 (byte 0x{bad[:1].hex()}: {reason}); "
        f"{what} must be UTF-8: re-save it, e.g. iconv -f LATIN1 -t UTF-8"
    )


def decode_line(raw: bytes, where: str, offset: int, first: bool, what: str = "the data files") -> str:
    """One line as text; a byte that is not UTF-8 is an error naming the line and its offset."""
    if first and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte-order mark
        offset += 3
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _not_utf8(where, offset + err.start, raw[err.start:], err.reason, what) from None


def decode_utf8(data: bytes, path: str | os.PathLike, what: str = "the file") -> str:
    """A whole file's bytes as text (a leading byte-order mark dropped); a byte that is not UTF-8
    is a :class:`DataFormatError` naming the file, the line and the byte offset in the file."""
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as err:
        at = start + err.start
        line = data.count(b"\n", 0, at) + 1
        raise _not_utf8(f"{path}, line {line}", at, data[at:], err.reason, what) from None


def read_jsonl(path: str | os.PathLike, fields: tuple[str, ...], text_fields: tuple[str, ...] = (), id_field: str | None = "id") -> list[dict]:
    """Every record of ``path``, reduced to ``fields``.

    The file must be UTF-8 (a leading byte-order mark is allowed): other bytes are an error
    naming the line and the byte offset in the file. Each line must be a JSON object holding all
    ``fields``; ``text_fields`` must be non-blank strings; ``id_field`` (if given) must be a
    string or an integer, unique in the file, and is returned as a string. Blank lines are
    skipped; an empty file is an error.
    """
    path = Path(path)
    if path.is_dir():
        raise DataFormatError(f"{path} is a directory, not a data file (expected JSONL: one JSON object a line)")
    rows: list[dict] = []
    seen: dict[str, int] = {}
    with path.open("rb") as fh:
        offset = 0
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}, line {lineno}"
            line = decode_line(raw, where, offset, first=lineno == 1)
            offset += len(raw)
            if not line.strip():
                continue  # blank lines (e.g. a trailing newline) carry nothing
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            missing = [f for f in fields if f not in obj]
            if missing:
                raise DataFormatError(
                    f"{where}: missing field {', '.join(repr(m) for m in missing)} (each line needs {', '.join(fields)})"
                )
            for field in text_fields:
                if not isinstance(obj[field], str):
                    raise DataFormatError(f"{where}: {field!r} must be a string")
                if not obj[field].strip():
                    raise DataFormatError(f"{where}: empty {field}")
            row = {f: obj[f] for f in fields}
            if id_field is not None:
                if not isinstance(obj[id_field], (str, int)) or isinstance(obj[id_field], bool):
                    raise DataFormatError(f"{where}: {id_field!r} must be a string or an integer")
                row[id_field] = str(obj[id_field])
                if row[id_field] in seen:
                    raise DataFormatError(f"{where}: duplicate {id_field} {row[id_field]!r} (first on line {seen[row[id_field]]})")
                seen[row[id_field]] = lineno
            rows.append(row)
    if not rows:
        raise DataFormatError(f"{path}: no examples")
    return rows
