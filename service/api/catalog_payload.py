"""The catalog map's two bodies, made once per index generation (a 10⁵-point body is not rebuilt per request).

- ``application/vnd.taggram.map+json`` (the default, compact): columns, not objects. Each track id once, x and y as
  two arrays of numbers rounded to ``COORDINATE_DECIMALS``, artist and label as indexes into lists of the distinct
  values (-1: none), the representative windows as two arrays of seconds (null: none) or null when the index has
  none; gzip-compressed when the client accepts it. Sizes at 10⁵ points: docs/catalog.md.
- ``application/json`` (on ``Accept: application/json``): ``{"model", "projection", "audio_url_template", "points":
  [{track_id, x, y, artist_id, label, representative: {start_seconds, end_seconds} | null}, …]}``.

Both carry ``audio_url_template``: TAGGRAM_CATALOG_AUDIO_URL (null when unset), where a client fetches a track's
audio (``{track_id}`` replaced by the URL-encoded id: ``service.config.audio_url``).
"""

from __future__ import annotations

import gzip
import json
import threading
from dataclasses import dataclass

import numpy as np

from service.artefacts.similar.serving import LoadedIndex

COMPACT_MEDIA_TYPE = "application/vnd.taggram.map+json"
# 4 decimals of a map whose axes span a few units: far finer than a pixel of any screen showing 10⁵ points.
COORDINATE_DECIMALS = 4
GZIP_LEVEL = 6  # zlib's default: most of the gain of 9 at a fraction of the time (docs/catalog.md)
# Milliseconds: finer than the 16 ms analysis frame the windows are counted in, and than anyone hears a start.
WINDOW_DECIMALS = 3


@dataclass(frozen=True)
class MapBodies:
    signature: tuple  # the generation these bodies describe (its manifest's signature) and the audio template
    compact: bytes
    compact_gzip: bytes


def codes(values: list[str | None]) -> tuple[list[str], list[int]]:
    """(distinct values in first-seen order, each row's index into them; -1 for None)."""
    distinct: dict[str, int] = {}
    index = [-1 if v is None else distinct.setdefault(v, len(distinct)) for v in values]
    return list(distinct), index


def rounded(values: np.ndarray) -> list[float]:
    return np.round(values.astype(np.float64), COORDINATE_DECIMALS).tolist()


def window_seconds(values: np.ndarray) -> list[float | None]:
    """Seconds rounded to WINDOW_DECIMALS, None for NaN (a track without a window)."""
    return [None if v != v else v for v in np.round(values, WINDOW_DECIMALS).tolist()]  # v != v: NaN


def compact_windows(windows: np.ndarray | None) -> dict | None:
    if windows is None:
        return None
    return {"start_seconds": window_seconds(windows[:, 0]), "end_seconds": window_seconds(windows[:, 1])}


def point_windows(windows: np.ndarray | None, count: int) -> list[dict | None]:
    if windows is None:
        return [None] * count
    starts, ends = window_seconds(windows[:, 0]), window_seconds(windows[:, 1])
    return [None if s is None else {"start_seconds": s, "end_seconds": e} for s, e in zip(starts, ends)]


def compact_document(model: str, index: LoadedIndex, audio_url_template: str | None = None) -> dict:
    catalog_map = index.catalog_map
    artists, artist = codes(index.artists)
    labels, label = codes(catalog_map.labels)
    return {
        "model": model,
        "projection": catalog_map.projection.method,
        "label_kind": catalog_map.label_kind,
        "audio_url_template": audio_url_template,
        "count": len(index.track_ids),
        "track_ids": index.track_ids,
        "x": rounded(catalog_map.positions[:, 0]),
        "y": rounded(catalog_map.positions[:, 1]),
        "artists": artists,
        "artist": artist,
        "labels": labels,
        "label": label,
        "representative": compact_windows(catalog_map.windows),
    }


def points_document(model: str, index: LoadedIndex, audio_url_template: str | None = None) -> dict:
    catalog_map = index.catalog_map
    xs, ys = rounded(catalog_map.positions[:, 0]), rounded(catalog_map.positions[:, 1])
    windows = point_windows(catalog_map.windows, len(index.track_ids))
    return {
        "model": model,
        "projection": catalog_map.projection.method,
        "label_kind": catalog_map.label_kind,
        "audio_url_template": audio_url_template,
        "points": [
            {"track_id": t, "x": x, "y": y, "artist_id": a, "label": lab, "representative": w}
            for t, x, y, a, lab, w in zip(index.track_ids, xs, ys, index.artists, catalog_map.labels, windows)
        ],
    }


def encode(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


class MapBodyCache:
    """The compact body of each model's current generation, built on first request after a swap."""

    def __init__(self) -> None:
        self._bodies: dict[str, MapBodies] = {}
        self._lock = threading.Lock()  # two first requests after a swap build it once

    def get(self, model: str, index: LoadedIndex, audio_url_template: str | None = None) -> MapBodies:
        signature = (index.signature, audio_url_template)  # one process may serve several apps (the tests do)
        bodies = self._bodies.get(model)
        if bodies is not None and bodies.signature == signature:
            return bodies
        with self._lock:
            bodies = self._bodies.get(model)
            if bodies is None or bodies.signature != signature:
                compact = encode(compact_document(model, index, audio_url_template))
                bodies = MapBodies(signature, compact, gzip.compress(compact, GZIP_LEVEL, mtime=0))
                self._bodies = {**self._bodies, model: bodies}
        return bodies
