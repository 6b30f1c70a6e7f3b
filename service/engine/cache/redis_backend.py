"""The Redis backend: each operation bounded by one timeout, no client retries, a cooldown after a failure."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from service.engine.cache.backend import Cache, _CircuitOpen

log = logging.getLogger("service.engine.cache")

T = TypeVar("T")

# After a failure, Redis is left alone for this long: with a black-holed Redis every operation would otherwise cost
# a full timeout, on every request. The first operation after the window probes again (no permanent disable).
FAILURE_COOLDOWN_SECONDS = 1.0


class RedisCache(Cache):
    """Redis backend (``redis://`` or ``rediss://`` URL, credentials and db number in the URL).

    Every operation is bounded by ``timeout_seconds`` as a whole (connect + send + reply), whatever the URL's query
    string says about socket timeouts, and the client's own retries are off, so a dead Redis adds at most one
    timeout to an operation, and - thanks to the cooldown - only to the operations that start while it is unknown
    to be dead.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        ttl_seconds: int,
        timeout_seconds: float,
        *,
        cooldown_seconds: float = FAILURE_COOLDOWN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds < 0 or timeout_seconds <= 0 or cooldown_seconds < 0:
            raise ValueError("need ttl_seconds >= 0, timeout_seconds > 0, cooldown_seconds >= 0")
        self.ttl_seconds = int(ttl_seconds)
        self.timeout_seconds = timeout_seconds
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._retry_at = 0.0  # monotonic time before which Redis is not contacted
        # from_url understands redis:// and rediss:// (TLS), user:password@, /db and ssl_* query options; a bad URL
        # raises here, at startup, which is the right time to find out.
        self._client = aioredis.from_url(
            url,
            socket_connect_timeout=timeout_seconds,
            socket_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),  # a retry would double the worst-case latency; next request retries
        )

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    async def _read(self, key: str) -> bytes | None:
        return await self._guarded(lambda: self._client.get(key))

    async def _write(self, key: str, data: bytes) -> None:
        # EX must be positive; ttl 0 means "no expiry", i.e. a plain SET.
        await self._guarded(lambda: self._client.set(key, data, ex=self.ttl_seconds or None))

    async def _guarded(self, op: Callable[[], Awaitable[T]]) -> T:
        if self._clock() < self._retry_at:
            raise _CircuitOpen("Redis failed recently; skipped until the cooldown ends")
        try:
            async with asyncio.timeout(self.timeout_seconds):
                result = await op()
        except asyncio.CancelledError:
            raise  # the caller went away: not Redis's fault
        except Exception:
            self._retry_at = self._clock() + self.cooldown_seconds
            raise
        self._retry_at = 0.0
        return result

    async def ping(self) -> bool:
        # Bypasses the cooldown: health checks want the current truth. A success closes the circuit early.
        try:
            async with asyncio.timeout(self.timeout_seconds):
                await self._client.ping()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - any failure means "not usable now"; ping never raises
            return False
        self._retry_at = 0.0
        return True

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception as exc:  # noqa: BLE001 - shutting down anyway
            log.debug("closing the Redis client failed: %s", exc)
