"""Single flight: concurrent requests for the same uncached track share one computation, stored once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from service.engine.analysis import Analysis
from service.engine.cache.backend import Cache
from service.metrics import CACHE_ERRORS, CACHE_HITS, CACHE_MISSES

log = logging.getLogger("service.engine.cache")

T = TypeVar("T")


class SharedComputationCancelled(RuntimeError):
    """The shared computation was cancelled by something other than this caller (e.g. shutdown)."""


class _Flight(Generic[T]):
    __slots__ = ("task", "waiters")

    def __init__(self) -> None:
        self.task: asyncio.Task[T] | None = None
        self.waiters = 0


class SingleFlight:
    """Collapses concurrent calls with the same key into one computation.

    The computation runs in its own task, not in the first caller's, so no caller owns it: any caller may be
    cancelled (client disconnect, request timeout) and the others still get the result. Only when *every* caller
    has gone is the computation cancelled, because nobody is left to use it. All callers get the same result or
    the same exception; the entry disappears as soon as the computation finishes, so later calls start afresh
    (and normally hit the cache the computation filled).
    """

    def __init__(self) -> None:
        self._flights: dict[str, _Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, key: object) -> bool:
        return key in self._flights

    async def run(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight()
            flight.task = asyncio.create_task(self._execute(key, flight, compute))
            # Backstop for a task cancelled before it ever ran (its finally below never executes then).
            flight.task.add_done_callback(lambda _task, key=key, flight=flight: self._forget(key, flight))
            self._flights[key] = flight
        flight.waiters += 1
        try:
            # shield: cancelling this caller must not cancel the computation the others are waiting for.
            return await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if flight.task.cancelled() and (current is None or not current.cancelling()):
                # The computation was cancelled under us while we were not: report it, don't pretend we were.
                raise SharedComputationCancelled(f"shared computation for {key!r} was cancelled") from None
            raise
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()  # everyone left; stop burning CPU on it
                self._forget(key, flight)

    async def _execute(self, key: str, flight: _Flight, compute: Callable[[], Awaitable[T]]) -> T:
        try:
            return await compute()
        finally:
            # Removed the moment it finishes (not one loop iteration later), so a caller arriving after the result
            # was stored starts a new lookup instead of joining a finished flight.
            self._forget(key, flight)

    def _forget(self, key: str, flight: _Flight) -> None:
        if self._flights.get(key) is flight:  # a newer flight may already own the key
            del self._flights[key]


async def get_or_compute(
    cache: Cache, flight: SingleFlight, key: str, compute: Callable[[], Awaitable[Analysis]]
) -> tuple[Analysis, bool]:
    """``(analysis, cached)``: from the cache when possible, else computed once for all concurrent callers and
    stored. Cache failures never fail the call; compute's exceptions propagate unchanged."""
    analysis = await cache.get(key)
    if analysis is not None:
        CACHE_HITS.labels(backend=cache.name).inc()
        return analysis, True
    CACHE_MISSES.labels(backend=cache.name).inc()

    async def compute_and_store() -> Analysis:
        # Stored inside the shared computation: one SET per computation, not one per waiting caller.
        result = await compute()
        await _store_quietly(cache, key, result)
        return result

    return await flight.run(key, compute_and_store), False


async def _store_quietly(cache: Cache, key: str, analysis: Analysis) -> None:
    # Backends already swallow their errors; this also covers third-party Cache implementations.
    try:
        await cache.set(key, analysis)
    except Exception as exc:  # noqa: BLE001 - a failed store costs a recompute later, never this answer
        CACHE_ERRORS.labels(backend=cache.name, op="set").inc()
        log.warning("%s cache set raised, result served uncached: %s: %s", cache.name, type(exc).__name__, exc)
