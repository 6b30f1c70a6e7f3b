"""The catalog map and the pooled artists of an index generation: written by `taggram index build`, loaded with it.

Both are content-addressed Parquet files beside the vectors (``<model>-<digest>.map.parquet``,
``<model>-<digest>.artists.parquet``), named in the manifest with their sha256 and checked on load like the
vectors: they are committed, swapped and validated with the index, never apart from it. The map file also carries
each track's representative window (``representative_start_seconds``, ``representative_end_seconds``, the
backfill's columns) when the manifest's ``map.representative`` says so: the window the page's map plays on hover.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.artefacts.durable import atomic_write
from service.artefacts.manifest import sha256_file
from service.artefacts.similar import artefact
from service.artefacts.similar import projection as projections
from service.artefacts.similar.artists import PooledArtists

MAP_SUFFIX = ".map.parquet"
ARTISTS_SUFFIX = ".artists.parquet"
MAP_LABEL = "top tag"  # the label column: the track's highest mean tag score (the backfill's tag_scores)
HEAD_LABEL = "head"  # or "head NAME": that head's most probable class on the track's mean embedding
# The backfill's columns (output format 3, service/offline/backfill/output.py), kept under the same names in the map.
WINDOW_COLUMNS = ("representative_start_seconds", "representative_end_seconds")


def window_problem(windows: np.ndarray) -> int | None:
    """The first row of float64 [tracks, 2] (start, end) seconds that is not a window (NaN in both: none), or None:
    a window starts at or after 0 and ends after it starts, both finite."""
    missing = np.isnan(windows).all(axis=1)
    with np.errstate(invalid="ignore"):
        good = np.isfinite(windows).all(axis=1) & (windows[:, 0] >= 0) & (windows[:, 1] > windows[:, 0])
    bad = np.flatnonzero(~(missing | good))
    return int(bad[0]) if len(bad) else None


def write_content_addressed(output: Path, model: str, suffix: str, write) -> tuple[str, str]:
    """``write(path)`` to a staging file, then renamed to ``<model>-<digest>{suffix}``; (file name, sha256)."""
    staging = output / f".{model}-build{suffix}"
    atomic_write(staging, write)
    sha = sha256_file(staging)
    name = f"{model}-{sha[: artefact.DIGEST_CHARS]}{suffix}"
    staging.replace(output / name)
    return name, sha


def write_map(
    output: Path,
    model: str,
    positions: np.ndarray,
    labelled: tuple[list[str | None], str],
    projection: projections.Projection | projections.NeighbourPlacement,
    windows: np.ndarray | None = None,
) -> artefact.MapInfo:
    """``labelled``: (one label per row, what they are: MAP_LABEL or "head NAME"); ``windows``: float64 [rows, 2]
    representative (start, end) seconds, NaN for a track without one, or None when the backfill has none."""
    labels, label_kind = labelled
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {
        "x": pa.array(positions[:, 0], pa.float32()),
        "y": pa.array(positions[:, 1], pa.float32()),
        "label": pa.array(labels, pa.string()).dictionary_encode(),
    }
    if windows is not None:
        for i, name in enumerate(WINDOW_COLUMNS):
            columns[name] = pa.array(windows[:, i], pa.float64(), mask=np.isnan(windows[:, i]))
    table = pa.table(columns)
    name, sha = write_content_addressed(output, model, MAP_SUFFIX, lambda path: pq.write_table(table, path))
    return artefact.MapInfo(
        file=name, sha256=sha, projection=projection.as_json(), label=label_kind, representative=windows is not None
    )


def write_artists(
    output: Path, model: str, pooled: PooledArtists, taxonomy: str, subgenres: list[str]
) -> artefact.ArtistsInfo:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def fixed(values: np.ndarray, kind) -> pa.Array:
        return (
            pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), kind), max(values.shape[1], 1))
            if values.shape[1]
            else pa.array([[] for _ in range(len(values))], pa.list_(kind))
        )

    table = pa.table(
        {
            "artist_id": pa.array(pooled.artist_ids, pa.string()),
            "rows": pa.array([r.tolist() for r in pooled.track_rows], pa.list_(pa.int64())),
            "vector": fixed(pooled.vectors, pa.float32()),
            "subgenre_mean": fixed(pooled.subgenre_mean, pa.float32()),
            "subgenre_std": fixed(pooled.subgenre_std, pa.float32()),
            "nearest": fixed(pooled.nearest, pa.int32()),
            "nearest_score": fixed(pooled.nearest_score, pa.float32()),
        }
    )
    name, sha = write_content_addressed(output, model, ARTISTS_SUFFIX, lambda path: pq.write_table(table, path))
    return artefact.ArtistsInfo(
        file=name, sha256=sha, count=len(pooled.artist_ids), taxonomy=taxonomy, subgenres=subgenres
    )


@dataclass(frozen=True)
class CatalogMap:
    projection: projections.Projection | projections.NeighbourPlacement
    positions: np.ndarray  # float32 [tracks, 2], the index's row order
    labels: list[str | None]
    label_kind: str
    # float64 [tracks, 2] representative (start, end) seconds, NaN rows for tracks without one; None: the index was
    # built from a backfill output without the columns (the page then plays a track's first 30 s: docs/catalog.md)
    windows: np.ndarray | None = None


@dataclass(frozen=True)
class ArtistEntry:
    artist_id: str
    rows: list[int]
    subgenres: list[tuple[str, float, float]]  # (subgenre, mean score, spread), best mean first
    nearest: list[tuple[str, float]]  # (artist_id, cosine of the pooled vectors), best first


@dataclass(frozen=True)
class Artists:
    taxonomy: str
    subgenres: list[str]
    ids: list[str]
    index: dict[str, int]
    table: object  # the pyarrow Table, read once; entries are built per request (one artist's row)

    def entry(self, artist_id: str) -> ArtistEntry | None:
        i = self.index.get(artist_id)
        if i is None:
            return None
        row = {name: self.table.column(name)[i].as_py() for name in self.table.column_names}
        means, spreads = np.asarray(row["subgenre_mean"], np.float32), np.asarray(row["subgenre_std"], np.float32)
        order = np.argsort(-means, kind="stable")  # ties keep the taxonomy's order, as suggestions do
        return ArtistEntry(
            artist_id,
            row["rows"],
            [(self.subgenres[j], float(means[j]), float(spreads[j])) for j in order],
            [(self.ids[j], float(s)) for j, s in zip(row["nearest"], row["nearest_score"])],
        )


def checked(path: Path, expected: str) -> Path:
    try:
        actual = sha256_file(path)
    except OSError as error:
        raise artefact.IndexFileError(f"index file {path} cannot be read: {error.strerror or error}") from None
    if actual != expected:
        raise artefact.IndexFileError(
            f"index file {path} is corrupt or replaced: sha256 {actual[:12]}… != manifest {expected[:12]}…"
        )
    return path


def load_map(directory: Path, manifest: artefact.IndexManifest) -> CatalogMap | None:
    import pyarrow.parquet as pq

    info = manifest.map
    if info is None:
        return None
    path = checked(directory / info.file, info.sha256)
    try:
        projection = projections.from_json(info.projection, manifest.dim)
        table = pq.read_table(path)
        positions = np.stack([table.column("x").to_numpy(), table.column("y").to_numpy()], axis=1).astype(np.float32)
        labels = table.column("label").to_pylist()
        windows = read_windows(table) if info.representative else None
    except Exception as error:  # noqa: BLE001 - a file that passed its checksum but is not a map: this generation's fault
        raise artefact.IndexFileError(f"index map {path} cannot be read: {error}") from None
    if len(positions) != manifest.count:
        raise artefact.IndexFileError(f"index map {path}: {len(positions)} points, manifest says {manifest.count}")
    if windows is not None and (row := window_problem(windows)) is not None:
        raise artefact.IndexFileError(
            f"index map {path}: row {row} has no valid representative window: {windows[row].tolist()}"
        )
    return CatalogMap(projection, positions, labels, info.label, windows)


def read_windows(table) -> np.ndarray:
    """float64 [rows, 2] of the map's window columns, NaN where null (a KeyError when the file lacks them)."""
    columns = [table.column(name).to_numpy(zero_copy_only=False) for name in WINDOW_COLUMNS]
    return np.stack([np.asarray(c, np.float64) for c in columns], axis=1)


def load_artists(directory: Path, manifest: artefact.IndexManifest) -> Artists | None:
    import pyarrow.parquet as pq

    info = manifest.artists
    if info is None:
        return None
    path = checked(directory / info.file, info.sha256)
    try:
        table = pq.read_table(path)
        ids = table.column("artist_id").to_pylist()
    except Exception as error:  # noqa: BLE001 - any reader error here means this file; it is named in the error
        raise artefact.IndexFileError(f"index artists {path} cannot be read: {error}") from None
    if len(ids) != info.count:
        raise artefact.IndexFileError(f"index artists {path}: {len(ids)} artists, manifest says {info.count}")
    return Artists(info.taxonomy, list(info.subgenres), ids, {a: i for i, a in enumerate(ids)}, table)
