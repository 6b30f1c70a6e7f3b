"""Test helper: the peak resident memory of a process over a block: this one (where ``live_server`` runs the app) by
default, or a child such as ``ServeProcess``."""

from __future__ import annotations

import threading

import psutil


class PeakRss:
    """``with PeakRss() as memory: ...`` then ``memory.growth_mb``: peak RSS minus RSS at entry, sampled every 10 ms."""

    def __init__(self, pid: int | None = None) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self.baseline = self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 2**20
