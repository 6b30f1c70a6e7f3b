"""The catalog map's body at 10⁵ points (issue #23): bytes of each form, and the time to make them.

A backfill-like output of ``--derived`` vectors (span means of a real ``--segment-embeddings`` backfill, as
bench/studies/catalog_map.py) with track ids and artists shaped like the corpus's (``<package>/<track>~<n>``, each
derived row keeping its source track's artist and tag scores), through the real `taggram index build` (pca) and
``load_index``; then the bodies ``GET /catalog/map`` sends (service/api/catalog_payload.py). Each derived row also
gets a representative window (output format 3): starting at its span's first segment and as long as its source
track's window, clipped to the track: one distinct window per row, as in a real catalog (the source tracks' own
windows would repeat 110 values, which gzip would flatter). Run::

    flock /tmp/taggram-bench.lock .venv/bin/python -m bench.studies.catalog_payload /tmp/cat-corpus/bf \
        --artists /tmp/cat-corpus/subset.csv --derived 100000
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from service.api.catalog_payload import GZIP_LEVEL, compact_document, encode, points_document
from service.artefacts.similar import artefact
from service.artefacts.similar.catalog import WINDOW_COLUMNS
from service.artefacts.similar.serving import load_index
from service.decode.limits import SAMPLE_RATE  # the backfill's hop_samples count at this rate
from service.offline import index_build
from service.offline.backfill.output import RUN_FILE
from service.offline.index_build import read_artists

SEED = 13


def derived_output(backfill: Path, artists_csv: Path, n: int, out: Path) -> tuple[str, str]:
    """(model, onnx sha256) of a backfill-like output of n span means, each with its source track's metadata."""
    from bench.studies.similar import read_segments
    from service.offline.backfill import read_output

    table = read_output(backfill)
    segments = read_segments(backfill)
    track_ids = table.column("track_id").to_pylist()
    artists = read_artists(artists_csv)
    rng = np.random.default_rng(SEED)
    source = rng.integers(0, len(segments), n)
    vectors = np.empty((n, segments[0].shape[1]), np.float32)
    firsts = np.empty(n, np.int64)
    for row, track in enumerate(source.tolist()):  # a random span of the source track, at least 2 segments
        length = len(segments[track])
        span = int(rng.integers(min(2, length), length + 1))
        first = int(rng.integers(0, length - span + 1))
        vectors[row] = segments[track][first : first + span].mean(axis=0)
        firsts[row] = first
    scores = np.stack(table.column("tag_scores").to_numpy(zero_copy_only=False))[source]
    model, onnx = table.column("model")[0].as_py(), table.column("onnx_sha256")[0].as_py()
    derived = pa.table(
        {
            "track_id": [f"{track_ids[t]}~{i}" for i, t in enumerate(source.tolist())],
            "model": [model] * n,
            "onnx_sha256": [onnx] * n,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
            "tag_scores": pa.FixedSizeListArray.from_arrays(
                pa.array(scores.reshape(-1).astype(np.float32)), scores.shape[1]
            ),
            "artist_id": pa.array([artists.get(track_ids[t], (None, None))[0] for t in source.tolist()], pa.string()),
            **derived_windows(table, source, firsts),
        }
    ).replace_schema_metadata(table.schema.metadata)
    (out / "results").mkdir(parents=True)
    shutil.copy(backfill / RUN_FILE, out / RUN_FILE)  # the run's identity: index build records its precision
    pq.write_table(derived, out / "results" / "part-n0001-i0000-000000.parquet")
    return model, onnx


def derived_windows(table, source: np.ndarray, firsts: np.ndarray) -> dict:
    """The window columns of derived rows (see the module's docstring); none for a backfill without them."""
    if not all(name in table.column_names for name in WINDOW_COLUMNS):
        return {}
    start, end = (table.column(name).to_numpy()[source] for name in WINDOW_COLUMNS)
    hop = table.column("hop_samples").to_numpy()[source] / SAMPLE_RATE
    duration = table.column("duration_seconds").to_numpy()[source]
    first = np.minimum(firsts * hop, np.maximum(duration - (end - start), 0.0))
    return {
        WINDOW_COLUMNS[0]: pa.array(first, pa.float64()),
        WINDOW_COLUMNS[1]: pa.array(np.minimum(first + (end - start), duration), pa.float64()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backfill", type=Path)
    parser.add_argument("--artists", type=Path, required=True)
    parser.add_argument("--derived", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        model, onnx = derived_output(args.backfill, args.artists, args.derived, work / "bf")
        started = time.perf_counter()
        manifest = index_build.build(work / "bf", work / "ix", backend="exact")
        build_seconds = time.perf_counter() - started
        dims = SimpleNamespace(onnx=SimpleNamespace(sha256=onnx), embedding_dim=manifest.dim)
        index = load_index(
            artefact.manifest_path(work / "ix", model),
            {model: SimpleNamespace(manifest=dims, runner=SimpleNamespace(precision=manifest.precision))},
        )
        timings, sizes = {}, {}
        for name, make in (("compact", compact_document), ("points", points_document)):
            started = time.perf_counter()
            body = encode(make(model, index))
            timings[name] = time.perf_counter() - started
            sizes[name] = len(body)
            started = time.perf_counter()
            sizes[f"{name} gzip"] = len(gzip.compress(body, GZIP_LEVEL, mtime=0))
            timings[f"{name} gzip"] = time.perf_counter() - started
        files = {p.name.split(".", 1)[1]: p.stat().st_size for p in (work / "ix").iterdir() if "-" in p.name}
    result = {
        "points": manifest.count,
        "artists": manifest.artists.count if manifest.artists else 0,
        "index_build_seconds": build_seconds,
        "bytes": sizes,
        "seconds": timings,
        "files": files,
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
