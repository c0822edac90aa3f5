"""One-line descriptions of I/O failures, for the command boundary (exit 2, the path and the
cause, no traceback)."""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# Below this many free bytes a failed write is reported as a full disk.
_NEARLY_FULL = 1 << 20


def describe_os_error(err: OSError) -> str:
    """``"PATH: cause"`` in one line (``"permission denied"``, ``"no space left on device"``...)."""
    cause = (err.strerror or str(err) or type(err).__name__).strip().splitlines()[0]
    if err.errno == errno.EACCES or isinstance(err, PermissionError):
        cause = "permission denied"
    elif err.errno == errno.ENOSPC:
        cause = "no space left on device"
    elif err.errno == errno.EROFS:
        cause = "read-only file system"
    path = err.filename
    if path is None:
        return cause if cause in str(err) else f"{cause} ({err})"
    other = f" -> {err.filename2}" if err.filename2 else ""
    return f"{os.fsdecode(path)}{other}: {cause}"


class OutputWriteError(OSError):
    """A write failed in a library (torch, safetensors) that does not raise OSError."""


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn a non-OSError failure of a writer into an OSError naming ``path``; a nearly full disk
    is named as the cause (torch reports it as ``PytorchStreamWriter failed writing file``, or
    as ``enforce fail at inline_container.cc ... unexpected pos``: a short write, which is what a
    full disk leaves). An OSError that names no file (``ENOSPC`` from a write) gets ``path``."""
    try:
        yield
    except OSError as err:
        if err.filename is None:  # a failed write names no file (a full disk): name the one written
            raise type(err)(err.errno, err.strerror or str(err), os.fspath(path)) from err
        raise
    except Exception as err:  # noqa: BLE001 - re-raised as OSError with the cause kept
        if not _is_write_failure(err):
            raise
        short = "unexpected pos" in str(err)  # torch's writer found the file shorter than it wrote
        code = errno.ENOSPC if short or _nearly_full(Path(path)) else errno.EIO
        message = "no space left on device" if code == errno.ENOSPC else f"write failed ({_first_line(err)})"
        raise OutputWriteError(code, message, os.fspath(path)) from err


def _is_write_failure(err: Exception) -> bool:
    text = str(err).lower()
    return type(err).__name__ == "SafetensorError" or (isinstance(err, RuntimeError) and any(
        w in text for w in ("pytorchstreamwriter", "write failed", "no space left", "errno", "unexpected pos")))


def _nearly_full(path: Path) -> bool:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free < _NEARLY_FULL
    except OSError:
        return False


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


__all__ = ["describe_os_error", "OutputWriteError", "writing"]
