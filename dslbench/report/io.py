"""Atomic writers: every output file is written to a temporary sibling and renamed into place."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from dslbench import fsio

FLOAT_FORMAT = "%.4f"


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")



def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> Path:
    return fsio.write_bytes_atomic(data, path)


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    return write_bytes_atomic(text.encode("utf-8"), path)


def csv_text(df: pd.DataFrame, float_format: str = FLOAT_FORMAT) -> str:
    """Stable CSV text: fixed float format, ``\\n`` line ends, no index."""
    return df.to_csv(index=False, float_format=float_format, lineterminator="\n")


def write_csv_atomic(df: pd.DataFrame, path: str | os.PathLike, float_format: str = FLOAT_FORMAT) -> Path:
    return write_text_atomic(csv_text(df, float_format), path)


def write_parquet_atomic(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fsio.remove_dead_siblings(path)
    tmp = _tmp(path)
    try:
        with fsio.written_file(tmp):
            df.to_parquet(tmp, index=False)
        fsio.replace(tmp, path)
    except OSError as err:
        raise fsio.named_error(err, path) from err
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
