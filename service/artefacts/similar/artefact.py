"""The index artefact: ``<model>.json`` (the manifest, the commit point) + the files it names.

A generation is three to five files in the index directory::

    <model>.json                          manifest: written last, by an atomic rename (the commit point)
    <model>-<digest>.npy | .usearch       the normalised vectors (exact) or the HNSW graph (usearch)
    <model>-<digest>.tracks.parquet       row → track_id, artist_id, title
    <model>-<digest>.map.parquet          row → x, y, label on the catalog map (its projection is in the manifest)
                                          and the track's representative window (when the backfill wrote one)
    <model>-<digest>.artists.parquet      artist → tracks, pooled vector and subgenre scores, nearest artists

The data files are named by a digest of their content, so a new generation never overwrites a file a running
server has mapped: a reader that follows a manifest always finds the files that manifest names, and one rename
swaps a whole generation. The manifest records each file's sha256; the loader checks them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.artefacts.durable import atomic_write
from service.errors import IndexFileError

INDEX_FORMAT = 1
METRIC = "cosine"  # inner product of vectors that are centred and unit length
NORMALISATION = "catalog_mean_removed_unit_length"
MANIFEST_SUFFIX = ".json"
DIGEST_CHARS = 12  # of a data file's sha256 in its name: unique per content, short to read


class IndexFiles(BaseModel):
    vectors: str  # file name in the index directory
    vectors_sha256: str = Field(pattern="^[0-9a-f]{64}$")
    tracks: str
    tracks_sha256: str = Field(pattern="^[0-9a-f]{64}$")


class MapInfo(BaseModel):
    file: str  # <model>-<digest>.map.parquet: row → x, y, label (the index's row order)
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    projection: dict  # projection.Projection.as_json(): method, centre, scale, components
    label: str  # what the label column holds: "top tag", or "head NAME" (index build --label-head)
    # The file also holds representative_start_seconds / _end_seconds (the backfill's, output format 3): each track's
    # representative window. False: built from an older backfill output, or before the columns existed.
    representative: bool = False


class ArtistsInfo(BaseModel):
    file: str  # <model>-<digest>.artists.parquet: artist → tracks, pooled vector, subgenre mean/std, nearest
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    count: int = Field(ge=0)
    taxonomy: str  # the taxonomy the subgenre scores come from
    subgenres: list[str]  # the columns of subgenre_mean / subgenre_std, in order


class IndexManifest(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    format: int
    model: str
    onnx_sha256: str = Field(pattern="^[0-9a-f]{64}$")
    precision: str = "fp32"  # of the catalog's embeddings (absent in indexes built before bf16 existed: fp32)
    count: int = Field(ge=1)
    dim: int = Field(ge=1)
    metric: str
    normalisation: dict  # {"method": NORMALISATION, "mean": [dim floats]}
    library: str  # "numpy" (exact) or "usearch"
    library_version: str
    storage: str  # "f32" or "f16" (build.HNSW_STORAGES)
    hnsw: dict | None = None  # connectivity, expansion_add, expansion_search
    duplicate_threshold: float
    duplicate_calibration: str
    has_artists: bool
    files: IndexFiles
    source: dict  # backfill directory, its digest, the artists CSV and its digest
    built_at: float  # unix seconds
    build_seconds: float
    # The catalog map and the pooled artists (catalog.py); absent in generations built before them.
    map: MapInfo | None = None
    artists: ArtistsInfo | None = None

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.normalisation["mean"], dtype=np.float32)


def manifest_path(directory: Path, model: str) -> Path:
    return directory / f"{model}{MANIFEST_SUFFIX}"


def read_manifest(path: Path) -> IndexManifest:
    try:
        manifest = IndexManifest.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise IndexFileError(f"index manifest {path} does not exist") from None
    except (OSError, ValueError, ValidationError) as error:
        raise IndexFileError(f"index manifest {path} is invalid: {' '.join(str(error).splitlines()[:3])}") from None
    if manifest.format != INDEX_FORMAT:
        raise IndexFileError(
            f"index manifest {path}: format {manifest.format} is not supported (expected {INDEX_FORMAT})"
        )
    if manifest.metric != METRIC or manifest.normalisation.get("method") != NORMALISATION:
        raise IndexFileError(f"index manifest {path}: metric {manifest.metric!r} / normalisation is not supported")
    if len(manifest.normalisation.get("mean", ())) != manifest.dim:
        raise IndexFileError(f"index manifest {path}: the mean vector does not have {manifest.dim} values")
    return manifest


def normalise(vectors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Centre on the catalog mean, then unit length. Raw musicnn embeddings all share a large common component
    (cosine between unrelated tracks ≈ 0.9), so without centring the margins between a re-encode and the closest
    other track are thin (issue #13's trial); a zero vector after centring stays zero (scores 0 with everything)."""
    centred = np.atleast_2d(np.asarray(vectors, dtype=np.float32)) - mean
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return (centred / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def catalog_mean(raw: np.ndarray) -> np.ndarray:
    """The catalog's mean embedding, accumulated in float64 (10⁶ float32 rows lose digits summed in float32)."""
    return np.asarray(raw, dtype=np.float64).mean(axis=0).astype(np.float32)


def normalise_catalog(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A catalog's raw embeddings → (the vectors an index stores, the mean every query is normalised with). The one
    catalog normalisation: ``taggram index build`` and bench/studies/similar.py both call it."""
    mean = catalog_mean(raw)
    return normalise(raw, mean), mean


def write_manifest(path: Path, manifest: IndexManifest) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(json.dumps(manifest.model_dump(), indent=1)))
