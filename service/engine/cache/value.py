"""The value format: an Analysis as exact, checksummed, host-independent bytes, the same in every backend
(docs/cache.md)."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

from service.decode.facts import facts_from_json, facts_to_json
from service.engine.analysis import Analysis
from service.engine.cache.key import SCHEMA_VERSION

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
    body = _HEADER_BODY.pack(
        MAGIC, SCHEMA_VERSION, 0, float(a.duration_seconds), *(int(v) for v in ints), len(facts_bytes)
    )
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
        _HEADER_BODY.unpack_from(data)
    )
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
