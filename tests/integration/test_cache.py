"""Specification of service/engine/cache/: key scheme, value format, backends, failure behaviour, single-flight."""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import time
import zlib

import numpy as np
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from prometheus_client import REGISTRY
from redis.asyncio.connection import SSLConnection

from service.config import Settings
from service.decode.facts import WARNING_CODES, DecodeFacts, DecodeWarning, facts_to_json
from service.engine.analysis import Analysis
from service.engine.cache import (
    HEADER_BYTES,
    SCHEMA_VERSION,
    Cache,
    CorruptEntry,
    MemoryCache,
    RedisCache,
    SharedComputationCancelled,
    SingleFlight,
    cache_key,
    decode_analysis,
    encode_analysis,
    get_or_compute,
    make_cache,
)
from service.engine.cache import key as cache_module  # the module whose SCHEMA_VERSION the key reads
from tests.support.redis_support import (  # noqa: F401 - fixtures are used by name
    RedisServer,
    free_port,
    private_redis,
    private_redis_factory,
    redis_url,
)

AUDIO = hashlib.sha256(b"some song").hexdigest()
ONNX = hashlib.sha256(b"msd-musicnn.onnx").hexdigest()
TIMEOUT = 0.2  # Redis timeout used by the fault tests
SLACK = 0.3  # scheduling slack on a shared 2-core machine


def run(coro):
    return asyncio.run(coro)


def analysis(segments: int = 3, labels: int = 5, dim: int = 4, seed: int = 0, hop: int = 48000) -> Analysis:
    rng = np.random.default_rng(seed)
    return Analysis(
        duration_seconds=segments * 2.99,
        sample_rate=16000,
        patch_samples=47872,
        hop_samples=hop,
        tags=rng.random((segments, labels), dtype=np.float32),
        embedding=rng.standard_normal((segments, dim)).astype(np.float32),
    )


def key(n: int = 0) -> str:
    return cache_key(hashlib.sha256(str(n).encode()).hexdigest(), "msd-musicnn", ONNX, 48000, precision="fp32")


def bits(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype="<f4").view("<u4")


def assert_identical(a: Analysis, b: Analysis) -> None:
    assert struct.pack("<d", a.duration_seconds) == struct.pack("<d", b.duration_seconds)
    assert (a.sample_rate, a.patch_samples, a.hop_samples) == (b.sample_rate, b.patch_samples, b.hop_samples)
    for x, y in ((a.tags, b.tags), (a.embedding, b.embedding)):
        assert x.shape == y.shape and y.dtype == np.float32
        np.testing.assert_array_equal(bits(x), bits(y))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def errors(backend: str, op: str) -> float:
    return metric("taggram_cache_errors_total", backend=backend, op=op)


# ---------------------------------------------------------------------------------------------------------------
# Value format
# ---------------------------------------------------------------------------------------------------------------

float32s = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)


@st.composite
def analyses(draw) -> Analysis:
    segments = draw(st.integers(0, 6))
    labels = draw(st.integers(0, 12))
    dim = draw(st.integers(0, 12))
    return Analysis(
        duration_seconds=draw(st.floats(allow_nan=True, allow_infinity=True)),
        sample_rate=draw(st.integers(0, 2**32 - 1)),
        patch_samples=draw(st.integers(0, 2**32 - 1)),
        hop_samples=draw(st.integers(0, 2**32 - 1)),
        tags=draw(hnp.arrays(np.float32, (segments, labels), elements=float32s)),
        embedding=draw(hnp.arrays(np.float32, (segments, dim), elements=float32s)),
        decode=draw(decode_facts()),
    )


@st.composite
def decode_facts(draw) -> DecodeFacts:
    text = st.text(max_size=40)
    return DecodeFacts(
        decoder=draw(st.sampled_from(["", "ffmpeg", "libsndfile"])),
        codec=draw(text),
        source_sample_rate=draw(st.integers(0, 384_000)),
        source_channels=draw(st.integers(0, 64)),
        declared_duration_seconds=draw(st.none() | st.floats(0, 1e6)),
        duration_seconds=draw(st.floats(0, 1e6)),
        damaged=draw(st.booleans()),
        cut_reason=draw(st.none() | text),
        warnings=draw(st.lists(st.builds(DecodeWarning, st.sampled_from(WARNING_CODES), text), max_size=3)),
    )


@settings(max_examples=200, deadline=None)
@given(analyses())
def test_round_trip_is_bit_exact_for_any_shape_and_value(a: Analysis) -> None:
    encoded = encode_analysis(a)
    facts_bytes = len(json.dumps(facts_to_json(a.decode), separators=(",", ":")).encode())
    assert len(encoded) == HEADER_BYTES + 4 * a.tags.size + 4 * a.embedding.size + facts_bytes
    decoded = decode_analysis(encoded)
    assert_identical(a, decoded)
    assert decoded.decode == a.decode


def test_special_float_values_survive_bit_for_bit() -> None:
    special = np.array(
        [[-0.0, 0.0, 1e-45, -1e-45, 1.1754942e-38, 3.4028235e38, -3.4028235e38, np.inf, -np.inf]], dtype=np.float32
    )
    payload_nan = np.array([[0x7FC12345, 0xFFA00001]], dtype=np.uint32).view(np.float32)  # quiet/signalling NaNs
    a = Analysis(-0.0, 16000, 47872, 47872, special, payload_nan)
    decoded = decode_analysis(encode_analysis(a))
    assert_identical(a, decoded)
    assert np.signbit(decoded.tags[0, 0]) and np.signbit(decoded.duration_seconds)


def test_decoded_arrays_are_native_float32_writable_copies() -> None:
    a = analysis()
    big_endian = Analysis(a.duration_seconds, 16000, 47872, 48000, a.tags.astype(">f4"), a.embedding.astype(">f4"))
    encoded = encode_analysis(big_endian)
    assert encoded == encode_analysis(a)  # the wire format does not depend on the caller's byte order
    decoded = decode_analysis(bytearray(encoded))
    assert decoded.tags.dtype == np.dtype("float32") and decoded.tags.flags.writeable
    assert decoded.segments == 3 and decoded.segment_bounds() == a.segment_bounds()


def test_header_starts_with_magic_and_schema_version() -> None:
    encoded = encode_analysis(analysis())
    assert encoded[:4] == b"TGAN"
    assert struct.unpack_from("<H", encoded, 4)[0] == SCHEMA_VERSION


def test_every_truncation_is_rejected() -> None:
    encoded = encode_analysis(analysis(segments=2, labels=3, dim=2))
    for length in range(len(encoded)):
        with pytest.raises(CorruptEntry):
            decode_analysis(encoded[:length])
    with pytest.raises(CorruptEntry):
        decode_analysis(encoded + b"\0")


def test_every_damaged_byte_is_rejected() -> None:
    encoded = encode_analysis(analysis(segments=2, labels=3, dim=2))
    for position in range(len(encoded)):
        damaged = bytearray(encoded)
        damaged[position] ^= 0x5A
        with pytest.raises(CorruptEntry):
            decode_analysis(bytes(damaged))


def with_header_field(encoded: bytes, fmt: str, offset: int, value: int) -> bytes:
    """Rewrite one header field and fix the CRC, to test the field checks rather than the checksum."""
    data = bytearray(encoded)
    struct.pack_into(fmt, data, offset, value)
    crc = zlib.crc32(bytes(data[HEADER_BYTES:]), zlib.crc32(bytes(data[: HEADER_BYTES - 4])))
    struct.pack_into("<I", data, HEADER_BYTES - 4, crc)
    return bytes(data)


@pytest.mark.parametrize(
    ("fmt", "offset", "value", "message"),
    [
        ("<H", 4, SCHEMA_VERSION + 1, "schema version"),
        ("<H", 4, SCHEMA_VERSION - 1, "schema version"),
        ("<H", 6, 1, "reserved"),
        ("<I", 28, 3, "bytes"),  # segment count disagrees with the payload length
        ("<I", 36, 1000, "bytes"),  # embedding dim too
    ],
)
def test_consistent_but_wrong_header_is_rejected(fmt: str, offset: int, value: int, message: str) -> None:
    encoded = with_header_field(encode_analysis(analysis(segments=2)), fmt, offset, value)
    with pytest.raises(CorruptEntry, match=message):
        decode_analysis(encoded)


@pytest.mark.parametrize("junk", [b"", b"TGAN", b"hello world" * 10, b"\x80\x04\x95" + bytes(100)])
def test_foreign_bytes_are_rejected(junk: bytes) -> None:
    with pytest.raises(CorruptEntry):
        decode_analysis(junk)


def test_corrupt_entry_is_a_value_error() -> None:
    assert issubclass(CorruptEntry, ValueError)


@pytest.mark.parametrize(
    "bad",
    [
        Analysis(1.0, 16000, 1, 1, np.zeros((2, 3), np.float64), np.zeros((2, 4), np.float32)),  # would round
        Analysis(1.0, 16000, 1, 1, np.zeros((2, 3), np.float32), np.zeros((3, 4), np.float32)),  # segment mismatch
        Analysis(1.0, 16000, 1, 1, np.zeros(3, np.float32), np.zeros((1, 4), np.float32)),  # not 2-D
        Analysis(1.0, -1, 1, 1, np.zeros((1, 3), np.float32), np.zeros((1, 4), np.float32)),  # negative rate
        Analysis(1.0, 16000, 2**32, 1, np.zeros((1, 3), np.float32), np.zeros((1, 4), np.float32)),  # > uint32
    ],
)
def test_encode_refuses_what_it_cannot_round_trip(bad: Analysis) -> None:
    with pytest.raises(ValueError):
        encode_analysis(bad)


# ---------------------------------------------------------------------------------------------------------------
# Key scheme
# ---------------------------------------------------------------------------------------------------------------


def test_key_layout() -> None:
    assert cache_key(AUDIO, "msd-musicnn", ONNX, 47872, precision="fp32") == (
        f"taggram:v{SCHEMA_VERSION}:msd-musicnn:{ONNX[:16]}:fp32:47872:{AUDIO}"
    )


def test_key_changes_with_every_component(monkeypatch: pytest.MonkeyPatch) -> None:
    base = cache_key(AUDIO, "msd-musicnn", ONNX, 47872, precision="fp32")
    variants = {
        "audio": cache_key(hashlib.sha256(b"other song").hexdigest(), "msd-musicnn", ONNX, 47872, precision="fp32"),
        "model": cache_key(AUDIO, "mtt-musicnn", ONNX, 47872, precision="fp32"),
        "onnx": cache_key(AUDIO, "msd-musicnn", hashlib.sha256(b"re-exported").hexdigest(), 47872, precision="fp32"),
        "hop": cache_key(AUDIO, "msd-musicnn", ONNX, 23936, precision="fp32"),
        "precision": cache_key(AUDIO, "msd-musicnn", ONNX, 47872, precision="bf16"),
    }
    monkeypatch.setattr(cache_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    variants["schema"] = cache_key(AUDIO, "msd-musicnn", ONNX, 47872, precision="fp32")
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants)


def test_key_is_canonical_in_hash_case() -> None:
    assert cache_key(AUDIO.upper(), "msd-musicnn", ONNX.upper(), 47872, precision="fp32") == cache_key(
        AUDIO, "msd-musicnn", ONNX, 47872, precision="fp32"
    )


@pytest.mark.parametrize(
    ("audio", "model", "onnx", "hop"),
    [
        (AUDIO[:-1], "msd-musicnn", ONNX, 1),  # not a sha256
        ("z" * 64, "msd-musicnn", ONNX, 1),  # not hex
        (AUDIO, "msd:musicnn", ONNX, 1),  # would make the key ambiguous
        (AUDIO, "", ONNX, 1),
        (AUDIO, "msd-musicnn", ONNX[:15], 1),  # too short to identify the graph
        (AUDIO, "msd-musicnn", ONNX, 0),
        (AUDIO, "msd-musicnn", ONNX, True),
    ],
)
def test_key_rejects_malformed_components(audio: str, model: str, onnx: str, hop: int) -> None:
    with pytest.raises(ValueError):
        cache_key(audio, model, onnx, hop, precision="fp32")


# ---------------------------------------------------------------------------------------------------------------
# MemoryCache
# ---------------------------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_cache_round_trip_and_miss() -> None:
    async def scenario() -> None:
        cache = MemoryCache(max_bytes=1 << 20, ttl_seconds=0)
        a = analysis()
        assert await cache.get(key(1)) is None
        await cache.set(key(1), a)
        assert_identical(a, await cache.get(key(1)))
        assert cache.size_bytes == len(encode_analysis(a))
        assert cache.name == "memory" and await cache.ping()
        await cache.close()
        assert len(cache) == 0 and cache.size_bytes == 0

    run(scenario())


def test_memory_cache_evicts_least_recently_used_by_bytes() -> None:
    async def scenario() -> None:
        entry = len(encode_analysis(analysis()))
        cache = MemoryCache(max_bytes=2 * entry + entry // 2, ttl_seconds=0)  # room for two entries
        await cache.set(key(1), analysis(seed=1))
        await cache.set(key(2), analysis(seed=2))
        assert await cache.get(key(1)) is not None  # 1 is now the most recently used
        await cache.set(key(3), analysis(seed=3))
        assert key(2) not in cache and key(1) in cache and key(3) in cache
        assert cache.size_bytes == 2 * entry

        big = analysis(segments=12)  # over twice the size of the others (with the fixed facts trailer): evicts both
        await cache.set(key(4), big)
        assert list(cache._entries) == [key(4)] and cache.size_bytes == len(encode_analysis(big))

    run(scenario())


def test_memory_cache_skips_entries_larger_than_the_bound() -> None:
    async def scenario() -> None:
        small = analysis(segments=1)
        cache = MemoryCache(max_bytes=len(encode_analysis(small)) * 3, ttl_seconds=0)
        await cache.set(key(1), small)
        await cache.set(key(2), analysis(segments=20))
        assert await cache.get(key(2)) is None
        assert key(1) in cache and cache.size_bytes == len(encode_analysis(small))
        nothing = MemoryCache(max_bytes=0, ttl_seconds=0)
        await nothing.set(key(1), small)
        assert len(nothing) == 0

    run(scenario())


def test_memory_cache_replacing_an_entry_keeps_the_accounting_exact() -> None:
    async def scenario() -> None:
        cache = MemoryCache(max_bytes=1 << 20, ttl_seconds=0)
        await cache.set(key(1), analysis(segments=5))
        await cache.set(key(1), analysis(segments=2))
        assert len(cache) == 1 and cache.size_bytes == len(encode_analysis(analysis(segments=2)))

    run(scenario())


def test_memory_cache_honours_ttl() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        cache = MemoryCache(max_bytes=1 << 20, ttl_seconds=60, clock=clock)
        await cache.set(key(1), analysis())
        clock.now += 59.9
        assert await cache.get(key(1)) is not None  # a hit does not extend the lifetime
        clock.now += 0.1
        assert await cache.get(key(1)) is None
        assert len(cache) == 0 and cache.size_bytes == 0  # expired entries give their bytes back

        forever = MemoryCache(max_bytes=1 << 20, ttl_seconds=0, clock=clock)
        await forever.set(key(1), analysis())
        clock.now += 10 * 365 * 86400
        assert await forever.get(key(1)) is not None

    run(scenario())


def test_memory_cache_store_of_unencodable_analysis_is_counted_not_raised() -> None:
    async def scenario() -> None:
        cache = MemoryCache(max_bytes=1 << 20, ttl_seconds=0)
        before = errors("memory", "set")
        await cache.set(key(1), Analysis(1.0, 1, 1, 1, np.zeros((1, 2)), np.zeros((1, 2))))  # float64
        assert errors("memory", "set") == before + 1 and len(cache) == 0

    run(scenario())


# ---------------------------------------------------------------------------------------------------------------
# RedisCache against the shared local server
# ---------------------------------------------------------------------------------------------------------------


def test_redis_cache_round_trip_stores_encoded_bytes_with_ttl(redis_url: str) -> None:
    a = analysis()

    async def scenario() -> None:
        cache = RedisCache(redis_url, ttl_seconds=3600, timeout_seconds=1.0)
        try:
            assert cache.name == "redis" and await cache.ping()
            assert await cache.get(key(1)) is None
            await cache.set(key(1), a)
            assert_identical(a, await cache.get(key(1)))
        finally:
            await cache.close()

    run(scenario())
    plain = redis.Redis.from_url(redis_url)
    try:
        assert plain.get(key(1)) == encode_analysis(a)
        assert 3590 <= plain.ttl(key(1)) <= 3600
    finally:
        plain.close()


def test_redis_cache_ttl_zero_means_no_expiry(redis_url: str) -> None:
    async def scenario() -> None:
        cache = RedisCache(redis_url, ttl_seconds=0, timeout_seconds=1.0)
        try:
            await cache.set(key(2), analysis())
        finally:
            await cache.close()

    run(scenario())
    plain = redis.Redis.from_url(redis_url)
    try:
        assert plain.ttl(key(2)) == -1  # exists, no expiry
    finally:
        plain.close()


def test_redis_cache_corrupt_or_stale_entry_is_a_counted_miss(redis_url: str) -> None:
    plain = redis.Redis.from_url(redis_url)
    try:
        plain.set(key(3), b"definitely not an analysis")
        plain.set(key(4), encode_analysis(analysis())[:-1])
    finally:
        plain.close()

    async def scenario() -> None:
        cache = RedisCache(redis_url, ttl_seconds=60, timeout_seconds=1.0)
        try:
            before = errors("redis", "get")
            assert await cache.get(key(3)) is None
            assert await cache.get(key(4)) is None
            assert errors("redis", "get") == before + 2
            # A corrupt entry is not a Redis outage: the next operation is not skipped.
            await cache.set(key(3), analysis())
            assert await cache.get(key(3)) is not None
        finally:
            await cache.close()

    run(scenario())


# ---------------------------------------------------------------------------------------------------------------
# URLs: TLS and credentials
# ---------------------------------------------------------------------------------------------------------------


def test_rediss_url_configures_tls_credentials_db_and_timeouts() -> None:
    async def scenario() -> None:
        cache = RedisCache("rediss://user:p%40ss%3Aw0rd@cache.example:6380/7", ttl_seconds=60, timeout_seconds=0.3)
        try:
            pool = cache.client.connection_pool
            kwargs = pool.connection_kwargs
            assert issubclass(pool.connection_class, SSLConnection)
            assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.example", 6380, 7)
            assert (kwargs["username"], kwargs["password"]) == ("user", "p@ss:w0rd")
            assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.3
            assert kwargs["retry"].get_retries() == 0
        finally:
            await cache.close()

    run(scenario())


def test_rediss_against_a_real_tls_server(private_redis_factory) -> None:
    server: RedisServer = private_redis_factory(tls=True)
    assert server.url.startswith("rediss://")

    async def scenario() -> None:
        cache = RedisCache(server.url, ttl_seconds=60, timeout_seconds=2.0)
        try:
            assert await cache.ping()
            await cache.set(key(1), analysis())
            assert_identical(analysis(), await cache.get(key(1)))
        finally:
            await cache.close()

    run(scenario())


def test_password_in_url_is_used_and_a_wrong_one_is_just_a_miss(private_redis_factory) -> None:
    server: RedisServer = private_redis_factory(password="s3cr@t:/pw")

    async def scenario() -> None:
        good = RedisCache(server.url, ttl_seconds=60, timeout_seconds=1.0)
        bad = RedisCache(f"redis://:wrong@127.0.0.1:{server.port}/0", ttl_seconds=60, timeout_seconds=1.0)
        try:
            await good.set(key(1), analysis())
            assert await good.get(key(1)) is not None
            before = errors("redis", "get")
            assert await bad.get(key(1)) is None
            assert errors("redis", "get") == before + 1
            assert not await bad.ping()
        finally:
            await good.close()
            await bad.close()

    run(scenario())


# ---------------------------------------------------------------------------------------------------------------
# Failure behaviour
# ---------------------------------------------------------------------------------------------------------------


async def timed(coro) -> tuple[object, float]:
    start = time.monotonic()
    result = await coro
    return result, time.monotonic() - start


def test_closed_port_never_raises() -> None:
    async def scenario() -> None:
        cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", ttl_seconds=60, timeout_seconds=TIMEOUT)
        try:
            before = (errors("redis", "get"), errors("redis", "set"))
            assert await cache.get(key(1)) is None
            await cache.set(key(1), analysis())
            assert not await cache.ping()
            assert (errors("redis", "get"), errors("redis", "set")) == (before[0] + 1, before[1] + 1)
            result, elapsed = await timed(get_or_compute(cache, SingleFlight(), key(1), _constant(analysis())))
            assert result[1] is False and elapsed < TIMEOUT + SLACK
        finally:
            await cache.close()

    run(scenario())


def test_killed_server_is_bypassed_and_hits_resume_after_restart(private_redis: RedisServer) -> None:
    async def scenario() -> None:
        cache = RedisCache(private_redis.url, ttl_seconds=60, timeout_seconds=TIMEOUT, cooldown_seconds=0)
        try:
            await cache.set(key(1), analysis())
            assert await cache.get(key(1)) is not None

            private_redis.kill()
            get_errors, set_errors = errors("redis", "get"), errors("redis", "set")
            got, elapsed = await timed(cache.get(key(1)))
            assert got is None and elapsed < TIMEOUT + SLACK
            _, elapsed = await timed(cache.set(key(2), analysis()))
            assert elapsed < TIMEOUT + SLACK
            assert errors("redis", "get") == get_errors + 1 and errors("redis", "set") == set_errors + 1
            assert not await cache.ping()

            private_redis.restart()  # same port, empty
            assert await cache.get(key(1)) is None  # a genuine miss now, not an error
            assert errors("redis", "get") == get_errors + 1
            await cache.set(key(1), analysis())
            assert_identical(analysis(), await cache.get(key(1)))
        finally:
            await cache.close()

    run(scenario())


def test_frozen_server_costs_at_most_the_timeout(private_redis: RedisServer) -> None:
    async def scenario() -> None:
        cache = RedisCache(private_redis.url, ttl_seconds=60, timeout_seconds=TIMEOUT, cooldown_seconds=0)
        try:
            await cache.set(key(1), analysis())
            private_redis.pause()  # accepts connections, never answers
            before = errors("redis", "get"), errors("redis", "set")
            got, elapsed = await timed(cache.get(key(1)))
            assert got is None and TIMEOUT * 0.9 <= elapsed < TIMEOUT + SLACK
            _, elapsed = await timed(cache.set(key(1), analysis()))
            assert elapsed < TIMEOUT + SLACK
            assert (errors("redis", "get"), errors("redis", "set")) == (before[0] + 1, before[1] + 1)

            private_redis.resume()
            assert_identical(analysis(), await cache.get(key(1)))  # keeps trying: no permanent disable
        finally:
            await cache.close()

    run(scenario())


def test_the_timeout_bounds_each_operation_even_if_the_url_loosens_socket_timeouts(private_redis: RedisServer) -> None:
    async def scenario() -> None:
        url = f"{private_redis.url}?socket_timeout=30&socket_connect_timeout=30"  # query options win in redis-py
        cache = RedisCache(url, ttl_seconds=60, timeout_seconds=TIMEOUT, cooldown_seconds=0)
        try:
            private_redis.pause()
            got, elapsed = await timed(cache.get(key(1)))
            assert got is None and elapsed < TIMEOUT + SLACK
        finally:
            private_redis.resume()
            await cache.close()

    run(scenario())


def test_after_a_failure_redis_is_skipped_until_the_cooldown_ends(private_redis: RedisServer) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        cache = RedisCache(private_redis.url, ttl_seconds=60, timeout_seconds=TIMEOUT, cooldown_seconds=5, clock=clock)
        try:
            await cache.set(key(1), analysis())
            private_redis.pause()
            _, first = await timed(cache.get(key(1)))
            before = errors("redis", "get")
            got, second = await timed(cache.get(key(1)))  # within the cooldown: not even attempted
            assert got is None and first >= TIMEOUT * 0.9 and second < 0.05
            assert errors("redis", "get") == before + 1  # skipped operations still count as errors

            private_redis.resume()
            clock.now += 4.9
            assert await cache.get(key(1)) is None
            clock.now += 0.1
            assert await cache.get(key(1)) is not None  # cooldown over: probed, and back
        finally:
            await cache.close()

    run(scenario())


def test_make_cache_picks_the_backend_from_settings(redis_url: str) -> None:
    async def scenario() -> None:
        memory = make_cache(Settings(redis_url=None, memory_cache_bytes=1234, cache_ttl_seconds=5))
        assert isinstance(memory, MemoryCache) and (memory.max_bytes, memory.ttl_seconds) == (1234, 5)
        remote = make_cache(Settings(redis_url=redis_url, redis_timeout_seconds=0.5, cache_ttl_seconds=7))
        try:
            assert isinstance(remote, RedisCache) and (remote.timeout_seconds, remote.ttl_seconds) == (0.5, 7)
            assert await remote.ping()
        finally:
            await remote.close()

    run(scenario())


# ---------------------------------------------------------------------------------------------------------------
# SingleFlight
# ---------------------------------------------------------------------------------------------------------------


class Computation:
    """A controllable compute(): counts calls, blocks until released, records whether it was cancelled."""

    def __init__(self, result=None, error: Exception | None = None) -> None:
        self.result, self.error = result, error
        self.calls = 0
        self.cancelled = False
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self):
        self.calls += 1
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.error is not None:
            raise self.error
        return self.result


def _constant(value):
    async def compute():
        return value

    return compute


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_concurrent_identical_calls_compute_once() -> None:
    async def scenario() -> None:
        flight, compute = SingleFlight(), Computation(result=object())
        callers = [asyncio.create_task(flight.run("k", compute)) for _ in range(20)]
        await compute.started.wait()
        assert "k" in flight
        compute.release.set()
        results = await asyncio.gather(*callers)
        assert compute.calls == 1 and all(r is compute.result for r in results)
        assert "k" not in flight and len(flight) == 0

        again = Computation(result="fresh")
        again.release.set()
        assert await flight.run("k", again) == "fresh" and again.calls == 1  # finished flights are not reused

    run(scenario())


def test_different_keys_do_not_share() -> None:
    async def scenario() -> None:
        flight = SingleFlight()
        a, b = Computation(result="a"), Computation(result="b")
        a.release.set(), b.release.set()
        assert await asyncio.gather(flight.run("a", a), flight.run("b", b)) == ["a", "b"]

    run(scenario())


def test_an_exception_reaches_every_caller_and_is_not_cached() -> None:
    async def scenario() -> None:
        flight, compute = SingleFlight(), Computation(error=RuntimeError("decoder exploded"))
        callers = [asyncio.create_task(flight.run("k", compute)) for _ in range(5)]
        await compute.started.wait()
        compute.release.set()
        outcomes = await asyncio.gather(*callers, return_exceptions=True)
        assert compute.calls == 1
        assert all(isinstance(o, RuntimeError) and str(o) == "decoder exploded" for o in outcomes)
        assert len(flight) == 0
        assert await flight.run("k", _constant("retried")) == "retried"

    run(scenario())


def test_cancelling_the_first_caller_does_not_strand_the_others() -> None:
    async def scenario() -> None:
        flight, compute = SingleFlight(), Computation(result="done")
        first = asyncio.create_task(flight.run("k", compute))
        await compute.started.wait()
        others = [asyncio.create_task(flight.run("k", compute)) for _ in range(3)]
        await settle()
        first.cancel()  # client disconnected
        await settle()
        assert first.cancelled() and not compute.cancelled
        compute.release.set()
        assert await asyncio.wait_for(asyncio.gather(*others), timeout=2) == ["done"] * 3
        assert compute.calls == 1

    run(scenario())


def test_when_every_caller_leaves_the_computation_is_cancelled() -> None:
    async def scenario() -> None:
        flight, compute = SingleFlight(), Computation(result="unused")
        callers = [asyncio.create_task(flight.run("k", compute)) for _ in range(3)]
        await compute.started.wait()
        for caller in callers:
            caller.cancel()
        await asyncio.gather(*callers, return_exceptions=True)
        await settle()
        assert compute.cancelled and len(flight) == 0
        assert await flight.run("k", _constant("recomputed")) == "recomputed"

    run(scenario())


def test_cancelled_before_the_computation_even_started() -> None:
    async def scenario() -> None:
        flight, compute = SingleFlight(), Computation(result="unused")
        caller = asyncio.create_task(flight.run("k", compute))
        await asyncio.sleep(0)  # caller registered; the computation task has not run a single step yet
        caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
        await settle()
        assert caller.cancelled() and len(flight) == 0

    run(scenario())


def test_computation_cancelled_from_elsewhere_gives_waiters_a_clear_error() -> None:
    async def scenario() -> None:
        flight, compute = SingleFlight(), Computation(result="unused")
        callers = [asyncio.create_task(flight.run("k", compute)) for _ in range(3)]
        await compute.started.wait()
        flight._flights["k"].task.cancel()  # e.g. shutdown cancelling every task
        outcomes = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), timeout=2)
        assert all(isinstance(o, SharedComputationCancelled) for o in outcomes)
        assert len(flight) == 0

    run(scenario())


# ---------------------------------------------------------------------------------------------------------------
# get_or_compute
# ---------------------------------------------------------------------------------------------------------------


def test_get_or_compute_computes_once_then_hits() -> None:
    async def scenario() -> None:
        cache, flight, a = MemoryCache(1 << 20, 0), SingleFlight(), analysis()
        hits, misses = (metric(f"taggram_cache_{m}_total", backend="memory") for m in ("hits", "misses"))
        computed, cached = await get_or_compute(cache, flight, key(1), _constant(a))
        assert computed is a and cached is False
        again, cached = await get_or_compute(cache, flight, key(1), _unreachable)
        assert cached is True and again is not a
        assert_identical(a, again)
        assert metric("taggram_cache_hits_total", backend="memory") == hits + 1
        assert metric("taggram_cache_misses_total", backend="memory") == misses + 1

    run(scenario())


async def _unreachable():
    raise AssertionError("should have been served from the cache")


class CountingCache(MemoryCache):
    def __init__(self) -> None:
        super().__init__(1 << 20, 0)
        self.sets = 0

    async def set(self, key: str, analysis: Analysis) -> None:
        self.sets += 1
        await super().set(key, analysis)


def test_get_or_compute_concurrent_misses_compute_and_store_once() -> None:
    async def scenario() -> None:
        cache, flight, compute = CountingCache(), SingleFlight(), Computation(result=analysis())
        callers = [asyncio.create_task(get_or_compute(cache, flight, key(1), compute)) for _ in range(10)]
        await compute.started.wait()
        compute.release.set()
        results = await asyncio.gather(*callers)
        assert compute.calls == 1 and cache.sets == 1
        assert all(r == (compute.result, False) for r in results)
        assert (await get_or_compute(cache, flight, key(1), _unreachable))[1] is True

    run(scenario())


class ExplodingCache(Cache):
    """A third-party backend that breaks its contract by raising from set()."""

    name = "memory"

    async def get(self, key: str) -> Analysis | None:
        return None

    async def set(self, key: str, analysis: Analysis) -> None:
        raise OSError("disk full")


def test_get_or_compute_survives_a_failing_store() -> None:
    async def scenario() -> None:
        before = errors("memory", "set")
        result, cached = await get_or_compute(ExplodingCache(), SingleFlight(), key(1), _constant(analysis()))
        assert cached is False and result.segments == 3
        assert errors("memory", "set") == before + 1

    run(scenario())


def test_get_or_compute_lets_compute_errors_through() -> None:
    async def scenario() -> None:
        async def broken():
            raise ValueError("unsupported codec")

        with pytest.raises(ValueError, match="unsupported codec"):
            await get_or_compute(MemoryCache(1 << 20, 0), SingleFlight(), key(1), broken)

    run(scenario())
