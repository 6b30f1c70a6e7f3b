"""Which 2-D projection for the catalog map (issue #23): neighbour preservation, trustworthiness, build time, memory.

Two data sets, both normalised with the index's own function (``artefact.normalise_catalog``):

- ``corpus``: the mean embedding of every track of a backfill output (what `taggram index build` indexes);
- ``derived``: ``--derived`` means of distinct contiguous spans of one track each, from a ``--segment-embeddings``
  backfill (``bench.studies.similar.span_means``, as docs/similar.md's derived sets): excerpts, not independent tracks.

Each (data set, projection) is fitted in its own child process, so its time and peak memory are its own: peak =
VmHWM after the fit − VmRSS before it. The parent then scores the 2-D positions on an evaluation sample of rows:

- ``kept@10``: the share of each sampled row's 10 nearest neighbours (cosine in 200-d, itself excluded) that are
  among its 10 nearest in 2-D (over the whole data set);
- ``trustworthiness@10`` (sklearn.manifold.trustworthiness, Venna & Kaski) on the sample alone (it needs every
  pairwise rank: O(sample²)), so at 10⁵ it is the trustworthiness of a random sub-catalog of that size;
- ``placed kept@10``: ``HELD_OUT`` of the rows are left out of the fit and placed afterwards as the service places an
  upload (linear: the fitted projection; t-SNE and UMAP: ``place_by_neighbours`` among their 10 nearest catalog
  rows); the share of each one's 10 nearest catalog rows in 200-d that are its 10 nearest on the map.

Projections: pca and standardised-pca are the service's own (service/artefacts/similar/projection.py, numpy); umap
(umap-learn) and tsne (openTSNE) are installed for the study only (``pip install umap-learn openTSNE``). Run::

    flock /tmp/taggram-bench.lock .venv/bin/python -m bench.studies.catalog_map --backfill /tmp/corpus-seg \
        --derived 100000 --json /tmp/catalog-map.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from service.artefacts.similar import artefact
from service.artefacts.similar.projection import LINEAR_PROJECTIONS, PLACEMENT_NEIGHBOURS, fit, place_by_neighbours

METHODS = (*LINEAR_PROJECTIONS, "umap", "tsne")
NEIGHBOURS = 10
EVAL_SAMPLE = 2000  # rows whose neighbourhoods are scored (all rows when fewer)
TRUST_SAMPLE = 5000  # rows trustworthiness is computed on (O(sample²) memory)
FIT_TIMEOUT_SECONDS = 900  # per fit; --fit-timeout
THREADS = 2  # the machine's cores; UMAP and openTSNE get both, numpy's BLAS uses them too
SEED = 13
HELD_OUT = 0.02  # rows left out of the fit and placed afterwards, as uploads are ("placed kept@10")
SCORE_CHUNK = 64  # sampled rows scored at once: [64, 10⁵] float64 distances


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def fit_positions(method: str, vectors: np.ndarray) -> np.ndarray:
    if method in LINEAR_PROJECTIONS:
        return fit(vectors, method).place(vectors)
    if method == "umap":
        import umap

        return umap.UMAP(n_neighbors=15, min_dist=0.1, metric="euclidean", n_jobs=THREADS).fit_transform(vectors)
    if method == "tsne":
        from openTSNE import TSNE

        return np.asarray(TSNE(perplexity=30, n_jobs=THREADS, random_state=SEED).fit(vectors))
    raise SystemExit(f"unknown method {method}")


def child(method: str, data: Path, out: Path) -> None:
    """Fit on the catalog rows (all but the last HELD_OUT share), save their positions; linear projections also
    place the held-out rows (the others are placed by the parent, with the service's place_by_neighbours)."""
    vectors = np.load(data)
    fitted_rows = len(vectors) - held_out(len(vectors))
    before = status_kib("VmRSS")
    started = time.perf_counter()
    positions = np.asarray(fit_positions(method, vectors[:fitted_rows]), dtype=np.float32)
    seconds = time.perf_counter() - started
    if method in LINEAR_PROJECTIONS:
        positions = np.vstack([positions, fit(vectors[:fitted_rows], method).place(vectors[fitted_rows:])])
    np.save(out, positions)
    print(json.dumps({"seconds": seconds, "peak_mib": (status_kib("VmHWM") - before) / 1024}))


def held_out(n: int) -> int:
    return max(1, int(n * HELD_OUT))


def place_held_out(vectors: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Held-out rows placed as the service places an upload: among their PLACEMENT_NEIGHBOURS nearest catalog rows."""
    catalog = vectors[: len(positions)]
    placed = []
    for query in vectors[len(positions) :]:
        scores = catalog @ query
        rows = np.argsort(-scores)[:PLACEMENT_NEIGHBOURS]
        placed.append(place_by_neighbours(positions, rows, scores[rows]))
    return np.vstack([positions, np.asarray(placed, np.float32)])


def placement_kept(vectors: np.ndarray, positions: np.ndarray, fitted_rows: int) -> float:
    """kept@10 of the held-out rows among the catalog rows: their 10 nearest catalog rows in 200-d vs on the map."""
    catalog, catalog_xy = vectors[:fitted_rows].astype(np.float64), positions[:fitted_rows].astype(np.float64)
    kept = []
    for row in range(fitted_rows, len(vectors)):
        high = np.argpartition(-(catalog @ vectors[row]), NEIGHBOURS)[:NEIGHBOURS]
        low = np.argpartition(np.square(catalog_xy - positions[row]).sum(axis=1), NEIGHBOURS)[:NEIGHBOURS]
        kept.append(len(set(high.tolist()) & set(low.tolist())) / NEIGHBOURS)
    return float(np.mean(kept))


def top_neighbours(points: np.ndarray, rows: np.ndarray, k: int, *, cosine: bool) -> np.ndarray:
    """The k nearest rows of every sampled row (itself excluded), by cosine (unit vectors) or euclidean distance."""
    found = np.empty((len(rows), k), np.int64)
    for start in range(0, len(rows), SCORE_CHUNK):
        part = rows[start : start + SCORE_CHUNK]
        if cosine:
            distance = -(points[part] @ points.T)
        else:
            distance = np.square(points[part, None, 0] - points[None, :, 0]) + np.square(
                points[part, None, 1] - points[None, :, 1]
            )
        distance[np.arange(len(part)), part] = np.inf
        top = np.argpartition(distance, k, axis=1)[:, :k]
        found[start : start + len(part)] = top
    return found


def score(vectors: np.ndarray, positions: np.ndarray, rng: np.random.Generator) -> dict:
    from sklearn.manifold import trustworthiness

    rows = rng.choice(len(vectors), min(EVAL_SAMPLE, len(vectors)), replace=False)
    high = top_neighbours(vectors, rows, NEIGHBOURS, cosine=True)
    low = top_neighbours(positions.astype(np.float64), rows, NEIGHBOURS, cosine=False)
    kept = np.mean([len(set(a) & set(b)) / NEIGHBOURS for a, b in zip(high.tolist(), low.tolist())])
    sub = rng.choice(len(vectors), min(TRUST_SAMPLE, len(vectors)), replace=False)
    trust = trustworthiness(vectors[sub], positions[sub], n_neighbors=NEIGHBOURS)
    return {
        "kept_at_10": float(kept),
        "trustworthiness_at_10": float(trust),
        "eval_rows": len(rows),
        "trust_rows": len(sub),
    }


def data_sets(backfill: Path, derived: int, only_derived: bool = False) -> dict[str, np.ndarray]:
    from bench.studies.similar import read_segments, span_means
    from service.offline.index_build import embeddings, read_catalog

    table, _, _ = read_catalog(backfill)
    sets = {} if only_derived else {"corpus": artefact.normalise_catalog(embeddings(table))[0]}
    if derived:
        spans = span_means(read_segments(backfill), derived, np.random.default_rng(SEED))
        sets[f"derived-{derived}"] = artefact.normalise_catalog(spans)[0]
    return sets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backfill", type=Path, help="a taggram backfill --segment-embeddings output")
    parser.add_argument("--derived", type=int, default=100_000, help="derived vectors (0: none)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--only-derived", action="store_true", help="skip the corpus's own track vectors")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    parser.add_argument("--fit-timeout", type=float, default=FIT_TIMEOUT_SECONDS, help="seconds per fit")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, vectors in data_sets(args.backfill, args.derived, args.only_derived).items():
            if len(vectors) <= NEIGHBOURS + 1:
                print(f"{name}: {len(vectors)} vectors, too few for {NEIGHBOURS} neighbours", flush=True)
                continue
            vectors = vectors[np.random.default_rng(SEED).permutation(len(vectors))]  # held-out rows: the last
            data = Path(work) / f"{name}.npy"
            np.save(data, vectors)
            for method in args.methods.split(","):
                out = Path(work) / f"{name}-{method}.npy"
                row = {"data": name, "n": len(vectors), "method": method}
                try:
                    done = subprocess.run(
                        [sys.executable, "-m", "bench.studies.catalog_map", "--child", method, str(data), str(out)],
                        capture_output=True,
                        text=True,
                        timeout=args.fit_timeout,
                    )
                except subprocess.TimeoutExpired:
                    row["error"] = f"no fit within {args.fit_timeout:.0f} s"
                else:
                    if done.returncode != 0:
                        row["error"] = done.stderr.strip().splitlines()[-1]
                    else:
                        row |= json.loads(done.stdout.strip().splitlines()[-1])
                        positions = np.load(out)
                        if len(positions) < len(vectors):
                            positions = place_held_out(vectors, positions)
                        fitted_rows = len(vectors) - held_out(len(vectors))
                        row |= score(vectors[:fitted_rows], positions[:fitted_rows], np.random.default_rng(SEED))
                        row["placed_kept_at_10"] = placement_kept(vectors, positions, fitted_rows)
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0


def table(rows: list[dict]) -> str:
    lines = [
        "| data | n | projection | kept@10 | trustworthiness@10 | placed kept@10 | fit s | peak MiB |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['data']} | {r['n']} | {r['method']} | – | – | – | {r['error']} | – |")
        else:
            lines.append(
                f"| {r['data']} | {r['n']} | {r['method']} | {r['kept_at_10']:.3f} | "
                f"{r['trustworthiness_at_10']:.3f} | {r['placed_kept_at_10']:.3f} | {r['seconds']:.1f} | "
                f"{r['peak_mib']:.0f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
