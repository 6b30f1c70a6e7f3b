"""The catalog map's 2-D projection: fitted at `taggram index build`, applied to any vector with numpy alone.

A linear projection: ``position = ((vector - centre) / scale) @ components.T``. Fitted on the index's normalised
track vectors (centred, unit length), so a catalog track's own vector lands exactly on its stored position and an
upload (normalised the same way) lands where the catalog's geometry puts it. ``pca`` keeps the two directions of
largest variance; ``standardised-pca`` first divides every dimension by its standard deviation (a few
high-variance dimensions then weigh less). ``tsne`` has no formula for a new point: it is placed among its nearest
catalog tracks (``place_by_neighbours``). Which one and why: docs/catalog.md, "Which projection".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LINEAR_PROJECTIONS = ("pca", "standardised-pca")  # numpy at build and at serve time
# t-SNE (openTSNE, the optional `map` extra) is fitted at build time only; a new point is placed among its nearest
# catalog tracks (place_by_neighbours), with numpy and the index's own search.
NEIGHBOUR_PLACED = ("tsne",)
PROJECTIONS = (*LINEAR_PROJECTIONS, *NEIGHBOUR_PLACED)
DEFAULT_PROJECTION = "pca"  # in the runtime image: docs/catalog.md, "Which projection"
PLACEMENT_NEIGHBOURS = 10  # catalog tracks a new point is placed among (docs/catalog.md: measured)
# A neighbour this close is the point itself (a catalog track's own vector, a byte-identical upload): its position.
SAME_POINT_SCORE = 1.0 - 1e-5
MAP_DIMENSIONS = 2
# A dimension whose standard deviation is below this is left unscaled (standardising a constant would divide by 0).
MIN_SCALE = 1e-12
# Rows converted to float64 at a time, fitting and placing: bounded temporaries (16 384 × 200 × 8 B = 26 MB) at any
# catalog size; the first version converted whole 65 536-row chunks and placed the catalog at once (452 MiB at 10⁵).
CHUNK_ROWS = 16_384


@dataclass(frozen=True)
class Projection:
    method: str
    centre: np.ndarray  # float64 [dim]
    scale: np.ndarray  # float64 [dim]; ones for pca
    components: np.ndarray  # float64 [2, dim], orthonormal rows, the first of largest variance

    def place(self, vectors: np.ndarray) -> np.ndarray:
        """float32 [n, 2] positions of float [n, dim] (or [dim]) vectors normalised as the index's."""
        vectors = np.atleast_2d(vectors)
        positions = np.empty((len(vectors), MAP_DIMENSIONS), np.float32)
        for start in range(0, len(vectors), CHUNK_ROWS):
            chunk = vectors[start : start + CHUNK_ROWS].astype(np.float64)
            positions[start : start + len(chunk)] = ((chunk - self.centre) / self.scale) @ self.components.T
        return positions

    def as_json(self) -> dict:
        return {
            "method": self.method,
            "centre": self.centre.tolist(),
            "scale": self.scale.tolist(),
            "components": self.components.tolist(),
        }

    @classmethod
    def from_json(cls, document: dict, dim: int) -> Projection:
        """Raises ValueError when the document is not a projection of ``dim``-dimensional vectors."""
        method = document.get("method")
        if method not in LINEAR_PROJECTIONS:
            raise ValueError(f"unknown projection method {method!r} (known: {', '.join(PROJECTIONS)})")
        centre = np.asarray(document["centre"], dtype=np.float64)
        scale = np.asarray(document["scale"], dtype=np.float64)
        components = np.asarray(document["components"], dtype=np.float64)
        if centre.shape != (dim,) or scale.shape != (dim,) or components.shape != (MAP_DIMENSIONS, dim):
            raise ValueError(
                f"projection shapes {centre.shape}, {scale.shape}, {components.shape} do not fit dim {dim}"
            )
        if not (np.all(np.isfinite(centre)) and np.all(np.isfinite(components)) and np.all(scale > 0)):
            raise ValueError("projection holds non-finite values or a non-positive scale")
        return cls(method, centre, scale, components)


@dataclass(frozen=True)
class NeighbourPlacement:
    """A projection with no formula (t-SNE): new points are placed among their nearest catalog tracks."""

    method: str
    neighbours: int

    def as_json(self) -> dict:
        return {"method": self.method, "neighbours": self.neighbours}


def from_json(document: dict, dim: int) -> Projection | NeighbourPlacement:
    """The manifest's projection; ValueError when it is not one this service can apply."""
    if document.get("method") in NEIGHBOUR_PLACED:
        neighbours = document.get("neighbours")
        if not isinstance(neighbours, int) or neighbours < 1:
            raise ValueError(f"projection {document.get('method')!r} needs a positive number of neighbours")
        return NeighbourPlacement(document["method"], neighbours)
    return Projection.from_json(document, dim)


def place_by_neighbours(positions: np.ndarray, rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """float32 [2]: the mean of the neighbours' positions weighted by their (positive) cosine; the position of a
    neighbour that is the point itself; the best neighbour's when no score is positive."""
    rows, scores = np.asarray(rows, np.int64), np.asarray(scores, np.float64)
    if scores[0] >= SAME_POINT_SCORE or not np.any(scores > 0):
        return positions[rows[0]].astype(np.float32)
    weights = np.clip(scores, 0.0, None)
    return (weights @ positions[rows].astype(np.float64) / weights.sum()).astype(np.float32)


def column_moments(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, standard deviation) of every column, float64, accumulated in chunks."""
    total = np.zeros(vectors.shape[1], np.float64)
    squares = np.zeros(vectors.shape[1], np.float64)
    for start in range(0, len(vectors), CHUNK_ROWS):
        chunk = vectors[start : start + CHUNK_ROWS].astype(np.float64)
        total += chunk.sum(axis=0)
        squares += np.square(chunk).sum(axis=0)
    mean = total / len(vectors)
    return mean, np.sqrt(np.maximum(squares / len(vectors) - np.square(mean), 0.0))


def fit(vectors: np.ndarray, method: str = DEFAULT_PROJECTION) -> Projection:
    """The projection of ``method`` fitted on float [n, dim] vectors (n ≥ 1). Deterministic: each component's sign
    makes its largest loading positive, so the same catalog always gives the same map."""
    if method not in LINEAR_PROJECTIONS:
        raise ValueError(f"not a linear projection: {method!r} (linear: {', '.join(LINEAR_PROJECTIONS)})")
    centre, spread = column_moments(vectors)
    scale = np.where(spread > MIN_SCALE, spread, 1.0) if method == "standardised-pca" else np.ones_like(centre)
    covariance = np.zeros((vectors.shape[1], vectors.shape[1]), np.float64)
    for start in range(0, len(vectors), CHUNK_ROWS):
        chunk = (vectors[start : start + CHUNK_ROWS].astype(np.float64) - centre) / scale
        covariance += chunk.T @ chunk
    values, vectors_ = np.linalg.eigh(covariance)  # ascending eigenvalues
    components = vectors_[:, np.argsort(-values, kind="stable")[:MAP_DIMENSIONS]].T.copy()
    if components.shape[0] < MAP_DIMENSIONS:  # a 1-dimensional catalog: pad with a zero axis
        components = np.vstack([components, np.zeros((MAP_DIMENSIONS - components.shape[0], vectors.shape[1]))])
    largest = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(MAP_DIMENSIONS), largest])
    components *= np.where(signs == 0, 1.0, signs)[:, None]
    return Projection(method, centre, scale, components)
