"""Atomic file operations shared by every writer of the package, and the crash points that test
them.

Every write that must survive a crash goes through here: a file is written to a temporary
sibling and renamed over its destination (:func:`write_bytes_atomic`), directories are removed
with :func:`remove_tree`, renames with :func:`replace`, log lines with :func:`append_text`.
Files get the mode the user's umask implies (:func:`fix_mode`): safetensors creates its files
``0600``, which would make a checkpoint unreadable by the other users of a shared machine.

Crash points (fault injection for the test suite): with ``DSLBENCH_CRASH_AT=N`` the process
kills itself (``os._exit(CRASH_EXIT)``, no cleanup, no ``finally``) at the N-th operation done
through these helpers; ``DSLBENCH_CRASH_AT=N:rename,delete`` counts only those kinds
(``write``, ``rename``, ``delete``, ``append``). A write or an append killed this way leaves
half of its bytes behind and a tree removal half of its files, as a real kill would.
``DSLBENCH_CRASH_TRACE=FILE`` appends one ``N<TAB>kind<TAB>path`` line per operation, which is
how a test learns how many crash points a run has.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

CRASH_ENV = "DSLBENCH_CRASH_AT"
TRACE_ENV = "DSLBENCH_CRASH_TRACE"
CRASH_EXIT = 86
KINDS = ("write", "rename", "delete", "append")

_counter = {"pid": -1, "n": 0}


def _crash_spec() -> tuple[int | None, tuple[str, ...]]:
    spec = os.environ.get(CRASH_ENV, "").strip()
    if not spec:
        return None, KINDS
    number, _, kinds = spec.partition(":")
    try:
        n = int(number)
    except ValueError:
        raise ValueError(f"{CRASH_ENV}={spec!r}: expected N or N:kind[,kind...] with kinds {', '.join(KINDS)}") from None
    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip()) or KINDS
    unknown = [k for k in chosen if k not in KINDS]
    if unknown:
        raise ValueError(f"{CRASH_ENV}={spec!r}: unknown kind(s) {unknown}; allowed: {', '.join(KINDS)}")
    return n, chosen


def crash_point(kind: str, path: str | os.PathLike, partial: Callable[[], None] | None = None) -> None:
    """Count one operation of ``kind`` on ``path``; kill the process here when it is the chosen
    one (after ``partial()``, which leaves the half-done state a real kill would)."""
    trace = os.environ.get(TRACE_ENV)
    target, kinds = _crash_spec()
    if (target is None and not trace) or kind not in kinds:
        return
    if _counter["pid"] != os.getpid():  # a forked child counts its own operations
        _counter.update(pid=os.getpid(), n=0)
    _counter["n"] += 1
    n = _counter["n"]
    if trace:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(f"{n}\t{kind}\t{path}\n")
    if target == n:
        if partial is not None:
            try:
                partial()
            except OSError:
                pass
        os._exit(CRASH_EXIT)


# ---------------------------------------------------------------------------------------------
# Modes


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fix_mode(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or a directory and everything under it) the mode a plain ``open`` /
    ``mkdir`` would have given it under the user's umask."""
    path = Path(path)
    mask = _umask()
    if path.is_dir():
        os.chmod(path, 0o777 & ~mask)
        for root, dirs, files in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o777 & ~mask)
            for f in files:
                os.chmod(os.path.join(root, f), 0o666 & ~mask)
    elif path.exists():
        os.chmod(path, 0o666 & ~mask)


# ---------------------------------------------------------------------------------------------
# Operations


def temp_sibling(path: str | os.PathLike, tag: str = "tmp") -> Path:
    """``.NAME.tag-PID`` next to ``path``: hidden, and recognisable as this package's leftover."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}")


def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    crash_point("rename", dst)
    os.replace(src, dst)


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_dead_siblings(path: str | os.PathLike, tag: str = "tmp") -> None:
    """Remove ``.NAME.tag-PID*`` siblings of ``path`` left by processes that no longer run."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    for stale in path.parent.glob(f".{glob_escape(path.name)}.{tag}-*"):
        pid = stale.name.rsplit(f".{tag}-", 1)[1].split("-", 1)[0]
        if not pid.isdigit() or not pid_alive(int(pid)):
            remove_tree(stale)


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to a temporary sibling, then rename it over ``path`` (temporary siblings
    that a killed writer left are removed first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_siblings(path)
    tmp = temp_sibling(path)
    try:
        crash_point("write", path, partial=lambda: tmp.write_bytes(data[: len(data) // 2]))
        tmp.write_bytes(data)
        fix_mode(tmp)
        replace(tmp, path)
    except OSError as err:
        raise named_error(err, path) from err
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def named_error(err: OSError, path: str | os.PathLike) -> OSError:
    """The error with the file it concerns (a failed ``write`` names none, e.g. a full disk)."""
    if err.filename is None:
        return type(err)(err.errno, err.strerror or str(err), str(path))
    return err


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    return write_bytes_atomic(text.encode("utf-8"), path)


def write_json_atomic(data: Any, path: str | os.PathLike, **dump_kwargs: Any) -> Path:
    options = {"indent": 2, "sort_keys": True, "default": str, **dump_kwargs}
    return write_text_atomic(json.dumps(data, **options) + "\n", path)


@contextmanager
def written_file(path: str | os.PathLike) -> Iterator[Path]:
    """For writers that cannot be handed bytes (safetensors, pandas): the block writes ``path``
    itself; the crash point comes after it and leaves the file cut in half."""
    path = Path(path)
    yield path

    def cut() -> None:
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.truncate(size // 2)

    crash_point("write", path, partial=cut)
    fix_mode(path)


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` (whole lines) to ``path``; a kill can leave a torn last line, which the
    readers of such logs must drop."""
    path = Path(path)

    def half() -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text[: len(text) // 2])

    crash_point("append", path, partial=half)
    new = not path.exists()
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
    if new:
        fix_mode(path)


def unlink(path: str | os.PathLike, missing_ok: bool = True) -> None:
    path = Path(path)
    if missing_ok and not path.exists() and not path.is_symlink():
        return
    crash_point("delete", path)
    path.unlink(missing_ok=missing_ok)


def remove_tree(path: str | os.PathLike) -> None:
    """Remove a directory tree (or a file); a kill half-way leaves half of its files."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir() or path.is_symlink():
        unlink(path)
        return

    def half() -> None:
        files = sorted(p for p in path.rglob("*") if p.is_file())
        for p in files[: max(1, len(files) // 2)]:
            p.unlink()

    crash_point("delete", path, partial=half)
    shutil.rmtree(path)


__all__ = ["CRASH_ENV", "TRACE_ENV", "CRASH_EXIT", "crash_point", "fix_mode", "temp_sibling", "replace",
           "pid_alive", "remove_dead_siblings",
           "write_bytes_atomic", "write_text_atomic", "write_json_atomic", "written_file", "append_text",
           "unlink", "remove_tree"]
