"""The in-process backend: an LRU bounded by the size of the encoded values it holds."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from service.engine.cache.backend import Cache


@dataclass(slots=True)
class _MemoryEntry:
    data: bytes
    expires_at: float | None  # monotonic seconds; None = never


class MemoryCache(Cache):
    """In-process LRU bounded by the total size of the encoded values it holds.

    Stores encoded bytes rather than Analysis objects so the bound is exact (numpy arrays hide their size behind
    object overhead) and a hit goes through the same decode/validation as a Redis hit. Per-entry bookkeeping
    (dict slot, key string; a few hundred bytes) is not counted. No locking: every method runs without awaiting,
    so it is atomic on the event loop.
    """

    name = "memory"

    def __init__(self, max_bytes: int, ttl_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_bytes < 0 or ttl_seconds < 0:
            raise ValueError("max_bytes and ttl_seconds must be >= 0")
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, _MemoryEntry] = OrderedDict()  # least recently used first
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    async def _read(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at is not None and self._clock() >= entry.expires_at:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry.data

    async def _write(self, key: str, data: bytes) -> None:
        self._drop(key)  # replacing: the old size must leave the accounting first
        if len(data) > self.max_bytes:
            return  # would evict everything and still not fit
        expires_at = self._clock() + self.ttl_seconds if self.ttl_seconds > 0 else None
        self._entries[key] = _MemoryEntry(data, expires_at)
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry.data)

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0
