"""Shared measuring helpers of the benchmark scripts: timers, medians, peak memory, atomic JSON,
markdown table rows. Nothing here knows a backend or a figure."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a wall-clock interval covers it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, device work included."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def mib(n: float) -> float:
    return round(n / 2**20, 1)


class PeakMemory:
    """Peak memory growth of a block (bytes): CUDA allocator peak, or on CPU the kernel's peak
    resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) minus the RSS at entry.

    CPU figures are exact only when freed buffers go back to the OS: the memory phase runs in a
    child process with glibc's mmap threshold fixed at 256 KiB (``MALLOC_MMAP_THRESHOLD_``), so
    every large tensor is its own mapping; the converter's buffers are far above any threshold.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        self.base = self._status("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.peak = self._status("VmHWM") - self.base
        return False


def write_json(res: dict, path: Path) -> None:
    """Write ``res`` atomically (a temporary file renamed over ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def md_row(cells) -> str:
    """One markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"
