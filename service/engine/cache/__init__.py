"""Analysis cache: key scheme, binary value format, Redis / in-process backends, single-flight.

An :class:`~service.engine.analysis.Analysis` is expensive (decode + minutes of CPU inference for a long track) and
fully determined by (audio bytes, model graph, precision, hop), so it is cached under a content-addressed key.
Design rules:

* The cache is an optimisation, never a dependency: every backend failure (Redis down, slow, full, corrupt entry)
  turns into a miss plus a metric and one log line; no request ever fails because of the cache.
* Both backends store the same encoded bytes, so the hit path (decode + validate) is identical and the in-process
  LRU can bound its memory exactly.
* Concurrent requests for the same uncached track share one computation (:class:`SingleFlight`).

See docs/cache.md for the byte layout and the operational behaviour. One module per part: ``key`` (the key scheme),
``value`` (the byte format), ``backend`` (what every backend shares), ``memory`` (the in-process LRU),
``redis_backend`` (Redis), ``single_flight`` (shared computations, ``get_or_compute``); ``make_cache`` below picks
the backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.engine.cache.backend import Cache
from service.engine.cache.key import KEY_PREFIX, ONNX_HASH_KEY_CHARS, SCHEMA_VERSION, cache_key
from service.engine.cache.memory import MemoryCache
from service.engine.cache.redis_backend import FAILURE_COOLDOWN_SECONDS, RedisCache
from service.engine.cache.single_flight import SharedComputationCancelled, SingleFlight, get_or_compute
from service.engine.cache.value import HEADER_BYTES, MAGIC, CorruptEntry, decode_analysis, encode_analysis

if TYPE_CHECKING:
    from service.config import Settings

__all__ = [
    "FAILURE_COOLDOWN_SECONDS",
    "HEADER_BYTES",
    "KEY_PREFIX",
    "MAGIC",
    "ONNX_HASH_KEY_CHARS",
    "SCHEMA_VERSION",
    "Cache",
    "CorruptEntry",
    "MemoryCache",
    "RedisCache",
    "SharedComputationCancelled",
    "SingleFlight",
    "cache_key",
    "decode_analysis",
    "encode_analysis",
    "get_or_compute",
    "make_cache",
]


def make_cache(settings: Settings) -> Cache:
    """Redis when ``redis_url`` is set (shared by all replicas), otherwise the in-process LRU."""
    if settings.redis_url:
        return RedisCache(settings.redis_url, settings.cache_ttl_seconds, settings.redis_timeout_seconds)
    return MemoryCache(settings.memory_cache_bytes, settings.cache_ttl_seconds)
