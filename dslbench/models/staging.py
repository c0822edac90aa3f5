"""Checkpoint directories written atomically: every checkpoint writer of ``models/`` (tiny LLaDA,
Dream, DiffusionGemma, DSL) fills a temporary sibling and swaps it into place, so a reader never
sees a half-written checkpoint and a killed writer leaves nothing a rerun cannot clean up."""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dslbench import fsio


@contextmanager
def staged_checkpoint_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of ``out_dir`` to fill; it replaces ``out_dir`` only when the block ends
    without an error (else it is deleted), so readers never see a half-written checkpoint.

    Leftovers of a writer that was killed (``.NAME.tmp-PID-*`` of a dead process, ``.NAME.old-*``)
    are cleaned first; a previous checkpoint moved aside just before a kill is put back."""
    out = Path(out_dir).expanduser().resolve()
    recover_staged_checkpoint(out)
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        fsio.fix_mode(tmp)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_staged_checkpoint(out: Path) -> None:
    """Undo what a killed :func:`staged_checkpoint_dir` left next to ``out``."""
    if not out.parent.is_dir():
        return
    olds = sorted(out.parent.glob(f".{fsio.glob_escape(out.name)}.old-*"))
    if olds and not out.exists():
        fsio.replace(olds[-1], out)  # killed between moving the old one aside and the new one in
        olds = olds[:-1]
    for old in olds:
        fsio.remove_tree(old)
    fsio.remove_dead_siblings(out)


def _check_replaceable(out: Path) -> None:
    # Never replace an arbitrary directory: only an empty one or a previous checkpoint.
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise FileExistsError(f"{out} is a non-empty directory that is not a checkpoint; refusing to replace it")


def _swap_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        fsio.replace(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    fsio.replace(out, old)
    try:
        fsio.replace(tmp, out)
    except BaseException:
        os.replace(old, out)  # put the previous checkpoint back
        raise
    fsio.remove_tree(old)
