"""Peak memory of one measurement, by sampling the process's resident set size (RSS) in a thread.

`ru_maxrss` only grows over a process's life, so it cannot tell one measurement from the ones before it
in the same process; instead a thread reads the current RSS (/proc/self/statm) every `interval`
seconds while the measurement runs and keeps the highest value. A peak shorter than the interval can
be missed; on systems without /proc, the figures fall back to `ru_maxrss` (then cumulative).
"""
from __future__ import annotations

import os
import resource
import sys
import threading
from pathlib import Path

_STATM = Path("/proc/self/statm")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MIB = 1024 * 1024


def current_rss() -> int:
    """The process's resident memory now, in bytes (its peak so far where /proc is missing)."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


class PeakMemory:
    """A context manager: `peak_mib` (the highest RSS sampled inside it) and `growth_mib` (that peak
    minus the RSS on entry), in MiB."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, current_rss())

    def __enter__(self) -> "PeakMemory":
        self.start = self.peak = current_rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())

    @property
    def peak_mib(self) -> float:
        return round(self.peak / MIB, 1)

    @property
    def growth_mib(self) -> float:
        return round((self.peak - self.start) / MIB, 1)
