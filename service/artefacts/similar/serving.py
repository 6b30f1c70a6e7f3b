"""The loaded indexes: validated at start-up, swapped whole when a rebuilt generation is committed.

Start-up (``load_indexes``): every ``<model>.json`` in TAGGRAM_INDEX_DIR must name a loaded model with the same
onnx sha256 (an index of another model's vectors would answer with confident nonsense), and every file it names
must have the recorded sha256; otherwise an ``IndexFileError`` stops the start (one log line, exit 2).

Reload (``Indexes.watch``): every ``index_poll_seconds``, and at once on SIGHUP, each manifest's (inode, mtime,
size) is compared with the loaded one. A changed manifest is loaded completely in a worker thread (checksums,
mapping, track table) while requests go on using the old one; then one dict assignment swaps it in, which is atomic
for every request that reads ``Indexes.current`` once. A broken generation leaves the old index serving, logs one
warning and counts ``taggram_index_reloads_total{result="failed"}``; it is retried when the manifest changes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service import metrics
from service.artefacts.manifest import sha256_file
from service.artefacts.similar import artefact
from service.artefacts.similar.catalog import Artists, CatalogMap, load_artists, load_map
from service.artefacts.similar.projection import NeighbourPlacement, place_by_neighbours
from service.artefacts.similar.search import Searcher, open_searcher

log = logging.getLogger("taggram.index")

# Enough candidates for the exclusions (the query itself, its artist's tracks) without scanning the catalog: an
# artist with more tracks than this among a query's neighbours gets fewer than k answers.
MAX_FETCH_ROWS = 10_000
FETCH_GROWTH = 4  # each retry asks for 4× more candidates


@dataclass(frozen=True)
class Neighbour:
    row: int
    score: float


@dataclass(frozen=True)
class LoadedIndex:
    manifest: artefact.IndexManifest
    searcher: Searcher
    track_ids: list[str]
    rows: dict[str, int]
    artists: list[str | None]
    titles: list[str | None]
    mean: np.ndarray
    signature: tuple[int, int, int]  # the manifest's (inode, mtime_ns, size) when loaded
    loaded_at: float
    load_seconds: float
    catalog_map: CatalogMap | None = None  # None: a generation built before the map
    artist_table: Artists | None = None  # None: no track has an artist, or built before the artists

    def position(self, query: np.ndarray) -> tuple[float, float] | None:
        """A normalised query vector's place on the catalog map (the index's fitted projection), if it has one."""
        if self.catalog_map is None:
            return None
        projection = self.catalog_map.projection
        if isinstance(projection, NeighbourPlacement):
            rows, scores = self.searcher.search(query, projection.neighbours)
            x, y = place_by_neighbours(self.catalog_map.positions, rows, scores)
        else:
            x, y = projection.place(query)[0]
        return float(x), float(y)

    def query_vector(self, embedding: np.ndarray) -> np.ndarray:
        return artefact.normalise(embedding, self.mean)[0]

    def neighbours(
        self, query: np.ndarray, k: int, exclude_row: int | None = None, exclude_artist: str | None = None
    ) -> list[Neighbour]:
        """The k best rows, best first, without ``exclude_row`` and rows of ``exclude_artist``."""
        fetch = k + (exclude_row is not None)
        while True:
            rows, scores = self.searcher.search(query, fetch)
            kept = [
                Neighbour(int(r), float(s))
                for r, s in zip(rows, scores)
                if 0 <= r < len(self.track_ids)
                and r != exclude_row
                and (exclude_artist is None or self.artists[r] != exclude_artist)
            ]
            if len(kept) >= k or fetch >= min(self.searcher.count, MAX_FETCH_ROWS):
                return kept[:k]
            fetch = min(fetch * FETCH_GROWTH, self.searcher.count, MAX_FETCH_ROWS)

    def describe(self) -> dict:
        m = self.manifest
        return {
            "vectors": m.count,
            "dim": m.dim,
            "metric": m.metric,
            "normalisation": m.normalisation["method"],
            "library": m.library,
            "library_version": m.library_version,
            "storage": m.storage,
            "built_at": m.built_at,
            "loaded_at": self.loaded_at,
            "duplicate_threshold": m.duplicate_threshold,
            "has_artists": m.has_artists,
            "source_digest": m.source.get("digest"),
            "map": None if m.map is None else {"projection": m.map.projection["method"], "label": m.map.label},
            "artists": None if m.artists is None else m.artists.count,
        }


def signature(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def load_index(path: Path, models: dict) -> LoadedIndex:
    """One generation, fully checked; ``models`` maps loaded model names to objects with a ``manifest``."""
    import pyarrow.parquet as pq

    started = time.perf_counter()
    try:
        sig = signature(path)
    except OSError as error:
        raise artefact.IndexFileError(f"index manifest {path} cannot be read: {error.strerror or error}") from None
    manifest = artefact.read_manifest(path)
    model = models.get(manifest.model)
    if model is None:
        raise artefact.IndexFileError(
            f"index {path} is for model {manifest.model!r}, which is not loaded (loaded: {sorted(models)})"
        )
    if manifest.onnx_sha256 != model.manifest.onnx.sha256:
        raise artefact.IndexFileError(
            f"index {path} was built with another {manifest.model} onnx file: sha256 "
            f"{manifest.onnx_sha256[:12]}… != loaded {model.manifest.onnx.sha256[:12]}…"
        )
    if manifest.precision != model.runner.precision:  # a query's embedding and the catalog's: one precision
        raise artefact.IndexFileError(
            f"index {path} holds {manifest.precision} embeddings; {manifest.model} runs in "
            f"{model.runner.precision} here: rebuild it from a backfill run with "
            f"--precision {model.runner.precision} (docs/precision.md)"
        )
    if manifest.dim != model.manifest.embedding_dim:
        raise artefact.IndexFileError(
            f"index {path}: dim {manifest.dim} != the model's embedding dim {model.manifest.embedding_dim}"
        )
    vectors_path, tracks_path = path.parent / manifest.files.vectors, path.parent / manifest.files.tracks
    for file, expected in ((vectors_path, manifest.files.vectors_sha256), (tracks_path, manifest.files.tracks_sha256)):
        try:
            actual = sha256_file(file)
        except OSError as error:
            raise artefact.IndexFileError(f"index file {file} cannot be read: {error.strerror or error}") from None
        if actual != expected:
            raise artefact.IndexFileError(
                f"index file {file} is corrupt or replaced: sha256 {actual[:12]}… != manifest {expected[:12]}…"
            )
    try:
        searcher = open_searcher(manifest.library, vectors_path)
        tracks = pq.read_table(tracks_path)
    # A library's own error for a file that passed its checksum: still this file's fault.
    except Exception as error:  # noqa: BLE001 - any library error here means this file; it is named in the error
        raise artefact.IndexFileError(f"index file {vectors_path} cannot be opened: {error}") from None
    track_ids = tracks.column("track_id").to_pylist()
    if searcher.count != manifest.count or len(track_ids) != manifest.count:
        raise artefact.IndexFileError(
            f"index {path}: {searcher.count} vectors and {len(track_ids)} tracks, manifest says {manifest.count}"
        )
    catalog_map, artist_table = load_map(path.parent, manifest), load_artists(path.parent, manifest)
    return LoadedIndex(
        manifest=manifest,
        searcher=searcher,
        track_ids=track_ids,
        rows={t: i for i, t in enumerate(track_ids)},
        artists=tracks.column("artist_id").to_pylist(),
        titles=tracks.column("title").to_pylist(),
        mean=manifest.mean,
        signature=sig,
        loaded_at=time.time(),
        load_seconds=time.perf_counter() - started,
        catalog_map=catalog_map,
        artist_table=artist_table,
    )


def record(index: LoadedIndex) -> None:
    model = index.manifest.model
    metrics.INDEX_VECTORS.labels(model).set(index.manifest.count)
    metrics.INDEX_BUILT.labels(model).set(index.manifest.built_at)
    metrics.INDEX_LOAD_SECONDS.labels(model).set(index.load_seconds)


class Indexes:
    """The current index per model. Readers take ``current`` once per request; writers replace the whole dict."""

    def __init__(self, directory: Path | None, models: dict) -> None:
        self.directory = directory
        self.models = models
        self.current: dict[str, LoadedIndex] = {}
        self._failed: dict[Path, tuple[int, int, int]] = {}  # manifests whose current version failed to load
        self._wake = asyncio.Event()

    def load_all(self) -> None:
        """Start-up: every manifest in the directory, or an IndexFileError."""
        if self.directory is None:
            return
        if not self.directory.is_dir():
            raise artefact.IndexFileError(f"index directory {self.directory} does not exist")
        loaded = {}
        for path in sorted(self.directory.glob(f"*{artefact.MANIFEST_SUFFIX}")):
            index = load_index(path, self.models)
            if path.stem != index.manifest.model:
                raise artefact.IndexFileError(f"index manifest {path} names model {index.manifest.model!r}")
            loaded[index.manifest.model] = index
            record(index)
            log.info(
                "loaded index %s: %d vectors (%s, %s) in %.2f s",
                path,
                index.manifest.count,
                index.manifest.library,
                index.manifest.storage,
                index.load_seconds,
            )
        if not loaded:
            log.warning("no index manifests in %s yet: /similar answers 503 until one is built", self.directory)
        self.current = loaded

    def get(self, model: str) -> LoadedIndex | None:
        return self.current.get(model)

    def refresh(self) -> None:
        """One reload pass (runs in a worker thread): load every changed manifest, then swap each in."""
        for path in sorted(self.directory.glob(f"*{artefact.MANIFEST_SUFFIX}")):
            model = path.stem
            try:
                sig = signature(path)
            except OSError:
                continue  # renamed away between glob and stat: the next pass sees the new one
            old = self.current.get(model)
            if (old is not None and old.signature == sig) or self._failed.get(path) == sig:
                continue
            try:
                index = load_index(path, self.models)
                if index.manifest.model != model:
                    raise artefact.IndexFileError(f"index manifest {path} names model {index.manifest.model!r}")
            except artefact.IndexFileError as error:
                self._failed[path] = sig
                metrics.INDEX_RELOADS.labels(model, "failed").inc()
                log.warning("index reload failed, still serving the previous index: %s", error)
                continue
            self._failed.pop(path, None)
            self.current = {**self.current, model: index}  # the swap: one reference assignment
            record(index)
            metrics.INDEX_RELOADS.labels(model, "ok").inc()
            log.info(
                "swapped in index %s: %d vectors, loaded in %.2f s", path, index.manifest.count, index.load_seconds
            )

    def request_reload(self) -> None:
        self._wake.set()

    async def watch(self, poll_seconds: float) -> None:
        """Reload loop for the server's lifetime: every ``poll_seconds`` (0 = only on SIGHUP) and on SIGHUP."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread: no SIGHUP
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll_seconds if poll_seconds > 0 else None):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:  # never let the watcher die: the next pass tries again
                log.exception("index reload pass failed")
