"""Backfill embeddings joined with the labels: the matrix a head is trained and cross-validated on.

The join is where most bad input shows: unknown track ids, classes too small to learn or to evaluate, a class
whose examples all come from one artist (the head would learn the artist, and grouped folds could not measure
it), embeddings made by another model than the one the head will run on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from head_training.labels import LabelError, Labels, name_rows

DEFAULT_MIN_EXAMPLES = 5  # positives a class needs: fewer cannot be split over folds and still be evaluated
DEFAULT_MIN_ARTISTS = 2  # distinct artists a class needs: one artist per class is leakage, not a genre


@dataclass
class Dataset:
    model: str
    onnx_sha256: str
    precision: str  # of the backfill's embeddings (service.offline.backfill.identity_precision)
    embedding_dim: int
    track_ids: list[str]
    classes: list[str]
    targets: np.ndarray  # bool [tracks, classes]
    groups: list[str]  # CV group per track: the artist, or the track itself
    grouped_by: str  # "artist" | "track"
    pooled: np.ndarray  # float32 [tracks, dim]: the backfill's mean embedding
    segments: list[np.ndarray] | None  # per track float32 [segments, dim]; None when the backfill has none
    tag_scores: np.ndarray  # float32 [tracks, labels]: the base model's mean tag scores (the baseline)
    tag_labels: list[str]
    embeddings_digest: str
    warnings: list[str] = field(default_factory=list)


def _identity(root: Path) -> dict:
    try:
        return json.loads((root / "_backfill.json").read_text())
    except (OSError, ValueError) as error:
        raise LabelError(f"{root} is not a backfill output directory ({error})") from None


def load(
    root: Path,
    labels: Labels,
    *,
    expected_model: str | None = None,
    expected_sha256: str | None = None,
    min_examples: int = DEFAULT_MIN_EXAMPLES,
    min_artists: int = DEFAULT_MIN_ARTISTS,
) -> Dataset:
    from service.offline.backfill import identity_precision, read_output

    identity = _identity(root)
    if expected_model is not None and identity["model"] != expected_model:
        raise LabelError(f"{root} holds embeddings of model {identity['model']!r}, not {expected_model!r}")
    if expected_sha256 is not None and identity["onnx_sha256"] != expected_sha256:
        raise LabelError(
            f"{root} holds embeddings of another {identity['model']} graph (onnx sha256 "
            f"{identity['onnx_sha256'][:12]}…, the installed model is {expected_sha256[:12]}…): "
            "rerun the backfill with the model the head will run on"
        )
    table = read_output(root)
    if table is None:
        raise LabelError(f"{root} has no committed results")
    columns = set(table.schema.names)
    ids = table.column("track_id").to_pylist()
    models = set(table.column("onnx_sha256").to_pylist())
    if models != {identity["onnx_sha256"]}:
        raise LabelError(f"{root}: rows come from several model graphs {sorted(m[:12] for m in models)}")
    position = {track_id: i for i, track_id in enumerate(ids)}
    warnings = list(labels.warnings)
    unknown = [r.line for r in labels.rows if r.track_id not in position]
    if unknown:
        warnings.append(
            f"{labels.path}: {len(unknown)} track ids are not in the backfill results (ignored): {name_rows(unknown)}"
        )
    rows = [r for r in labels.rows if r.track_id in position]
    classes, dropped = _usable_classes(rows, labels, min_examples, min_artists, warnings)
    rows = [r for r in rows if set(r.classes) & set(classes)]
    if len(classes) < 2 or len(rows) < 2:
        raise LabelError(
            f"{labels.path}: {len(classes)} usable classes on {len(rows)} tracks; a head needs at "
            f"least 2 classes{f' (dropped: {dropped})' if dropped else ''}"
        )
    index = [position[r.track_id] for r in rows]
    class_index = {c: i for i, c in enumerate(classes)}
    targets = np.zeros((len(rows), len(classes)), bool)
    for i, row in enumerate(rows):
        for cls in row.classes:
            if cls in class_index:
                targets[i, class_index[cls]] = True
    pooled = _matrix(table.column("embedding").take(index), identity["embedding_dim"])
    segments = None
    if "segment_embeddings" in columns:
        segments = [
            np.asarray(v, np.float32).reshape(-1, identity["embedding_dim"])
            for v in table.column("segment_embeddings").take(index).to_pylist()
        ]
    else:
        warnings.append(
            f"{root} has no segment_embeddings (backfill --segment-embeddings): per-segment training is not compared"
        )
    grouped_by = "artist" if labels.has_artists else "track"
    if grouped_by == "track":
        warnings.append(
            f"{labels.path} gives no artist_id: folds are grouped by track, so a track's artist may be "
            "on both sides and the metrics are optimistic"
        )
    return Dataset(
        model=identity["model"], onnx_sha256=identity["onnx_sha256"], precision=identity_precision(identity),
        embedding_dim=identity["embedding_dim"],
        track_ids=[r.track_id for r in rows], classes=classes, targets=targets,
        groups=[r.artist if r.artist else r.track_id for r in rows], grouped_by=grouped_by, pooled=pooled,
        segments=segments, tag_scores=_matrix(table.column("tag_scores").take(index), len(identity["labels"])),
        tag_labels=list(identity["labels"]), embeddings_digest=_digest(pooled, segments), warnings=warnings,
    )  # fmt: skip


def _usable_classes(rows, labels: Labels, min_examples: int, min_artists: int, warnings: list[str]):
    """Classes with enough examples and artists; a one-artist class with artists known is an error (leakage)."""
    examples: dict[str, list[int]] = {}
    artists: dict[str, set[str]] = {}
    for row in rows:
        for cls in row.classes:
            examples.setdefault(cls, []).append(row.line)
            artists.setdefault(cls, set()).add(row.artist or row.track_id)
    if labels.has_artists:
        leaking = {c: sorted(a)[0] for c, a in artists.items() if len(a) == 1 and len(examples[c]) > 1}
        if leaking:
            named = "; ".join(
                f"{c!r} (all {len(examples[c])} from artist {a!r}: {name_rows(examples[c])})"
                for c, a in leaking.items()
            )
            raise LabelError(
                f"{labels.path}: classes whose examples all come from one artist would teach the "
                f"artist, not the class, and cannot be evaluated on unseen artists: {named}"
            )
    keep, dropped = [], []
    for cls in sorted(examples):
        few_examples = len(examples[cls]) < min_examples
        few_artists = labels.has_artists and len(artists[cls]) < min_artists
        if few_examples or few_artists:
            dropped.append(cls)
            warnings.append(
                f"{labels.path}: class {cls!r} is dropped: {len(examples[cls])} examples "
                f"(minimum {min_examples}), {len(artists[cls])} artists (minimum {min_artists}): "
                f"{name_rows(examples[cls])}"
            )
        else:
            keep.append(cls)
    return keep, dropped


def _matrix(column, width: int) -> np.ndarray:
    import pyarrow as pa

    flat = pa.concat_arrays(column.chunks).flatten() if isinstance(column, pa.ChunkedArray) else column.flatten()
    return np.asarray(flat.to_numpy(zero_copy_only=False), np.float32).reshape(-1, width)


def _digest(pooled: np.ndarray, segments: list[np.ndarray] | None) -> str:
    """sha256 over the training inputs' bytes, in training order: names exactly the embeddings a head saw."""
    digest = hashlib.sha256(np.ascontiguousarray(pooled).tobytes())
    for matrix in segments or ():
        digest.update(np.ascontiguousarray(matrix).tobytes())
    return digest.hexdigest()
