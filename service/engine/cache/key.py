"""The cache key: every field is something the cached value depends on (docs/cache.md)."""

from __future__ import annotations

import re

from service.config import Precision

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
