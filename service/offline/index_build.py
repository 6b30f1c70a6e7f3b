"""`taggram index build BACKFILL_OUT --output DIR`: the backfill's mean embeddings → a searchable index generation.

Reads every committed results part (``service.offline.backfill.read_output``), centres the embeddings on the catalog
mean and scales them to unit length, writes the vectors (exact .npy or usearch HNSW), the row → track table, the
catalog map and the pooled artists (catalog_build.py) and, last, the manifest (artefact.py). Artists come from an
``artist_id`` column of the backfill output when it has one, else from ``--artists CSV`` (columns track_id and
artist_id or artist, optional title: the corpus CSV works as is); a missing, empty or blank artist is none. Each
track's representative window (the backfill's columns, output format 3) goes into the map. Exit codes: 0 built,
2 bad input (no output, several models, unreadable CSV, a window that is not one).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.metadata
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from service.artefacts.durable import atomic_write
from service.artefacts.manifest import sha256_file
from service.artefacts.similar import artefact
from service.artefacts.similar.projection import DEFAULT_PROJECTION, PROJECTIONS
from service.artefacts.similar.search import (
    EXACT_MAX_VECTORS,
    HNSW_CONNECTIVITY,
    HNSW_EXPANSION_ADD,
    HNSW_EXPANSION_SEARCH,
    SEARCHERS,
)
from service.offline import catalog_build
from service.offline.codes import EXIT_OK, EXIT_USAGE, UsageError

log = logging.getLogger("taggram.index")

# Calibrated per model on real music by bench/similar_music.py: midway between the highest score of two distinct
# tracks and the lowest of a track and its re-encodings, resampling and excerpt on half the query tracks, shipped
# rounded down to 3 decimals; precision and recall on the held-out half: docs/similar.md, "Duplicate threshold".
CALIBRATED_DUPLICATE_THRESHOLDS = {"msd-musicnn": 0.926, "mtt-musicnn": 0.964, "msd-vgg": 0.931, "mtt-vgg": 0.954}
DEFAULT_DUPLICATE_THRESHOLD = CALIBRATED_DUPLICATE_THRESHOLDS["msd-musicnn"]  # a model calibrated nowhere else
DUPLICATE_CALIBRATION = "docs/similar.md#duplicate-threshold"
# usearch's i8 is not offered: it rounds each component of a unit vector to a multiple of 1/127, coarse next to the
# components of 200-d unit vectors, and recall@10 collapses with it (docs/similar.md, "Real embeddings").
HNSW_STORAGES = ("f32", "f16")


def source_digest(backfill_out: Path) -> str:
    """sha256 over the committed results parts (name + content): same parts, same digest."""
    digest = hashlib.sha256()
    for part in sorted((backfill_out / "results").glob("part-*.parquet")):
        digest.update(part.name.encode())
        digest.update(bytes.fromhex(sha256_file(part)))
    return digest.hexdigest()


def read_catalog(backfill_out: Path):
    from service.offline.backfill import read_output

    table = read_output(backfill_out)
    if table is None or table.num_rows == 0:
        raise UsageError(f"{backfill_out} holds no committed results (results/part-*.parquet)")
    models = set(table.column("model").to_pylist())
    shas = set(table.column("onnx_sha256").to_pylist())
    if len(models) != 1 or len(shas) != 1:
        raise UsageError(f"{backfill_out} mixes models {sorted(models)} / onnx files: one index per model")
    return table, models.pop(), shas.pop()


def backfill_precision(backfill_out: Path) -> str:
    """The precision the backfill's embeddings were computed in: the index records it, and the service serves the
    index only from a model running in the same precision (docs/precision.md)."""
    from service.offline.backfill import identity_precision
    from service.offline.backfill.output import RUN_FILE

    try:
        return identity_precision(json.loads((backfill_out / RUN_FILE).read_text()))
    except (OSError, ValueError) as error:
        raise UsageError(f"{backfill_out} is not a backfill output directory ({error})") from None


def embeddings(table) -> np.ndarray:
    """The embedding column as one float32 [tracks, dim] array, without a Python object per value."""
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)


def artist_id(value: str | None) -> str | None:
    """An artist cell as the index keeps it: None when missing, empty or blank (a track with no artist belongs to no
    artist: it is on the map with artist_id null and in no artist's pooling), else the id exactly as written."""
    return value if value is not None and value.strip() else None


def read_artists(path: Path) -> dict[str, tuple[str | None, str | None]]:
    """track_id → (artist_id, title) from a CSV with track_id and artist_id (or artist) columns, title optional."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = set(reader.fieldnames or ())
            artist_column = "artist_id" if "artist_id" in fields else "artist" if "artist" in fields else None
            if "track_id" not in fields or artist_column is None:
                raise UsageError(f"{path}: needs a track_id and an artist_id (or artist) column")
            return {row["track_id"]: (artist_id(row[artist_column]), row.get("title") or None) for row in reader}
    except OSError as error:
        raise UsageError(f"{path}: {error.strerror or error}") from None


def track_table(track_ids: list[str], table, artists: dict | None):
    import pyarrow as pa

    if "artist_id" in table.column_names:
        artist = [artist_id(a) for a in table.column("artist_id").to_pylist()]
        title = table.column("title").to_pylist() if "title" in table.column_names else [None] * len(track_ids)
    elif artists is not None:
        artist = [artists.get(t, (None, None))[0] for t in track_ids]
        title = [artists.get(t, (None, None))[1] for t in track_ids]
    else:
        artist = title = [None] * len(track_ids)
    return pa.table(
        {
            "track_id": pa.array(track_ids, pa.string()),
            "artist_id": pa.array(artist, pa.string()),
            "title": pa.array(title, pa.string()),
        }
    )


def choose_library(backend: str, count: int) -> str:
    if backend == "auto":
        return "numpy" if count <= EXACT_MAX_VECTORS else "usearch"
    return {"exact": "numpy", "usearch": "usearch"}[backend]


def build(
    backfill_out: Path,
    output: Path,
    *,
    artists_csv: Path | None = None,
    backend: str = "auto",
    storage: str = "f16",
    duplicate_threshold: float | None = None,
    projection: str = DEFAULT_PROJECTION,
    taxonomy_dir: Path | None = None,
    label_head: Path | None = None,
) -> artefact.IndexManifest:
    import pyarrow.parquet as pq

    started = time.perf_counter()
    table, model, onnx_sha256 = read_catalog(backfill_out)
    precision = backfill_precision(backfill_out)
    track_ids = table.column("track_id").to_pylist()
    if len(set(track_ids)) != len(track_ids):
        raise UsageError(f"{backfill_out}: a track id appears in more than one results row")
    raw = embeddings(table)
    head = None if label_head is None else catalog_build.label_head(label_head, model, onnx_sha256, raw.shape[1])
    labels = catalog_build.map_labels(table, raw, head)
    windows = catalog_build.representative_windows(table)  # a bad window refuses the build before any file
    vectors, mean = artefact.normalise_catalog(raw)
    if duplicate_threshold is None:
        duplicate_threshold = CALIBRATED_DUPLICATE_THRESHOLDS.get(model, DEFAULT_DUPLICATE_THRESHOLD)
    library = choose_library(backend, len(vectors))
    storage = "f32" if library == "numpy" else storage
    artists = read_artists(artists_csv) if artists_csv else None
    tracks = track_table(track_ids, table, artists)

    output.mkdir(parents=True, exist_ok=True)
    searcher = SEARCHERS[library]
    staging = output / f".{model}-build{searcher.extension}"
    atomic_write(staging, lambda path: searcher.write(path, vectors, storage))
    vectors_sha = sha256_file(staging)
    stem = f"{model}-{vectors_sha[: artefact.DIGEST_CHARS]}"
    vectors_file, tracks_file = f"{stem}{searcher.extension}", f"{stem}.tracks.parquet"
    staging.replace(output / vectors_file)
    atomic_write(output / tracks_file, lambda path: pq.write_table(tracks, path))
    manifest_file = artefact.manifest_path(output, model)
    previous = _previous_files(manifest_file)
    manifest = artefact.IndexManifest(
        format=artefact.INDEX_FORMAT,
        model=model,
        onnx_sha256=onnx_sha256,
        precision=precision,
        count=len(vectors),
        dim=vectors.shape[1],
        metric=artefact.METRIC,
        normalisation={"method": artefact.NORMALISATION, "mean": mean.tolist()},
        library=library,
        library_version=_version(library),
        storage=storage,
        hnsw=None
        if library == "numpy"
        else {
            "connectivity": HNSW_CONNECTIVITY,
            "expansion_add": HNSW_EXPANSION_ADD,
            "expansion_search": HNSW_EXPANSION_SEARCH,
        },
        duplicate_threshold=duplicate_threshold,
        duplicate_calibration=DUPLICATE_CALIBRATION,
        has_artists=any(a is not None for a in tracks.column("artist_id").to_pylist()),
        files=artefact.IndexFiles(
            vectors=vectors_file,
            vectors_sha256=vectors_sha,
            tracks=tracks_file,
            tracks_sha256=sha256_file(output / tracks_file),
        ),
        source={
            "backfill": str(backfill_out),
            "digest": source_digest(backfill_out),
            "artists": str(artists_csv) if artists_csv else None,
            "artists_sha256": sha256_file(artists_csv) if artists_csv else None,
        },
        map=catalog_build.build_map(output, model, vectors, projection, labels, windows),
        artists=catalog_build.build_artists(output, model, vectors, table, tracks, taxonomy_dir),
        built_at=time.time(),
        build_seconds=time.perf_counter() - started,
    )
    artefact.write_manifest(manifest_file, manifest)  # the commit point
    _remove_stale(output, model, keep={vectors_file, tracks_file, *extra_files(manifest), *previous})
    return manifest


def extra_files(manifest: artefact.IndexManifest) -> set[str]:
    return {info.file for info in (manifest.map, manifest.artists) if info is not None}


def _previous_files(manifest_file: Path) -> set[str]:
    """The files of the generation being replaced: kept one more round for replicas that are still loading it."""
    try:
        document = json.loads(manifest_file.read_text())
        files = document["files"]
        extras = {document[part]["file"] for part in ("map", "artists") if document.get(part)}
        return {files["vectors"], files["tracks"], *extras}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _remove_stale(output: Path, model: str, keep: set[str]) -> None:
    for path in output.glob(f"{model}-*"):
        if path.name not in keep and len(path.name.split(".")[0]) == len(model) + 1 + artefact.DIGEST_CHARS:
            path.unlink(missing_ok=True)


def _version(library: str) -> str:
    return importlib.metadata.version("numpy" if library == "numpy" else "usearch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taggram index", description="Build a similar-tracks index (docs/similar.md)")
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="backfill output → index generation in an index directory")
    b.add_argument("backfill_out", type=Path, help="a `taggram backfill --out` directory (one model)")
    b.add_argument(
        "--output",
        type=Path,
        required=True,
        help="index directory (TAGGRAM_INDEX_DIR): <model>.json + the files it names",
    )
    b.add_argument("--artists", type=Path, help="CSV: track_id, artist_id (or artist) [, title]")
    b.add_argument(
        "--backend",
        choices=("auto", "exact", "usearch"),
        default="auto",
        help=f"auto: exact up to {EXACT_MAX_VECTORS} tracks, usearch HNSW above",
    )
    b.add_argument("--storage", choices=HNSW_STORAGES, default="f16", help="HNSW vector storage")
    b.add_argument(
        "--duplicate-threshold",
        type=float,
        default=None,
        help="score at and above which a neighbour is flagged a duplicate (default: calibrated per model, "
        f"{CALIBRATED_DUPLICATE_THRESHOLDS})",
    )
    b.add_argument(
        "--projection",
        choices=PROJECTIONS,
        default=DEFAULT_PROJECTION,
        help="the catalog map's 2-D projection (docs/catalog.md); tsne needs the `map` extra",
    )
    b.add_argument(
        "--taxonomy-dir",
        type=Path,
        default=None,
        help="taxonomy folder for the artists' subgenre scores, as TAGGRAM_TAXONOMY_DIR (default: the shipped ones)",
    )
    b.add_argument(
        "--label-head",
        type=Path,
        default=None,
        help="a head's manifest (TAGGRAM_HEADS_DIR/NAME.json): label the map by its top class on each track's mean "
        "embedding instead of the top tag",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        manifest = build(
            args.backfill_out,
            args.output,
            artists_csv=args.artists,
            backend=args.backend,
            storage=args.storage,
            duplicate_threshold=args.duplicate_threshold,
            projection=args.projection,
            taxonomy_dir=args.taxonomy_dir,
            label_head=args.label_head,
        )
    except (UsageError, catalog_build.CatalogInputError) as error:
        log.error("index build: %s", error)
        return EXIT_USAGE
    log.info(
        "index %s: %d tracks, %s %s, built in %.1f s",
        artefact.manifest_path(args.output, manifest.model),
        manifest.count,
        manifest.library,
        manifest.storage,
        manifest.build_seconds,
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
