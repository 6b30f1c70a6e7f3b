"""Artists, pooled at `taggram index build` so that `GET /artists/{artist_id}` is a lookup.

Per artist: the pooled vector (the mean of its tracks' normalised vectors, scaled to unit length: mean pooling, the
aggregation Groover's report found best from segments to songs and proposes for an artist's tracks), the pooled
subgenre scores (the mean of its tracks' subgenre scores, and their standard deviation: how much the tracks agree),
and its nearest other artists by the cosine of the pooled vectors, the artist itself excluded. Tracks without an
artist belong to no artist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEAREST_ARTISTS = 10  # stored per artist; a request asks for at most this many
SIMILARITY_CHUNK = 256  # artists scored against all per step: [chunk, artists] temporaries, ≈ 0.4 GB at 10^5 artists


@dataclass(frozen=True)
class PooledArtists:
    artist_ids: list[str]  # sorted
    track_rows: list[np.ndarray]  # per artist, the index rows of its tracks (int64, ascending)
    vectors: np.ndarray  # float32 [artists, dim], unit length (zero when the mean is zero)
    subgenre_mean: np.ndarray  # float32 [artists, subgenres]
    subgenre_std: np.ndarray  # float32 [artists, subgenres] (population standard deviation; 0 for one track)
    nearest: np.ndarray  # int32 [artists, min(NEAREST_ARTISTS, artists - 1)], best first
    nearest_score: np.ndarray  # float32, same shape


def group_rows(artist_of_row: list[str | None]) -> tuple[list[str], list[np.ndarray]]:
    """(sorted artist ids, each one's rows)."""
    rows: dict[str, list[int]] = {}
    for row, artist in enumerate(artist_of_row):
        if artist is not None:
            rows.setdefault(artist, []).append(row)
    ids = sorted(rows)
    return ids, [np.asarray(rows[a], np.int64) for a in ids]


def nearest_others(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each unit vector, the k others of highest cosine, best first (itself excluded; ties: lower row first)."""
    count = len(vectors)
    k = min(k, count - 1)
    nearest = np.empty((count, k), np.int32)
    scores = np.empty((count, k), np.float32)
    if k <= 0:
        return nearest, scores
    for start in range(0, count, SIMILARITY_CHUNK):
        similarity = vectors[start : start + SIMILARITY_CHUNK] @ vectors.T
        similarity[np.arange(len(similarity)), np.arange(start, start + len(similarity))] = -np.inf
        if k < count - 1:
            top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        else:  # every other artist: itself (at -inf) sorts last
            top = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        top_scores = np.take_along_axis(similarity, top, axis=1)
        order = np.lexsort((top, -top_scores), axis=1)[:, :k]
        nearest[start : start + len(similarity)] = np.take_along_axis(top, order, axis=1)
        scores[start : start + len(similarity)] = np.take_along_axis(top_scores, order, axis=1)
    return nearest, scores


def pool(artist_of_row: list[str | None], vectors: np.ndarray, subgenre_scores: np.ndarray) -> PooledArtists:
    """Pool the index's normalised track vectors [tracks, dim] and subgenre scores [tracks, subgenres] per artist."""
    ids, track_rows = group_rows(artist_of_row)
    dim, subgenres = vectors.shape[1], subgenre_scores.shape[1]
    pooled = np.zeros((len(ids), dim), np.float64)
    mean = np.zeros((len(ids), subgenres), np.float64)
    std = np.zeros((len(ids), subgenres), np.float64)
    for i, rows in enumerate(track_rows):
        pooled[i] = vectors[rows].astype(np.float64).mean(axis=0)
        scores = subgenre_scores[rows].astype(np.float64)
        mean[i], std[i] = scores.mean(axis=0), scores.std(axis=0)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    unit = (pooled / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    nearest, nearest_score = nearest_others(unit, NEAREST_ARTISTS)
    return PooledArtists(ids, track_rows, unit, mean.astype(np.float32), std.astype(np.float32), nearest, nearest_score)
