"""`taggram backfill`: tag a whole catalog offline into Parquet, with the service's own analysis code.

One implementation of the analysis: the same ``iter_decoded`` (decode), ``StreamingPatcher`` (patch), ONNX graph and
``Runner`` (run), ``build_analysis`` + ``mean_over_segments`` (pool), taxonomy and ``suggest`` (top-k), cache key and
value encoding (``--warm-cache``) as the service. What differs is only the
plumbing, built for throughput and bounded memory instead of latency::

    parent: list catalog → shard filter → skip committed → size checks ─┐
                                                                        ▼ up to 2 files queued per worker
    worker processes (spawn): sha256 → iter_decoded → 16 kHz chunks of --chunk-seconds ─────────────────────┐
                                                            Pipe: blocks until the parent reads (backpressure) │
    parent: StreamingPatcher per track ◀─────────────────────────────────────────────────────────────────────┘
            → batches of --batch-patches patches of that track → ONNX Runtime → per-track outputs
            → Analysis → mean pooling, top-k → row buffer → part file, committed by an atomic rename

Memory is bounded whatever the track lengths: a worker holds one decoded chunk (plus FFmpeg's state), the pipe
holds at most one chunk per worker, the parent holds per track at most one patch of audio plus its outputs
(1 KB per 3-s segment) and one batch. Nothing ever holds a whole track's samples.

Determinism: ONNX Runtime's outputs for a patch depend, in the last bits, on the batch it ran in (its size and the
patch's position: different kernels handle different rows). So a track's patches are batched only with each other,
``--batch-patches`` at a time from its first patch: its batches are a function of the track alone, and a resumed
or sharded run writes bit-identical numbers to one clean run, however tracks were interleaved. The service's
batches depend on timing and on concurrent requests, so it agrees with the backfill (and with itself under other
loads) to float32 rounding, and to the last bit when it happens to batch a track's patches the same way.

Output directory (see docs/backfill.md)::

    OUT/_backfill.json                                   settings the directory was started with (checked on resume)
    OUT/results/part-n{count}-i{index}-{seq}.parquet     analysed tracks
    OUT/errors/part-n{count}-i{index}-{seq}.parquet      tracks that could not be analysed (code + message)

A part is written to a hidden temporary file, fsynced, then renamed into place: a part either exists complete or
not at all. A track is finished when its id is in any committed part (results or errors); a restarted run skips
finished tracks, so at most the tracks of the uncommitted buffer are analysed again.

Heavy imports (pyarrow, onnxruntime, redis, fastapi, tqdm) happen inside the functions that use them: decode worker
processes import this module and should only pay for numpy, PyAV and soxr.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import hashlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.decode import SAMPLE_RATE, DecodeError, iter_decoded
from service.patch import PatchGeometry, StreamingPatcher

log = logging.getLogger("taggram.backfill")

OUTPUT_FORMAT = 1  # bump when the Parquet schema or the meaning of a column changes
RUN_FILE = "_backfill.json"
RESULTS_DIR = "results"
ERRORS_DIR = "errors"

# Files a directory walk picks up: what the decoder's allowed demuxers read (service/decode.py ALLOWED_DEMUXERS).
AUDIO_EXTENSIONS = (
    ".wav", ".wave", ".w64", ".aif", ".aiff", ".aifc", ".caf", ".flac", ".mp3", ".ogg", ".oga", ".opus",
    ".m4a", ".mp4", ".m4b", ".3gp", ".aac", ".adts", ".mka", ".webm",
)

EXIT_OK = 0
EXIT_FAILED = 1  # the run itself broke (an inference error, the output became unwritable): restart to resume
EXIT_USAGE = 2  # bad arguments or environment: missing model, unwritable output, mismatching output directory

# Error codes the backfill adds to the service's (the service never sees these situations).
UNREADABLE_FILE = "unreadable_file"  # the path is missing or cannot be read (OSError)
DECODER_CRASHED = "decoder_crashed"  # the worker process died while decoding the file (e.g. a crash in FFmpeg)
INTERNAL_ERROR = "internal_error"  # an unexpected exception in the worker for this file

DEFAULT_CHUNK_SECONDS = 30.0
# ONNX Runtime (CPU) holds ~30-45 MB of activations per patch of a batch (more from the second run on, when its
# memory pattern is planned): 2 keeps the parent near 350 MB, and on CPU, with one inference thread, larger batches
# are not faster (docs/backfill.md). On CUDA raise it (--batch-patches 16).
DEFAULT_BATCH_PATCHES = 2
DEFAULT_TRACKS_PER_PART = 500
DEFAULT_PART_SECONDS = 300.0
DEFAULT_TOP_K = 5  # /suggest-subgenres' default k
SHARD_INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes in the pods of an Indexed Job
SHARD_COUNT_ENV = "TAGGRAM_BACKFILL_SHARD_COUNT"
POLL_SECONDS = 0.5  # how often the parent re-checks stop requests and dead workers while waiting


class UsageError(Exception):
    """A failure of the run's set-up (arguments, model, output directory): exit code 2."""


# ---------------------------------------------------------------------------------------------------------------
# Catalog: directory tree or manifest; deterministic sharding
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Track:
    track_id: str
    path: str  # as recorded in the output: the manifest's path (relative ones joined to its directory), or the
    # directory argument joined with the file's relative path


def shard_of(track_id: str, shard_count: int) -> int:
    """Stable shard of a track: BLAKE2b-64 of the UTF-8 id, modulo the count (same on every machine and Python)."""
    digest = hashlib.blake2b(track_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shard_count


def walk_directory(root: Path, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> Iterator[Track]:
    """Audio files under ``root`` in sorted order; the id is the POSIX path relative to ``root``. Hidden files and
    directories (leading '.') are skipped; symlinked directories are not followed."""
    root_text = str(root)
    for directory, subdirs, files in os.walk(root, onerror=_raise):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(extensions):
                continue
            full = os.path.join(directory, name)
            rel = os.path.relpath(full, root_text)
            yield Track(Path(rel).as_posix(), full)


def _raise(error: OSError) -> None:
    raise error


def read_manifest(manifest: Path) -> Iterator[Track]:
    """Tracks of a CSV (header row with ``track_id`` and ``path``) or JSONL (one object per line with the same keys)
    manifest. Relative paths are relative to the manifest's directory (and recorded joined to it)."""
    suffix = manifest.suffix.lower()
    base = manifest.parent
    if suffix == ".csv":
        rows = _csv_rows(manifest)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(manifest)
    else:
        raise UsageError(f"manifest {manifest}: unknown type {suffix!r} (use .csv, .jsonl or .ndjson)")
    for line, track_id, path in rows:
        if track_id is None or path is None or str(track_id).strip() == "" or str(path).strip() == "":
            raise UsageError(f"manifest {manifest}, line {line}: needs a non-empty track_id and path")
        text = str(path)
        yield Track(str(track_id), text if os.path.isabs(text) else os.path.join(base, text))


def _csv_rows(manifest: Path) -> Iterator[tuple[int, Any, Any]]:
    with manifest.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"track_id", "path"} - set(reader.fieldnames or ())
        if missing:
            raise UsageError(f"manifest {manifest}: the header lacks {sorted(missing)}")
        for row in reader:
            yield reader.line_num, row.get("track_id"), row.get("path")


def _jsonl_rows(manifest: Path) -> Iterator[tuple[int, Any, Any]]:
    with manifest.open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise UsageError(f"manifest {manifest}, line {line_number}: not JSON ({error})") from None
            if not isinstance(row, dict):
                raise UsageError(f"manifest {manifest}, line {line_number}: expected an object")
            yield line_number, row.get("track_id"), row.get("path")


def catalog(source: Path) -> Iterator[Track]:
    if source.is_dir():
        return walk_directory(source)
    if source.is_file():
        return read_manifest(source)
    raise UsageError(f"input {source} is neither a directory nor a manifest file")


def select_shard(tracks: Iterable[Track], shard_index: int, shard_count: int) -> list[Track]:
    """This shard's tracks, in catalog order; a duplicate track id anywhere in the catalog is a usage error."""
    seen: set[str] = set()
    mine: list[Track] = []
    try:
        for track in tracks:
            if track.track_id in seen:
                raise UsageError(f"track id {track.track_id!r} appears more than once in the catalog")
            seen.add(track.track_id)
            if shard_count == 1 or shard_of(track.track_id, shard_count) == shard_index:
                mine.append(track)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"cannot read the catalog: {error}") from None
    return mine


# ---------------------------------------------------------------------------------------------------------------
# Decode workers (separate processes, started with "spawn")
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeLimits:
    max_seconds: float
    max_bytes: int
    chunk_samples: int


def refusal(path: str, max_bytes: int) -> tuple[str, str] | None:
    """(code, message) when the service would refuse the file before decoding it (read_upload: empty or too large
    a body); None when it goes on to decoding. Raises OSError when the file cannot be examined."""
    from service.errors import body_too_large, empty_body

    size = os.stat(path).st_size
    if size == 0:
        problem = empty_body()  # what the API answers for the same file
    elif size > max_bytes:
        problem = body_too_large(max_bytes)
    else:
        return None
    return problem.code, problem.detail


def decode_messages(seq: int, path: str, limits: DecodeLimits) -> Iterator[tuple]:
    """What a worker sends for one file: ("chunk", seq, samples)* then ("end", seq, n_samples, sha256) or
    ("error", seq, code, detail). Size checks (``refusal``) are the parent's, done before the file is sent here."""
    try:
        with open(path, "rb") as f:
            sha256 = hashlib.file_digest(f, "sha256").hexdigest()
            samples = 0
            for chunk in iter_decoded(f, max_seconds=limits.max_seconds, chunk_samples=limits.chunk_samples):
                samples += chunk.size
                yield ("chunk", seq, chunk)
        yield ("end", seq, samples, sha256)
    except DecodeError as error:
        yield ("error", seq, error.code, error.detail)
    except OSError as error:
        yield ("error", seq, UNREADABLE_FILE, _unreadable(error))
    except Exception as error:  # noqa: BLE001 - one file's surprise must not stop the catalog
        yield ("error", seq, INTERNAL_ERROR, f"{type(error).__name__}: {error}")


def _unreadable(error: OSError) -> str:
    return f"cannot read the file: {error.strerror or error}"


def worker_main(conn: multiprocessing.connection.Connection) -> None:
    """Worker loop: receive (seq, path, limits), send its messages; exit on None or when the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        while True:
            task = conn.recv()  # EOFError once the parent's end is closed (it exited or was killed)
            if task is None:
                return
            seq, path, limits = task
            for message in decode_messages(seq, path, limits):
                conn.send(message)  # blocks while the parent is busy: this is the backpressure
    except (EOFError, BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        return


# Files queued per worker: the one it decodes and the next, so it starts on the next file (hashing, probing, the
# first chunk) while the parent still runs the model on the end of the current one. Tracks in flight: 2 × workers.
WORKER_QUEUE = 2


@dataclass(eq=False)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    tasks: deque = field(default_factory=deque)  # _TrackState, in the order sent; tasks[0] is being decoded


class WorkerPool:
    """``size`` decode processes, each with one duplex pipe and at most ``WORKER_QUEUE`` files queued.

    A worker handles its files in order, so the parent always knows which track a message belongs to (the first
    queued one) and which one a dead worker (its pipe hits EOF) was decoding: that track is recorded as
    ``decoder_crashed``, the files queued behind it go back to the catalog, and a replacement worker starts.
    Workers are spawned (not forked from a parent already running ONNX Runtime threads), import only the decode
    stack, and exit when their pipe closes: a SIGKILLed parent leaves no decoder running for long.
    """

    def __init__(self, size: int) -> None:
        self._context = multiprocessing.get_context("spawn")
        self.workers: list[_Worker] = [self._start() for _ in range(size)]

    def _start(self) -> _Worker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(target=worker_main, args=(child_end,), name="taggram-decode", daemon=True)
        process.start()
        child_end.close()  # only the child holds it now: its death means EOF here
        return _Worker(process, parent_end)

    def with_room(self) -> list[_Worker]:
        """Workers that can queue another file, least loaded first (an idle worker gets work before a prefetch)."""
        return sorted((w for w in self.workers if len(w.tasks) < WORKER_QUEUE), key=lambda w: len(w.tasks))

    def busy(self) -> list[_Worker]:
        return [w for w in self.workers if w.tasks]

    def assign(self, worker: _Worker, state: _TrackState, limits: DecodeLimits) -> None:
        """Queue ``state``'s file on ``worker``; an idle worker found dead is replaced first."""
        try:
            worker.conn.send((state.seq, state.track.path, limits))
        except OSError:
            if worker.tasks:
                raise  # a busy worker's death is reported by receive(), with its track
            worker = self.replace(worker)
            worker.conn.send((state.seq, state.track.path, limits))
        worker.tasks.append(state)

    def receive(self, timeout: float) -> list[tuple[_Worker, tuple | None]]:
        """One message from each busy worker that has one ready (None: the worker died)."""
        busy = {w.conn: w for w in self.busy()}
        ready = multiprocessing.connection.wait(list(busy), timeout)
        out: list[tuple[_Worker, tuple | None]] = []
        for conn in ready:
            worker = busy[conn]
            try:
                out.append((worker, conn.recv()))
            except (EOFError, OSError):
                out.append((worker, None))
        return out

    def replace(self, worker: _Worker) -> _Worker:
        """Reap a dead worker and start another in its place."""
        worker.conn.close()
        worker.process.join(timeout=5)
        fresh = self._start()
        self.workers[self.workers.index(worker)] = fresh
        return fresh

    def close(self) -> None:
        for worker in self.workers:
            try:
                if not worker.tasks:
                    worker.conn.send(None)
            except OSError:
                pass
            worker.conn.close()  # a busy worker gets BrokenPipe on its next send and exits
        deadline = time.monotonic() + 5
        for worker in self.workers:
            worker.process.join(timeout=max(deadline - time.monotonic(), 0))
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=5)


# ---------------------------------------------------------------------------------------------------------------
# Parquet output: schema, atomic parts, resume bookkeeping
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunIdentity:
    """Everything the content of the output depends on; an output directory holds one identity only."""

    model: str
    onnx_sha256: str
    labels: tuple[str, ...]
    embedding_dim: int
    hop_samples: int
    top_k: int
    taggram: bool
    taxonomy_name: str
    taxonomy_sha256: str
    max_seconds: float
    min_seconds: float
    max_bytes: int
    segment_embeddings: bool = False  # also the per-segment embeddings (what heads train on)

    def as_json(self) -> dict:
        # segment_embeddings only when on: directories started before the option existed keep their identity.
        extra = {"segment_embeddings": True} if self.segment_embeddings else {}
        return extra | {"format": OUTPUT_FORMAT, "model": self.model, "onnx_sha256": self.onnx_sha256,
                "labels": list(self.labels), "embedding_dim": self.embedding_dim, "hop_samples": self.hop_samples,
                "top_k": self.top_k, "taggram": self.taggram, "taxonomy": self.taxonomy_name,
                "taxonomy_sha256": self.taxonomy_sha256, "max_seconds": self.max_seconds,
                "min_seconds": self.min_seconds, "max_bytes": self.max_bytes}


def results_schema(identity: RunIdentity):
    import pyarrow as pa

    fields = [
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("audio_sha256", pa.string(), nullable=False),
        pa.field("duration_seconds", pa.float64(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("onnx_sha256", pa.string(), nullable=False),
        pa.field("hop_samples", pa.int32(), nullable=False),
        pa.field("segments", pa.int32(), nullable=False),
        pa.field("tag_scores", pa.list_(pa.float32(), len(identity.labels)), nullable=False),
        pa.field("top_subgenres", pa.list_(pa.struct([("subgenre", pa.string()), ("score", pa.float32())])),
                 nullable=False),
        pa.field("embedding", pa.list_(pa.float32(), identity.embedding_dim), nullable=False),
    ]
    if identity.taggram:
        fields.append(pa.field("taggram", pa.list_(pa.list_(pa.float32(), len(identity.labels))), nullable=False))
    if identity.segment_embeddings:
        fields.append(pa.field("segment_embeddings", pa.list_(pa.list_(pa.float32(), identity.embedding_dim)),
                               nullable=False))
    return pa.schema(fields, metadata=_schema_metadata(identity))


def errors_schema(identity: RunIdentity):
    import pyarrow as pa

    return pa.schema([
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("code", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("onnx_sha256", pa.string(), nullable=False),
    ], metadata=_schema_metadata(identity))  # fmt: skip


def _schema_metadata(identity: RunIdentity) -> dict[bytes, bytes]:
    return {b"taggram.backfill": json.dumps(identity.as_json()).encode()}


@dataclass
class ResultRow:
    track: Track
    audio_sha256: str
    duration_seconds: float
    tag_scores: np.ndarray  # float32 [labels]
    top: list[tuple[str, float]]
    embedding: np.ndarray  # float32 [dim]
    taggram: np.ndarray | None  # float32 [segments, labels]
    segments: int
    segment_embeddings: np.ndarray | None = None  # float32 [segments, dim]


@dataclass
class ErrorRow:
    track: Track
    code: str
    message: str


class OutputDir:
    """One shard's view of the output directory: resume set, lock, atomic part commits."""

    def __init__(self, root: Path, identity: RunIdentity, shard_index: int, shard_count: int) -> None:
        self.root = root
        self.identity = identity
        self.prefix = f"part-n{shard_count:04d}-i{shard_index:04d}-"
        self.results_dir = root / RESULTS_DIR
        self.errors_dir = root / ERRORS_DIR
        self._lock_fd: int | None = None
        self.next_seq = 0

    # -- set-up --------------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Create the layout, check the identity, take the shard's lock, clean our stale temporaries."""
        try:
            for directory in (self.root, self.results_dir, self.errors_dir):
                directory.mkdir(parents=True, exist_ok=True)
            self._check_identity()
            lock_path = self.root / f".lock-{self.prefix.removesuffix('-')}"
            self._lock_fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as error:
            raise UsageError(f"output directory {self.root} is not usable: {error}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.close()
            raise UsageError(f"another backfill holds this shard's lock in {self.root}") from None
        seqs = [-1]
        for directory in (self.results_dir, self.errors_dir):
            for entry in directory.iterdir():
                if entry.name.startswith("." + self.prefix):
                    entry.unlink()  # a temporary of ours from a killed run: never committed
                elif entry.name.startswith(self.prefix) and entry.name.endswith(".parquet"):
                    seqs.append(int(entry.name[len(self.prefix) : -len(".parquet")]))
        self.next_seq = max(seqs) + 1

    def _check_identity(self) -> None:
        wanted = self.identity.as_json()
        path = self.root / RUN_FILE
        if not path.exists():
            tmp = self.root / f".{RUN_FILE}.{os.getpid()}.tmp"
            _write_durably(tmp, json.dumps(wanted, indent=1).encode())
            try:
                os.link(tmp, path)  # atomic create-if-absent: concurrent shards agree on one file
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
            _fsync_dir(self.root)
        try:
            existing = json.loads(path.read_text())
        except ValueError as error:
            raise UsageError(f"{path} is not valid JSON ({error})") from None
        if existing != wanted:
            differing = sorted(k for k in set(existing) | set(wanted) if existing.get(k) != wanted.get(k))
            raise UsageError(
                f"output directory {self.root} was started with different settings ({', '.join(differing)}); "
                f"use another directory, or the same model/hop/top-k/taggram/limits as {path}"
            )

    def finished_ids(self) -> set[str]:
        """Ids in every committed part, whatever shard wrote it."""
        import pyarrow.parquet as pq

        done: set[str] = set()
        for directory in (self.results_dir, self.errors_dir):
            for entry in sorted(directory.glob("part-*.parquet")):
                try:
                    done.update(pq.read_table(entry, columns=["track_id"]).column(0).to_pylist())
                except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a bad file
                    raise UsageError(f"committed part {entry} cannot be read: {error}") from None
        return done

    # -- commits -------------------------------------------------------------------------------------------------
    def commit(self, results: list[ResultRow], errors: list[ErrorRow]) -> None:
        """Write one part per non-empty table; each becomes visible only complete (fsync, then rename)."""
        import pyarrow.parquet as pq

        name = f"{self.prefix}{self.next_seq:06d}.parquet"
        for directory, table in ((self.results_dir, self._results_table(results) if results else None),
                                 (self.errors_dir, self._errors_table(errors) if errors else None)):
            if table is None:
                continue
            tmp = directory / f".{name}.tmp"
            pq.write_table(table, tmp, compression="zstd")
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, directory / name)
            _fsync_dir(directory)
        self.next_seq += 1

    def _results_table(self, rows: list[ResultRow]):
        import pyarrow as pa

        identity = self.identity
        schema = results_schema(identity)
        n_labels, dim = len(identity.labels), identity.embedding_dim
        columns: dict[str, Any] = {
            "track_id": pa.array([r.track.track_id for r in rows], pa.string()),
            "path": pa.array([r.track.path for r in rows], pa.string()),
            "audio_sha256": pa.array([r.audio_sha256 for r in rows], pa.string()),
            "duration_seconds": pa.array([r.duration_seconds for r in rows], pa.float64()),
            "model": pa.array([identity.model] * len(rows), pa.string()),
            "onnx_sha256": pa.array([identity.onnx_sha256] * len(rows), pa.string()),
            "hop_samples": pa.array([identity.hop_samples] * len(rows), pa.int32()),
            "segments": pa.array([r.segments for r in rows], pa.int32()),
            "tag_scores": _fixed_lists(np.stack([r.tag_scores for r in rows]), n_labels),
            "top_subgenres": pa.array([[{"subgenre": s, "score": v} for s, v in r.top] for r in rows],
                                      schema.field("top_subgenres").type),
            "embedding": _fixed_lists(np.stack([r.embedding for r in rows]), dim),
        }
        if identity.taggram:
            columns["taggram"] = _segment_lists([r.taggram for r in rows], n_labels)
        if identity.segment_embeddings:
            columns["segment_embeddings"] = _segment_lists([r.segment_embeddings for r in rows], dim)
        return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)

    def _errors_table(self, rows: list[ErrorRow]):
        import pyarrow as pa

        identity = self.identity
        return pa.Table.from_pydict({
            "track_id": [r.track.track_id for r in rows],
            "path": [r.track.path for r in rows],
            "code": [r.code for r in rows],
            "message": [r.message for r in rows],
            "model": [identity.model] * len(rows),
            "onnx_sha256": [identity.onnx_sha256] * len(rows),
        }, schema=errors_schema(identity))  # fmt: skip

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None


def _fixed_lists(values: np.ndarray, width: int):
    import pyarrow as pa

    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), width)


def _segment_lists(per_track: list[np.ndarray], width: int):
    """list<fixed_size_list<float32, width>>: one list of per-segment rows per track."""
    import pyarrow as pa

    offsets = np.concatenate([[0], np.cumsum([m.shape[0] for m in per_track])]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), _fixed_lists(np.concatenate(per_track), width))


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_output(root: Path, table: str = RESULTS_DIR):
    """All committed rows of ``results`` or ``errors`` as one pyarrow Table (temporaries and _files ignored)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted((root / table).glob("part-*.parquet"))
    if not parts:
        return None
    return pa.concat_tables([pq.read_table(p) for p in parts])


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------


class _Batch:
    """One track's next patches (see the module doc: a batch never mixes tracks)."""

    def __init__(self, size: int, patch_samples: int) -> None:
        self.data = np.empty((size, patch_samples), np.float32)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @property
    def full(self) -> bool:
        return self.count == self.data.shape[0]

    def add(self, patch: np.ndarray) -> None:
        self.data[self.count] = patch  # copied: the patcher's views are not kept
        self.count += 1

    def clear(self) -> None:
        self.count = 0


@dataclass(eq=False)
class _TrackState:
    track: Track
    seq: int
    patcher: StreamingPatcher
    batch: _Batch | None = None  # allocated with the first patch, dropped when the track fails
    tags: list[np.ndarray] = field(default_factory=list)  # per-segment rows, in order
    embeddings: list[np.ndarray] = field(default_factory=list)
    num_samples: int = 0
    sha256: str = ""


@dataclass
class Options:
    source: Path
    out: Path
    model: str
    models_dir: Path
    taxonomy_dir: Path | None
    hop_seconds: float | None
    top_k: int
    taggram: bool
    shard_index: int
    shard_count: int
    workers: int
    batch_patches: int
    tracks_per_part: int
    part_seconds: float
    chunk_seconds: float
    max_seconds: float
    min_seconds: float
    max_bytes: int
    warm_cache: bool
    redis_url: str | None
    redis_timeout_seconds: float
    cache_ttl_seconds: int
    device: str
    intra_op_threads: int
    progress: str
    progress_seconds: float
    segment_embeddings: bool = False


@dataclass
class Summary:
    shard_index: int
    shard_count: int
    tracks_in_shard: int = 0
    already_done: int = 0
    analysed: int = 0
    errors: int = 0
    errors_by_code: Counter = field(default_factory=Counter)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    inference_seconds: float = 0.0  # wall time inside Runner.run: near wall_seconds = the decoders keep up
    cache_writes: int = 0
    cache_write_failures: int = 0
    parts_committed: int = 0
    interrupted_by: str | None = None

    @property
    def speed(self) -> float:
        """Audio hours tagged per wall-clock hour."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def as_json(self) -> dict:
        return {"shard_index": self.shard_index, "shard_count": self.shard_count,
                "tracks_in_shard": self.tracks_in_shard, "already_done": self.already_done,
                "analysed": self.analysed, "errors": self.errors, "errors_by_code": dict(self.errors_by_code),
                "remaining": self.tracks_in_shard - self.already_done - self.analysed - self.errors,
                "audio_hours": round(self.audio_seconds / 3600, 4), "wall_seconds": round(self.wall_seconds, 2),
                "audio_hours_per_hour": round(self.speed, 2),
                "inference_busy": round(self.inference_seconds / self.wall_seconds, 3) if self.wall_seconds else 0.0,
                "cache_writes": self.cache_writes,
                "cache_write_failures": self.cache_write_failures, "parts_committed": self.parts_committed,
                "interrupted_by": self.interrupted_by}


class _CacheWarmer:
    """Writes analyses into the service's cache (service.cache's RedisCache, the service's key scheme)."""

    def __init__(self, options: Options) -> None:
        import asyncio

        from service.cache import RedisCache

        self._loop = asyncio.new_event_loop()
        # Offline writes have no latency budget: allow a slow Redis more than the service's per-request timeout.
        timeout = max(options.redis_timeout_seconds, 5.0)
        try:
            self.cache = RedisCache(options.redis_url, options.cache_ttl_seconds, timeout)
        except ValueError as error:
            raise UsageError(f"--redis-url is not a valid Redis URL: {error}") from None
        if not self._loop.run_until_complete(self.cache.ping()):
            self.close()
            raise UsageError("--warm-cache: Redis does not answer PING at the given URL")

    def store(self, key: str, analysis) -> bool:
        """True when stored; the cache itself logs and counts a failure (the run goes on)."""
        before = self._failures()
        self._loop.run_until_complete(self.cache.set(key, analysis))
        return self._failures() == before

    def _failures(self) -> float:
        from prometheus_client import REGISTRY

        value = REGISTRY.get_sample_value("taggram_cache_errors_total", {"backend": self.cache.name, "op": "set"})
        return value or 0.0

    def close(self) -> None:
        self._loop.run_until_complete(self.cache.close())
        self._loop.close()


class _Progress:
    """A tqdm bar on a terminal, the same line logged every ``interval`` seconds otherwise (Kubernetes logs)."""

    def __init__(self, total: int, mode: str, interval: float) -> None:
        from tqdm import tqdm

        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode = mode
        self.interval = interval
        self._devnull = open(os.devnull, "w") if mode != "bar" else None  # noqa: SIM115 - closed in close()
        self.bar = tqdm(total=total, unit="track", desc="backfill", dynamic_ncols=True, smoothing=0.05,
                        file=sys.stderr if mode == "bar" else self._devnull, mininterval=0.5)
        self._redirect = contextlib.ExitStack()
        if mode == "bar":  # log lines (warnings) above the bar instead of through it
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._redirect.enter_context(logging_redirect_tqdm())
        self._last_log = time.monotonic()

    def update(self, summary: Summary, started: float) -> None:
        elapsed = time.monotonic() - started
        speed = summary.audio_seconds / elapsed if elapsed > 0 else 0.0
        self.bar.set_postfix_str(f"{summary.audio_seconds / 3600:.2f} h audio, {speed:.1f} audio h/h, "
                                 f"{summary.errors} errors", refresh=False)
        self.bar.update(1)
        if self.mode == "log" and time.monotonic() - self._last_log >= self.interval:
            self._last_log = time.monotonic()
            log.info("%s", self.bar)

    def close(self) -> None:
        if self.mode == "log":
            log.info("%s", self.bar)
        self.bar.close()
        self._redirect.close()
        if self._devnull is not None:
            self._devnull.close()


class Backfill:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.stop_signal: int | None = None
        self.summary = Summary(options.shard_index, options.shard_count)

    # -- set-up --------------------------------------------------------------------------------------------------
    def _load_model(self):
        from service.config import Settings
        from service.manifest import ModelFileError
        from service.registry import load_models

        o = self.options
        settings = Settings(models_dir=o.models_dir, models=o.model, default_model=o.model,
                            taxonomy_dir=o.taxonomy_dir, device=o.device, intra_op_threads=o.intra_op_threads,
                            inference_workers=1)  # one batch at a time: the decode workers keep it fed
        try:
            model = load_models(settings)[o.model]
        except (ModelFileError, RuntimeError) as error:
            raise UsageError(f"cannot load model {o.model!r}: {error}") from None
        if model.manifest.sample_rate != SAMPLE_RATE:
            raise UsageError(f"model {o.model} expects {model.manifest.sample_rate} Hz; the decoder gives {SAMPLE_RATE}")
        return model

    def _identity(self, model, hop_frames: int) -> RunIdentity:
        o = self.options
        manifest, taxonomy = model.manifest, model.taxonomy
        mapping = json.dumps(taxonomy.as_dict(manifest.labels), sort_keys=True).encode()
        return RunIdentity(
            model=manifest.name, onnx_sha256=manifest.onnx.sha256, labels=tuple(manifest.labels),
            embedding_dim=manifest.embedding_dim, hop_samples=hop_frames * manifest.frame_hop, top_k=o.top_k,
            taggram=o.taggram, taxonomy_name=taxonomy.name, taxonomy_sha256=hashlib.sha256(mapping).hexdigest(),
            max_seconds=o.max_seconds, min_seconds=o.min_seconds, max_bytes=o.max_bytes,
            segment_embeddings=o.segment_embeddings,
        )

    # -- main loop -----------------------------------------------------------------------------------------------
    def run(self) -> Summary:
        o = self.options
        started = time.monotonic()
        model = self._load_model()
        geometry = model.manifest.geometry
        hop_frames = geometry.hop_frames(o.hop_seconds)
        identity = self._identity(model, hop_frames)
        output = OutputDir(o.out, identity, o.shard_index, o.shard_count)
        output.open()
        warmer = None
        try:
            warmer = _CacheWarmer(o) if o.warm_cache else None
            tracks = select_shard(catalog(o.source), o.shard_index, o.shard_count)
            done = output.finished_ids()
            todo = deque(t for t in tracks if t.track_id not in done)
            self.summary.tracks_in_shard = len(tracks)
            self.summary.already_done = len(tracks) - len(todo)
            log.info("shard %d/%d: %d tracks, %d already finished, %d to analyse with %s (%s)", o.shard_index,
                     o.shard_count, len(tracks), self.summary.already_done, len(todo), model.name, model.runner.provider)
            loop = _Loop(self, model.runner, model, geometry, hop_frames, identity, output, warmer, todo, started)
            loop.run()
        finally:
            if warmer is not None:
                warmer.close()
            output.close()
        self.summary.wall_seconds = time.monotonic() - started
        return self.summary


class _Loop:
    """The parent's event loop: feed workers, patch and batch their chunks, run the model, finalize, commit."""

    def __init__(self, backfill: Backfill, runner, model, geometry: PatchGeometry, hop_frames: int,
                 identity: RunIdentity, output: OutputDir, warmer: _CacheWarmer | None, todo: deque[Track],
                 started: float) -> None:
        o = backfill.options
        self.backfill = backfill
        self.options = o
        self.summary = backfill.summary
        self.runner = runner
        self.model = model
        self.geometry = geometry
        self.hop_frames = hop_frames
        self.identity = identity
        self.output = output
        self.warmer = warmer
        self.todo = todo
        self.started = started
        self.limits = DecodeLimits(o.max_seconds, o.max_bytes, max(1, round(o.chunk_seconds * SAMPLE_RATE)))
        self.results: list[ResultRow] = []
        self.errors: list[ErrorRow] = []
        self.last_commit = time.monotonic()
        self.seq = 0

    def run(self) -> None:
        if not self.todo:
            return
        progress = _Progress(len(self.todo), self.options.progress, self.options.progress_seconds)
        pool = WorkerPool(min(self.options.workers, len(self.todo)))
        try:
            self._loop(pool, progress)
        finally:
            pool.close()
            progress.close()
            # Whatever finished is committed, also when stopping on a signal or an error.
            self._commit()

    def _loop(self, pool: WorkerPool, progress: _Progress) -> None:
        self.progress = progress
        while True:
            if self.backfill.stop_signal is not None:
                self.summary.interrupted_by = signal.Signals(self.backfill.stop_signal).name
                log.warning("stopping on %s: committing finished tracks; unfinished ones are redone on restart",
                            self.summary.interrupted_by)
                return
            for worker in pool.with_room():
                state = self._next_track()
                if state is None:
                    break
                try:
                    pool.assign(worker, state, self.limits)
                except OSError:  # the worker died holding files: receive() reports it below
                    self.todo.appendleft(state.track)
            if not pool.busy():
                return
            for worker, message in pool.receive(POLL_SECONDS):
                state = worker.tasks[0]
                if message is None:  # the worker died decoding tasks[0]; the files queued behind it never started
                    pid, code = worker.process.pid, worker.process.exitcode
                    self.todo.extendleft(reversed([s.track for s in list(worker.tasks)[1:]]))
                    worker.tasks.clear()
                    pool.replace(worker)
                    self._fail(state, DECODER_CRASHED, f"the decoder process (pid {pid}) died (exit code {code})")
                    continue
                if message[1] != state.seq:
                    raise AssertionError(f"message for file {message[1]} while expecting file {state.seq}")
                kind = message[0]
                if kind == "chunk":
                    self._add_patches(state, state.patcher.push(message[2]))
                elif kind == "end":
                    worker.tasks.popleft()
                    self._end(state, num_samples=message[2], sha256=message[3])
                else:  # "error"
                    worker.tasks.popleft()
                    self._fail(state, message[2], message[3])
            self._maybe_commit()

    # -- per track -----------------------------------------------------------------------------------------------
    def _next_track(self) -> _TrackState | None:
        """The next track to decode; tracks the service would refuse before decoding become error rows here."""
        while self.todo:
            self.seq += 1
            state = _TrackState(self.todo.popleft(), self.seq, StreamingPatcher(self.geometry, self.hop_frames))
            try:
                refused = refusal(state.track.path, self.options.max_bytes)
            except OSError as error:
                refused = (UNREADABLE_FILE, _unreadable(error))
            if refused is None:
                return state
            self._fail(state, *refused)
        return None

    def _add_patches(self, state: _TrackState, patches: list[np.ndarray]) -> None:
        if state.batch is None:
            state.batch = _Batch(self.options.batch_patches, self.geometry.patch_samples)
        for patch in patches:
            state.batch.add(patch)
            if state.batch.full:
                self._run_batch(state)

    def _end(self, state: _TrackState, *, num_samples: int, sha256: str) -> None:
        from service.errors import Problem
        from service.pipeline import check_min_duration

        try:
            check_min_duration(num_samples, self.geometry.sample_rate, self.options.min_seconds)
        except Problem as problem:
            self._fail(state, problem.code, problem.detail)
            return
        state.num_samples, state.sha256 = num_samples, sha256
        self._add_patches(state, state.patcher.finish())
        if len(state.batch):
            self._run_batch(state)  # the track's last, partial batch: not padded, not shared with another track
        self._finalize(state)

    def _fail(self, state: _TrackState, code: str, message: str) -> None:
        state.batch = None
        state.tags.clear()
        state.embeddings.clear()
        self.errors.append(ErrorRow(state.track, code, message))
        self.summary.errors += 1
        self.summary.errors_by_code[code] += 1
        log.debug("track %s: %s: %s", state.track.track_id, code, message)
        self.progress.update(self.summary, self.started)

    def _run_batch(self, state: _TrackState) -> None:
        batch = state.batch
        started = time.perf_counter()
        outputs = self.runner.run(batch.data[: len(batch)])
        self.summary.inference_seconds += time.perf_counter() - started
        state.tags.extend(outputs["tags"])
        state.embeddings.extend(outputs["embedding"])
        batch.clear()

    def _finalize(self, state: _TrackState) -> None:
        from service.cache import cache_key
        from service.pipeline import build_analysis
        from service.pool import mean_over_segments
        from service.taxonomy import suggest

        outputs = {"tags": np.stack(state.tags), "embedding": np.stack(state.embeddings)}
        state.tags, state.embeddings = [], []
        analysis = build_analysis(state.num_samples, self.geometry, self.hop_frames, outputs)
        tag_scores = mean_over_segments(analysis.tags)
        row = ResultRow(
            track=state.track, audio_sha256=state.sha256, duration_seconds=analysis.duration_seconds,
            tag_scores=tag_scores, top=suggest(self.model.taxonomy, tag_scores, self.options.top_k),
            embedding=mean_over_segments(analysis.embedding),
            taggram=analysis.tags if self.options.taggram else None, segments=analysis.segments,
            segment_embeddings=analysis.embedding if self.options.segment_embeddings else None,
        )
        if self.warmer is not None:
            key = cache_key(state.sha256, self.identity.model, self.identity.onnx_sha256, analysis.hop_samples)
            if self.warmer.store(key, analysis):
                self.summary.cache_writes += 1
            else:
                self.summary.cache_write_failures += 1
        self.results.append(row)
        self.summary.analysed += 1
        self.summary.audio_seconds += analysis.duration_seconds
        self.progress.update(self.summary, self.started)

    # -- commits -------------------------------------------------------------------------------------------------
    def _maybe_commit(self) -> None:
        pending = len(self.results) + len(self.errors)
        if pending >= self.options.tracks_per_part or (
            pending and time.monotonic() - self.last_commit >= self.options.part_seconds
        ):
            self._commit()

    def _commit(self) -> None:
        if not self.results and not self.errors:
            return
        self.output.commit(self.results, self.errors)
        self.summary.parts_committed += 1
        self.results, self.errors = [], []
        self.last_commit = time.monotonic()


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


def _usable_cpus() -> int:
    """CPUs this process may use (affinity, capped by the container's CPU quota)."""
    from service.run import usable_cpus  # imported here, not at the top: decode workers need no ONNX Runtime

    return usable_cpus()


def default_workers() -> int:
    """A quarter of the CPUs, at least one: decoding costs 15-35 CPU-s per audio hour, CPU inference ~80."""
    return max(1, _usable_cpus() // 4)


def default_inference_threads(workers: int) -> int:
    """The CPUs the decode workers leave: ONNX Runtime threads fighting the decoders for a core lose more to
    waiting for each other than they gain (docs/backfill.md)."""
    return max(1, _usable_cpus() - workers)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"environment variable {name}={value!r} is not an integer") from None


def build_parser(settings) -> argparse.ArgumentParser:
    from service.config import MAX_HOP_SECONDS, MAX_K, MIN_HOP_SECONDS

    def hop(text: str) -> float:
        value = float(text)
        if not MIN_HOP_SECONDS <= value <= MAX_HOP_SECONDS:
            raise argparse.ArgumentTypeError(f"must be in [{MIN_HOP_SECONDS}, {MAX_HOP_SECONDS}] seconds (as the API)")
        return value

    def positive_int(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError("must be >= 1")
        return value

    def positive_float(text: str) -> float:
        value = float(text)
        if not value > 0:
            raise argparse.ArgumentTypeError("must be > 0")
        return value

    def top_k(text: str) -> int:
        value = positive_int(text)
        if value > MAX_K:
            raise argparse.ArgumentTypeError(f"must be <= {MAX_K} (as the API)")
        return value

    p = argparse.ArgumentParser(
        prog="taggram backfill",
        description="Tag a catalog offline into Parquet: per-tag mean scores, top-k subgenres and the embedding of "
                    "every track, with the service's analysis. Resumable (rerun with the same arguments), "
                    "shardable across machines. Defaults come from the TAGGRAM_* settings the service reads.",
        epilog="Exit status: 0 when the catalog (shard) is done, even if some files were error rows; 1 when the run "
               "failed midway (rerun to resume); 2 for bad arguments, a missing model or an unusable output "
               "directory; 128+N when stopped by signal N after committing the finished tracks. See docs/backfill.md.",
    )  # fmt: skip
    p.add_argument("source", type=Path, help="a directory tree of audio files (id = relative path), or a manifest "
                   ".csv/.jsonl/.ndjson with track_id and path (relative paths: to the manifest's directory)")
    p.add_argument("--out", type=Path, required=True, help="output directory (created; shared by all shards)")
    p.add_argument("--model", default=settings.default_model, help="model name (default: %(default)s)")
    p.add_argument("--models-dir", type=Path, default=settings.models_dir, help="default: %(default)s")
    p.add_argument("--taxonomy-dir", type=Path, default=settings.taxonomy_dir,
                   help="taxonomy override folder, as TAGGRAM_TAXONOMY_DIR (default: the shipped taxonomies)")
    p.add_argument("--hop", type=hop, default=None, metavar="SECONDS",
                   help="seconds between segment starts, as the API's ?hop= (default: one patch, no overlap)")
    p.add_argument("--top-k", type=top_k, default=DEFAULT_TOP_K, help="subgenres kept per track (default: 5)")
    p.add_argument("--taggram", action="store_true", help="also write the per-segment tag scores")
    p.add_argument("--segment-embeddings", action="store_true",
                   help="also write the per-segment embeddings (what `taggram train-head` trains on)")
    p.add_argument("--shard-index", type=int, default=None,
                   help=f"this machine's shard, 0-based (default: ${SHARD_INDEX_ENV}, else 0)")
    p.add_argument("--shard-count", type=positive_int, default=None,
                   help=f"number of shards (default: ${SHARD_COUNT_ENV}, else 1)")
    p.add_argument("--workers", type=positive_int, default=default_workers(),
                   help="decode processes = tracks in flight (default: a quarter of the CPUs, %(default)s here)")
    p.add_argument("--batch-patches", type=positive_int, default=DEFAULT_BATCH_PATCHES,
                   help="patches per inference batch (one track's patches only); ~31 MB of memory each on "
                        "CPU (default: %(default)s)")
    p.add_argument("--tracks-per-part", type=positive_int, default=DEFAULT_TRACKS_PER_PART,
                   help="commit a part file after this many finished tracks (default: %(default)s)")
    p.add_argument("--part-seconds", type=positive_float, default=DEFAULT_PART_SECONDS,
                   help="... or after this many seconds with any finished track (default: %(default)s)")
    p.add_argument("--chunk-seconds", type=positive_float, default=DEFAULT_CHUNK_SECONDS,
                   help="decoded audio per worker message; bounds memory (default: %(default)s)")
    p.add_argument("--max-seconds", type=positive_float, default=settings.max_audio_seconds,
                   help="longest track, as TAGGRAM_MAX_AUDIO_SECONDS (default: %(default)s)")
    p.add_argument("--min-seconds", type=float, default=settings.min_audio_seconds,
                   help="shortest track, as TAGGRAM_MIN_AUDIO_SECONDS (default: %(default)s)")
    p.add_argument("--max-bytes", type=positive_int, default=settings.max_upload_bytes,
                   help="largest file, as TAGGRAM_MAX_UPLOAD_BYTES (default: %(default)s)")
    p.add_argument("--warm-cache", action="store_true",
                   help="also store every analysis in the service's Redis cache (same key scheme)")
    p.add_argument("--redis-url", default=settings.redis_url, help="for --warm-cache (default: $TAGGRAM_REDIS_URL)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=settings.device)
    p.add_argument("--intra-op-threads", type=int, default=settings.intra_op_threads or None,
                   help="ONNX Runtime threads (default: TAGGRAM_INTRA_OP_THREADS if set, else the CPUs minus "
                        f"--workers, {default_inference_threads(default_workers())} here with the default workers)")
    p.add_argument("--progress", choices=("auto", "bar", "log"), default="auto",
                   help="auto: a bar on a terminal, else a log line every --progress-seconds")
    p.add_argument("--progress-seconds", type=positive_float, default=30.0)
    return p


def parse_options(argv: list[str] | None) -> Options:
    from service.config import Settings

    settings = Settings()
    parser = build_parser(settings)
    args = parser.parse_args(argv)
    try:
        shard_count = args.shard_count if args.shard_count is not None else _env_int(SHARD_COUNT_ENV, 1)
        shard_index = args.shard_index if args.shard_index is not None else _env_int(SHARD_INDEX_ENV, 0)
    except UsageError as error:
        parser.error(str(error))
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        parser.error(f"shard index {shard_index} is not in [0, {shard_count}) (shard count {shard_count})")
    if args.warm_cache and not args.redis_url:
        parser.error("--warm-cache needs --redis-url or TAGGRAM_REDIS_URL (the service's Redis)")
    if args.min_seconds < 0:
        parser.error("--min-seconds must be >= 0")
    return Options(
        source=args.source, out=args.out, model=args.model, models_dir=args.models_dir,
        taxonomy_dir=args.taxonomy_dir, hop_seconds=args.hop, top_k=args.top_k, taggram=args.taggram,
        shard_index=shard_index, shard_count=shard_count, workers=args.workers, batch_patches=args.batch_patches,
        tracks_per_part=args.tracks_per_part, part_seconds=args.part_seconds, chunk_seconds=args.chunk_seconds,
        max_seconds=args.max_seconds, min_seconds=args.min_seconds, max_bytes=args.max_bytes,
        warm_cache=args.warm_cache, redis_url=args.redis_url, redis_timeout_seconds=settings.redis_timeout_seconds,
        cache_ttl_seconds=settings.cache_ttl_seconds, device=args.device,
        intra_op_threads=args.intra_op_threads or default_inference_threads(args.workers),
        progress=args.progress, progress_seconds=args.progress_seconds,
        segment_embeddings=args.segment_embeddings,
    )  # fmt: skip


def log_summary(summary: Summary) -> None:
    s = summary
    log.info(
        "shard %d/%d: %d tracks, %d already finished, %d analysed (%.2f h of audio), %d errors%s; "
        "%.1f s wall (%.0f%% of it in inference), %.1f audio hours per hour; %d part(s) committed%s",
        s.shard_index, s.shard_count, s.tracks_in_shard, s.already_done, s.analysed, s.audio_seconds / 3600, s.errors,
        f" {dict(s.errors_by_code)}" if s.errors else "", s.wall_seconds,
        100 * s.inference_seconds / s.wall_seconds if s.wall_seconds else 0.0, s.speed, s.parts_committed,
        f"; cache: {s.cache_writes} written, {s.cache_write_failures} failed" if s.cache_writes or s.cache_write_failures else "",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``taggram backfill``; prints the summary as one JSON line on stdout."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    options = parse_options(argv)
    backfill = Backfill(options)

    def request_stop(signum, _frame) -> None:
        backfill.stop_signal = signum  # acted on by the loop within POLL_SECONDS or one batch

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        summary = backfill.run()
    except UsageError as error:
        log.error("%s", error)
        return EXIT_USAGE
    except Exception:  # noqa: BLE001 - logged with its traceback; committed parts stay valid for a restart
        log.exception("backfill failed; committed parts are kept, rerun the same command to resume")
        return EXIT_FAILED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log_summary(summary)
    print(json.dumps(summary.as_json()), flush=True)
    if summary.interrupted_by is not None:
        return 128 + signal.Signals[summary.interrupted_by].value
    return EXIT_OK
