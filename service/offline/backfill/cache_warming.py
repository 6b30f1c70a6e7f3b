"""``--warm-cache``: every analysis also goes into the service's Redis cache, under the service's key scheme."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from service.config import Settings
from service.engine.analysis import Analysis
from service.engine.cache import RedisCache
from service.offline.codes import UsageError

# Offline writes have no latency budget: a slow Redis gets at least this long per write (more than the service's
# per-request timeout).
MIN_WRITE_TIMEOUT_SECONDS = 5.0


class CacheWarmer:
    """Writes analyses into the service's cache (service.engine.cache's RedisCache, the service's key scheme)."""

    def __init__(self, settings: Settings) -> None:
        self._loop = asyncio.new_event_loop()
        timeout = max(settings.redis_timeout_seconds, MIN_WRITE_TIMEOUT_SECONDS)
        try:
            self.cache = RedisCache(settings.redis_url, settings.cache_ttl_seconds, timeout)
        except ValueError as error:
            raise UsageError(f"--redis-url is not a valid Redis URL: {error}") from None
        if not self._loop.run_until_complete(self.cache.ping()):
            self.close()
            raise UsageError("--warm-cache: Redis does not answer PING at the given URL")

    def store(self, key: str, analysis: Analysis) -> bool:
        """True when stored; the cache itself logs and counts a failure (the run goes on)."""
        before = self._failures()
        self._loop.run_until_complete(self.cache.set(key, analysis))
        return self._failures() == before

    def _failures(self) -> float:
        value = REGISTRY.get_sample_value("taggram_cache_errors_total", {"backend": self.cache.name, "op": "set"})
        return value or 0.0

    def close(self) -> None:
        self._loop.run_until_complete(self.cache.close())
        self._loop.close()
