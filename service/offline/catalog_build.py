"""The catalog parts of `taggram index build`: the map (a 2-D projection of the normalised track vectors, each
track's position and label) and the pooled artists. Written before the manifest that names them (the commit point).

Labels are a head's top class when the build is given one (``--label-head DIR/NAME.json``, the artefact
``taggram serve`` loads from TAGGRAM_HEADS_DIR), run on each track's pooled (mean) embedding; else the top tag of
the backfill's ``tag_scores`` column and the label list in its Parquet metadata. The manifest's ``map.label`` says
which. Subgenre scores come from the tag scores; an output without them (older or hand-made) gets unlabelled points
(unless a head labels them) and artists without subgenres. Each track's representative window (the backfill's
``representative_*`` columns, output format 3) is carried into the map; an older output has none
(``map.representative`` false: the page plays a track's first 30 s instead, docs/catalog.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from service.artefacts.heads import LoadedHead, open_head, read_head_manifest
from service.artefacts.manifest import ModelFileError
from service.artefacts.similar import artefact, artists, catalog, projection
from service.artefacts.taxonomy import load_taxonomy, subgenre_scores

BACKFILL_METADATA = b"taggram.backfill"  # the run identity the backfill writes in every part's schema
TSNE_PERPLEXITY = 30  # openTSNE's default, as measured in docs/catalog.md
TSNE_SEED = 13  # the same catalog gives the same map
HEAD_CHUNK_ROWS = 16_384  # tracks per head call: bounds the float32 copy at 16 384 × dim, as projection.py's chunks


class CatalogInputError(Exception):
    """The backfill output or the taxonomy cannot give the catalog parts; the message says which."""


def backfill_labels(table) -> list[str] | None:
    """The model's labels as the backfill recorded them, or None when the output carries no identity."""
    metadata = table.schema.metadata or {}
    if BACKFILL_METADATA not in metadata:
        return None
    return list(json.loads(metadata[BACKFILL_METADATA]).get("labels") or []) or None


def tag_scores(table) -> np.ndarray | None:
    """float32 [tracks, labels] of the backfill's tag_scores column, or None without one."""
    if "tag_scores" not in table.column_names:
        return None
    column = table.column("tag_scores").combine_chunks()
    width = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, width)


def top_labels(table) -> list[str | None]:
    labels, scores = backfill_labels(table), tag_scores(table)
    if labels is None or scores is None or scores.shape[1] != len(labels):
        return [None] * table.num_rows
    return [labels[i] for i in np.argmax(scores, axis=1).tolist()]


def representative_windows(table) -> np.ndarray | None:
    """float64 [tracks, 2] of the backfill's representative (start, end) seconds (NaN where a row has none), or None
    for an output without the columns (written before output format 3); a window that is not one is refused."""
    if not all(name in table.column_names for name in catalog.WINDOW_COLUMNS):
        return None
    windows = np.stack(
        [np.asarray(table.column(n).to_numpy(zero_copy_only=False), np.float64) for n in catalog.WINDOW_COLUMNS],
        axis=1,
    )
    row = catalog.window_problem(windows)
    if row is not None:
        raise CatalogInputError(
            f"track {table.column('track_id')[row].as_py()!r}: representative window {windows[row].tolist()} "
            "is not a window (0 <= start < end)"
        )
    return windows


def label_head(path: Path, model: str, onnx_sha256: str, embedding_dim: int) -> LoadedHead:
    """The head at ``path``, refused unless it was trained on the very graph whose embeddings the backfill holds."""
    try:
        manifest = read_head_manifest(path)
        if manifest.base_model.name != model:
            raise ModelFileError(f"head {path}: trained on {manifest.base_model.name}, the backfill ran {model}")
        return open_head(path, manifest, onnx_sha256, embedding_dim)
    except ModelFileError as error:
        raise CatalogInputError(str(error)) from None


def head_labels(head: LoadedHead, raw: np.ndarray) -> list[str]:
    """Each track's most probable class of the head, on its mean embedding (the backfill's, not normalised): what a
    ``mean_embedding`` head serves; a ``mean_scores`` head's served top class may differ (docs/catalog.md)."""
    classes = head.manifest.classes
    top = [
        np.argmax(head.segment_scores(raw[start : start + HEAD_CHUNK_ROWS]), axis=1)
        for start in range(0, len(raw), HEAD_CHUNK_ROWS)
    ]
    return [classes[i] for i in np.concatenate(top).tolist()] if top else []


def map_labels(table, raw: np.ndarray, head: LoadedHead | None) -> tuple[list[str | None], str]:
    """(one label per track, what the labels are: the manifest's ``map.label``)."""
    if head is None:
        return top_labels(table), catalog.MAP_LABEL
    return head_labels(head, raw), f"{catalog.HEAD_LABEL} {head.name}"


def build_map(
    output: Path,
    model: str,
    vectors: np.ndarray,
    method: str,
    labels: tuple[list[str | None], str],
    windows: np.ndarray | None,
) -> artefact.MapInfo:
    """``windows``: ``representative_windows`` of the backfill's table, read before anything is written."""
    if method in projection.NEIGHBOUR_PLACED:
        positions = fit_tsne(vectors)
        placement = projection.NeighbourPlacement(method, projection.PLACEMENT_NEIGHBOURS)
        return catalog.write_map(output, model, positions, labels, placement, windows)
    fitted = projection.fit(vectors, method)
    return catalog.write_map(output, model, fitted.place(vectors), labels, fitted, windows)


def fit_tsne(vectors: np.ndarray) -> np.ndarray:
    """float32 [n, 2] t-SNE positions (openTSNE, FFT gradients; the `map` extra, never in the runtime image)."""
    try:
        from openTSNE import TSNE
    except ImportError:
        raise CatalogInputError(
            "--projection tsne needs openTSNE: pip install 'taggram[map]' "
            "(the runtime image ships pca and standardised-pca only)"
        ) from None
    from service.engine.run import usable_cpus

    if len(vectors) <= 3 * TSNE_PERPLEXITY:
        raise CatalogInputError(f"--projection tsne needs more than {3 * TSNE_PERPLEXITY} tracks; use pca")
    fitted = TSNE(perplexity=TSNE_PERPLEXITY, n_jobs=usable_cpus(), random_state=TSNE_SEED).fit(vectors)
    return np.asarray(fitted, dtype=np.float32)


def build_artists(
    output: Path, model: str, vectors: np.ndarray, table, tracks, taxonomy_dir: Path | None
) -> artefact.ArtistsInfo | None:
    """None when no track has an artist."""
    artist_of_row = tracks.column("artist_id").to_pylist()
    if all(a is None for a in artist_of_row):
        return None
    labels, scores = backfill_labels(table), tag_scores(table)
    if labels is None or scores is None:
        name, names, per_track = "", [], np.zeros((len(vectors), 0), np.float32)
    else:
        try:
            taxonomy = load_taxonomy(model, labels, taxonomy_dir)
        except ModelFileError as error:
            raise CatalogInputError(str(error)) from None
        name, names, per_track = taxonomy.name, list(taxonomy.subgenres), subgenre_scores(taxonomy, scores)
    pooled = artists.pool(artist_of_row, vectors, per_track)
    return catalog.write_artists(output, model, pooled, name, names)
