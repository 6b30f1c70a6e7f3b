"""Analysis cache: key scheme, binary value format, Redis / in-process backends, single-flight.

An :class:`~service.engine.analysis.Analysis` is expensive (decode + minutes of CPU inference for a long track) and fully
determined by (audio bytes, model graph, hop), so it is cached under a content-addressed key. Design rules:

* The cache is an optimisation, never a dependency: every backend failure (Redis down, slow, full, corrupt entry)
  turns into a miss plus a metric and one log line; no request ever fails because of the cache.
* Both backends store the same encoded bytes, so the hit path (decode + validate) is identical and the in-process
  LRU can bound its memory exactly.
* Concurrent requests for the same uncached track share one computation (:class:`SingleFlight`).

See docs/cache.md for the byte layout and the operational behaviour.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import struct
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from service.config import Precision
from service.decode.facts import facts_from_json, facts_to_json
from service.metrics import CACHE_ERRORS, CACHE_HITS, CACHE_MISSES
from service.engine.analysis import Analysis

if TYPE_CHECKING:
    from service.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# Bump whenever the byte layout or the meaning of a cached field changes. It is part of the key, so entries written
# by an older release are simply never looked up again (they age out through the TTL) instead of failing to decode.
SCHEMA_VERSION = 2  # 2: decode facts (decoder, declared duration, warnings) travel with the analysis

KEY_PREFIX = "taggram"
# 16 hex digits = 64 bits of the model's ONNX hash: collision-free in practice across a handful of exports per model,
# and keeps keys short.
ONNX_HASH_KEY_CHARS = 16
_HEX = re.compile(r"[0-9a-f]+")
# Model names become one ':'-separated key field, so ':' (or anything exotic) would make keys ambiguous.
_MODEL_NAME = re.compile(r"[A-Za-z0-9._-]+")
_SHA256_HEX_CHARS = 64
SERVED_PRECISIONS = (Precision.FP32, Precision.BF16)  # what a runner computes in ("auto" is only a setting)

# ---------------------------------------------------------------------------------------------------------------
# Value format. Little-endian throughout, independent of the host:
#   magic 4s | schema u16 | reserved u16 (0) | duration f64 | sample_rate u32 | patch_samples u32 | hop_samples u32
#   | segments u32 | labels u32 | embedding_dim u32 | facts_bytes u32 | crc32 u32      (48 bytes)
#   then tags float32[segments*labels], then embedding float32[segments*embedding_dim], row-major,
#   then the decode facts as UTF-8 JSON (facts_bytes long), so a cached answer carries the uncached one's warnings.
# The CRC covers the header (minus the CRC itself), both arrays and the facts, so a flipped bit anywhere is a miss,
# not a silently wrong answer.
# ---------------------------------------------------------------------------------------------------------------
MAGIC = b"TGAN"
_HEADER_BODY = struct.Struct("<4sHHdIIIIIII")
_CRC = struct.Struct("<I")
HEADER_BYTES = _HEADER_BODY.size + _CRC.size  # 48
_WIRE_FLOAT = np.dtype("<f4")
_U32_MAX = 2**32 - 1


class CorruptEntry(ValueError):
    """Bytes that are not a valid encoded Analysis of this schema version (truncated, foreign, damaged, stale)."""


def cache_key(audio_sha256: str, model: str, onnx_sha256: str, hop_samples: int, *, precision: str) -> str:
    """Key of one analysis: ``taggram:v{schema}:{model}:{onnx16}:{precision}:{hop}:{audio_sha256}``.

    Every field is something the cached value depends on, so no two different analyses can share a key:

    * ``taggram`` namespaces the keys when the Redis database is shared with other applications;
    * ``v{schema}`` changes with the value encoding, so a new release never tries to decode an old layout;
    * ``model`` keeps the models apart and makes per-model inspection/deletion (``SCAN taggram:v2:msd-musicnn:*``)
      possible;
    * the model's ONNX hash (first 16 hex digits) means a re-exported or retrained model never serves entries
      computed by its predecessor under the same name; sample rate and patch length are properties of the graph,
      so the hash covers them too;
    * ``precision`` (fp32 or bf16: the runner's, docs/precision.md): the same graph in bf16 gives slightly different
      numbers, so replicas serving different precisions (or one restarted with another) never mix their answers;
    * ``hop`` is the only request parameter that changes the analysis (segment overlap);
    * the audio's SHA-256 is the content address (the uploaded bytes, not the file name).
    """
    audio = _checked_hex("audio_sha256", audio_sha256, exact=_SHA256_HEX_CHARS)
    onnx = _checked_hex("onnx_sha256", onnx_sha256, minimum=ONNX_HASH_KEY_CHARS)
    if not _MODEL_NAME.fullmatch(model):
        raise ValueError(f"model name {model!r} must match {_MODEL_NAME.pattern} to be used in a cache key")
    if isinstance(hop_samples, bool) or not isinstance(hop_samples, int) or hop_samples <= 0:
        raise ValueError(f"hop_samples must be a positive int, got {hop_samples!r}")
    if precision not in SERVED_PRECISIONS:
        raise ValueError(f"precision must be one of {SERVED_PRECISIONS}, got {precision!r}")
    return f"{KEY_PREFIX}:v{SCHEMA_VERSION}:{model}:{onnx[:ONNX_HASH_KEY_CHARS]}:{precision}:{hop_samples}:{audio}"


def _checked_hex(name: str, value: str, *, exact: int | None = None, minimum: int = 1) -> str:
    # Lower-casing makes the key canonical: the same hash written in upper case must hit the same entry.
    value = value.lower()
    if not _HEX.fullmatch(value) or len(value) < minimum or (exact is not None and len(value) != exact):
        expected = f"{exact}" if exact is not None else f"at least {minimum}"
        raise ValueError(f"{name} must be {expected} hex digits, got {len(value)} characters")
    return value


def encode_analysis(a: Analysis) -> bytes:
    """Serialise *a* to the compact binary format (see module comment and docs/cache.md); exact, no rounding."""
    tags = _wire_array("tags", a.tags)
    embedding = _wire_array("embedding", a.embedding)
    if tags.shape[0] != embedding.shape[0]:
        raise ValueError(f"tags has {tags.shape[0]} segments but embedding has {embedding.shape[0]}")
    ints = (a.sample_rate, a.patch_samples, a.hop_samples, tags.shape[0], tags.shape[1], embedding.shape[1])
    if any(isinstance(v, bool) or not 0 <= int(v) <= _U32_MAX for v in ints):
        raise ValueError(f"integer fields must fit in uint32, got {ints}")
    facts_bytes = json.dumps(facts_to_json(a.decode), separators=(",", ":")).encode()
    body = _HEADER_BODY.pack(MAGIC, SCHEMA_VERSION, 0, float(a.duration_seconds), *(int(v) for v in ints),
                             len(facts_bytes))
    tag_bytes, embedding_bytes = tags.tobytes(), embedding.tobytes()
    crc = zlib.crc32(facts_bytes, zlib.crc32(embedding_bytes, zlib.crc32(tag_bytes, zlib.crc32(body))))
    return b"".join((body, _CRC.pack(crc), tag_bytes, embedding_bytes, facts_bytes))


def _wire_array(name: str, values: np.ndarray) -> np.ndarray:
    # Only float32 is accepted: silently casting float64 would break the exact-round-trip promise.
    values = np.asarray(values)
    if values.ndim != 2 or values.dtype.kind != "f" or values.dtype.itemsize != _WIRE_FLOAT.itemsize:
        raise ValueError(f"{name} must be a 2-D float32 array, got {values.dtype} with shape {values.shape}")
    # Byte-swapping a big-endian float32 is exact; on little-endian hosts this is usually a no-op view.
    return np.ascontiguousarray(values, dtype=_WIRE_FLOAT)


def decode_analysis(b: bytes | bytearray | memoryview) -> Analysis:
    """Inverse of :func:`encode_analysis`; raises :class:`CorruptEntry` for anything it did not write."""
    data = memoryview(b).cast("B")
    if len(data) < HEADER_BYTES:
        raise CorruptEntry(f"entry is {len(data)} bytes, shorter than the {HEADER_BYTES}-byte header")
    magic, version, reserved, duration, sample_rate, patch, hop, segments, labels, dim, facts_bytes = (
        _HEADER_BODY.unpack_from(data))
    if magic != MAGIC:
        raise CorruptEntry("not an encoded Analysis (bad magic)")
    if version != SCHEMA_VERSION:
        raise CorruptEntry(f"schema version {version}, this build reads {SCHEMA_VERSION}")
    if reserved != 0:
        raise CorruptEntry("reserved header field is not zero")
    tag_count, embedding_count = segments * labels, segments * dim
    arrays_end = HEADER_BYTES + _WIRE_FLOAT.itemsize * (tag_count + embedding_count)
    expected = arrays_end + facts_bytes
    if len(data) != expected:
        raise CorruptEntry(f"entry is {len(data)} bytes, header announces {expected}")
    (stored_crc,) = _CRC.unpack_from(data, _HEADER_BODY.size)
    if zlib.crc32(data[HEADER_BYTES:], zlib.crc32(data[: _HEADER_BODY.size])) != stored_crc:
        raise CorruptEntry("checksum mismatch")
    try:
        facts = facts_from_json(json.loads(bytes(data[arrays_end:])))
    except (ValueError, KeyError, TypeError) as error:
        raise CorruptEntry(f"decode facts unreadable: {error}") from None
    floats = np.frombuffer(data, dtype=_WIRE_FLOAT, offset=HEADER_BYTES, count=tag_count + embedding_count)
    # astype copies into native-endian, writable arrays that do not pin the (possibly large) source buffer.
    tags = floats[:tag_count].astype(np.float32).reshape(segments, labels)
    embedding = floats[tag_count:].astype(np.float32).reshape(segments, dim)
    return Analysis(
        duration_seconds=duration,
        sample_rate=sample_rate,
        patch_samples=patch,
        hop_samples=hop,
        tags=tags,
        embedding=embedding,
        decode=facts,
    )


# ---------------------------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------------------------


class Cache:
    """One async interface over the backends. ``get``/``set`` never raise (except on cancellation): failures are
    counted in CACHE_ERRORS, logged once, and behave as a miss / a skipped store."""

    name: str = "abstract"

    async def get(self, key: str) -> Analysis | None:
        try:
            raw = await self._read(key)
            return None if raw is None else decode_analysis(raw)
        except Exception as exc:  # noqa: BLE001 - anything the backend or decoder throws means "miss"
            self._failed("get", exc)
            return None

    async def set(self, key: str, analysis: Analysis) -> None:
        try:
            await self._write(key, encode_analysis(analysis))
        except Exception as exc:  # noqa: BLE001 - a failed store costs a future recompute, never this request
            self._failed("set", exc)

    async def ping(self) -> bool:
        """Is the backend usable right now? For readiness/health reporting; never raises."""
        return True

    async def close(self) -> None:
        """Release connections; idempotent."""

    async def _read(self, key: str) -> bytes | None:
        raise NotImplementedError

    async def _write(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def _failed(self, op: str, exc: Exception) -> None:
        CACHE_ERRORS.labels(backend=self.name, op=op).inc()
        if isinstance(exc, _CircuitOpen):
            return  # already logged when the circuit opened; one line per outage window, not per request
        # Neither the key nor the value is logged: the error type and message say what broke.
        log.warning("%s cache %s failed, serving without cache: %s: %s", self.name, op, type(exc).__name__, exc)


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


# After a failure, Redis is left alone for this long: with a black-holed Redis every operation would otherwise cost
# a full timeout, on every request. The first operation after the window probes again (no permanent disable).
FAILURE_COOLDOWN_SECONDS = 1.0


class _CircuitOpen(ConnectionError):
    """Raised instead of contacting Redis while the post-failure cooldown runs."""


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
        except Exception:  # noqa: BLE001
            return False
        self._retry_at = 0.0
        return True

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception as exc:  # noqa: BLE001 - shutting down anyway
            log.debug("closing the Redis client failed: %s", exc)


def make_cache(settings: Settings) -> Cache:
    """Redis when ``redis_url`` is set (shared by all replicas), otherwise the in-process LRU."""
    if settings.redis_url:
        return RedisCache(settings.redis_url, settings.cache_ttl_seconds, settings.redis_timeout_seconds)
    return MemoryCache(settings.memory_cache_bytes, settings.cache_ttl_seconds)


# ---------------------------------------------------------------------------------------------------------------
# Single-flight
# ---------------------------------------------------------------------------------------------------------------


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
    except Exception as exc:  # noqa: BLE001
        CACHE_ERRORS.labels(backend=cache.name, op="set").inc()
        log.warning("%s cache set raised, result served uncached: %s: %s", cache.name, type(exc).__name__, exc)
