"""Parquet output: schema, atomic part files, resume bookkeeping, and ``read_output`` for readers.

A part is written to a hidden temporary file, fsynced, then renamed into place: a part either exists complete or
not at all. A track is finished when its id is in any committed part (results or errors).
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from service.artefacts.durable import atomic_write, fsync_dir
from service.decode import DecodeFacts
from service.offline.backfill.catalog import Track
from service.offline.codes import UsageError

OUTPUT_FORMAT = (
    3  # bump when the Parquet schema or the meaning of a column changes (2: decoder, warnings; 3: representative)
)
RUN_FILE = "_backfill.json"
RESULTS_DIR = "results"
ERRORS_DIR = "errors"


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
    damaged_audio: str
    segment_embeddings: bool = False  # also the per-segment embeddings (what heads train on)
    precision: str = "fp32"  # the runner's (docs/precision.md): embeddings of two precisions never share an output

    def as_json(self) -> dict:
        extra = {"segment_embeddings": True} if self.segment_embeddings else {}  # only when on: resumes stay valid
        # Absent = fp32, what every output written before bf16 existed holds: their resumes stay valid too.
        extra |= {"precision": self.precision} if self.precision != "fp32" else {}
        return extra | {
            "format": OUTPUT_FORMAT,
            "model": self.model,
            "onnx_sha256": self.onnx_sha256,
            "labels": list(self.labels),
            "embedding_dim": self.embedding_dim,
            "hop_samples": self.hop_samples,
            "top_k": self.top_k,
            "taggram": self.taggram,
            "taxonomy": self.taxonomy_name,
            "taxonomy_sha256": self.taxonomy_sha256,
            "max_seconds": self.max_seconds,
            "min_seconds": self.min_seconds,
            "max_bytes": self.max_bytes,
            "damaged_audio": self.damaged_audio,
        }


def results_schema(identity: RunIdentity):
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
        pa.field(
            "top_subgenres", pa.list_(pa.struct([("subgenre", pa.string()), ("score", pa.float32())])), nullable=False
        ),
        pa.field("embedding", pa.list_(pa.float32(), identity.embedding_dim), nullable=False),
        pa.field("decoder", pa.string(), nullable=False),
        pa.field("declared_duration_seconds", pa.float64(), nullable=True),
        pa.field("warnings", pa.list_(pa.string()), nullable=False),  # decode warning codes; empty when clean
        # the representative ~30 s window (service/engine/representative.py)
        pa.field("representative_start_seconds", pa.float64(), nullable=False),
        pa.field("representative_end_seconds", pa.float64(), nullable=False),
    ]
    if identity.taggram:
        fields.append(pa.field("taggram", pa.list_(pa.list_(pa.float32(), len(identity.labels))), nullable=False))
    if identity.segment_embeddings:
        fields.append(
            pa.field("segment_embeddings", pa.list_(pa.list_(pa.float32(), identity.embedding_dim)), nullable=False)
        )
    return pa.schema(fields, metadata=_schema_metadata(identity))


def errors_schema(identity: RunIdentity):
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
    decode: DecodeFacts
    segment_embeddings: np.ndarray | None = None  # float32 [segments, dim]
    representative: tuple[float, float] = (0.0, 0.0)  # (start, end) seconds of the representative window


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
            fsync_dir(self.root)
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
        name = f"{self.prefix}{self.next_seq:06d}.parquet"
        for directory, table in (
            (self.results_dir, self._results_table(results) if results else None),
            (self.errors_dir, self._errors_table(errors) if errors else None),
        ):
            if table is None:
                continue
            atomic_write(directory / name, lambda tmp, table=table: pq.write_table(table, tmp, compression="zstd"))
        self.next_seq += 1

    def _results_table(self, rows: list[ResultRow]):
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
            "top_subgenres": pa.array(
                [[{"subgenre": s, "score": v} for s, v in r.top] for r in rows], schema.field("top_subgenres").type
            ),
            "embedding": _fixed_lists(np.stack([r.embedding for r in rows]), dim),
            "decoder": pa.array([r.decode.decoder for r in rows], pa.string()),
            "declared_duration_seconds": pa.array([r.decode.declared_duration_seconds for r in rows], pa.float64()),
            "warnings": pa.array([[w.code for w in r.decode.warnings] for r in rows], pa.list_(pa.string())),
            "representative_start_seconds": pa.array([r.representative[0] for r in rows], pa.float64()),
            "representative_end_seconds": pa.array([r.representative[1] for r in rows], pa.float64()),
        }
        if identity.taggram:
            columns["taggram"] = _segment_lists([r.taggram for r in rows], n_labels)
        if identity.segment_embeddings:
            columns["segment_embeddings"] = _segment_lists([r.segment_embeddings for r in rows], dim)
        return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)

    def _errors_table(self, rows: list[ErrorRow]):
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
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), width)


def _segment_lists(per_track: list[np.ndarray], width: int):
    """list<fixed_size_list<float32, width>>: one list of per-segment rows per track."""
    offsets = np.concatenate([[0], np.cumsum([m.shape[0] for m in per_track])]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), _fixed_lists(np.concatenate(per_track), width))


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def identity_precision(identity: dict) -> str:
    """The precision a backfill output's embeddings were computed in (``RunIdentity.as_json``; absent = fp32)."""
    return identity.get("precision", "fp32")


def read_output(root: Path, table: str = RESULTS_DIR):
    """All committed rows of ``results`` or ``errors`` as one pyarrow Table (temporaries and _files ignored)."""
    parts = sorted((root / table).glob("part-*.parquet"))
    if not parts:
        return None
    return pa.concat_tables([pq.read_table(p) for p in parts])
