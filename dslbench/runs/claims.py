"""Claims: several leaderboard drivers on one output folder (a Slurm job array, two people on a
shared disk) share its cells instead of racing for them.

A driver evaluates a cell only while it holds the cell's claim: an OS file lock
(:mod:`filelock`, ``flock``) on ``OUTPUT/runs/<model>/.<cell>.lock`` and, written atomically
while the lock is held, an owner record ``.<cell>.owner`` (host, pid, start time, the cell)
that says who holds it. The kernel drops the lock when its process dies, even by ``kill -9``,
so a lock that cannot be taken has a live holder: the cell is skipped for now and its partial
folder left alone. A lock that can be taken while an owner record is still there was left by a
driver that died; the record decides whether it is stale:

* same host: stale when its pid no longer runs;
* another host (a filesystem whose locks do not reach every node): stale when the record has
  not been touched for ``DSLBENCH_CLAIM_STALE_S`` seconds (default 3600). The holder touches
  its records every ``HEARTBEAT_S`` seconds while it runs, so only a dead driver's record ages
  (the same age also ends a same-host record whose pid was reused by an unrelated process).

A stale claim is taken over with one log line. A released claim removes its owner record; the
lock files stay (removing a lock file that another process may be opening is a race).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock, Timeout

from dslbench import fsio

STALE_ENV = "DSLBENCH_CLAIM_STALE_S"
STALE_S = 3600.0
HEARTBEAT_S = 60.0


def claim_paths(cell_dir: Path) -> tuple[Path, Path]:
    """The lock file and the owner record of the cell stored in ``cell_dir``."""
    return cell_dir.parent / f".{cell_dir.name}.lock", cell_dir.parent / f".{cell_dir.name}.owner"


def read_owner(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        record["age"] = time.time() - path.stat().st_mtime
    except (OSError, ValueError, TypeError):
        return None
    return record if isinstance(record, dict) else None


def describe(record: dict[str, Any] | None) -> str:
    if not record:
        return "another driver"
    return f"{record.get('host', '?')} pid {record.get('pid', '?')} (since {record.get('started', '?')})"


def stale_after() -> float:
    try:
        return float(os.environ.get(STALE_ENV, STALE_S))
    except ValueError:
        return STALE_S


def is_live(record: dict[str, Any]) -> bool:
    """Whether the driver that wrote ``record`` may still run (the rules in the module docstring)."""
    if record.get("age", float("inf")) >= stale_after():
        return False
    if record.get("host") == socket.gethostname():
        pid = record.get("pid")
        return isinstance(pid, int) and pid != os.getpid() and fsio.pid_alive(pid)
    return True


class Claim:
    """One held cell: its lock and owner record."""

    def __init__(self, lock: FileLock, owner: Path):
        self.lock, self.owner = lock, owner

    def release(self) -> None:
        try:
            fsio.unlink(self.owner)
        finally:
            self.lock.release()


class Claims:
    """The claims this driver holds, and a heartbeat that keeps their owner records fresh."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.held: set[Claim] = set()
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def take(self, cell) -> Claim | None:
        """The cell's claim, or None while another live driver holds it (a stale one is taken over)."""
        lock_path, owner = claim_paths(cell.dir)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(lock_path, timeout=0, thread_local=False)
        try:
            lock.acquire()
        except Timeout:
            return None
        previous = read_owner(owner)
        if previous is not None:
            if is_live(previous):  # a lock that does not reach the other host: its record decides
                lock.release()
                return None
            self.log(f"{cell.label}: taking over a stale claim of {describe(previous)}: its driver is gone")
        try:
            fsio.write_json_atomic({"host": socket.gethostname(), "pid": os.getpid(), "cell": cell.label,
                                    "started": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"}, owner)
        except BaseException:
            lock.release()
            raise
        claim = Claim(lock, owner)
        with self._guard:
            self.held.add(claim)
        self._start_heartbeat()
        return claim

    def holder(self, cell) -> str:
        return describe(read_owner(claim_paths(cell.dir)[1]))

    def release(self, claim: Claim) -> None:
        with self._guard:
            self.held.discard(claim)
        claim.release()

    def close(self) -> None:
        self._stop.set()
        for claim in list(self.held):
            self.release(claim)

    def _start_heartbeat(self) -> None:
        if self._beat is None:
            self._beat = threading.Thread(target=self._heartbeat, name="dslbench-claims", daemon=True)
            self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._guard:
                owners = [c.owner for c in self.held]
            for path in owners:  # a touch, not a rewrite: no crash point, nothing half-written
                try:
                    os.utime(path)
                except OSError:
                    pass


class FolderLock:
    """A blocking lock on one file of the output folder (``.report.lock``, ``models/.build.lock``)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(path, thread_local=False)

    def __enter__(self):
        self.lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()
