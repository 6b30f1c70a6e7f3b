"""Nearest-neighbour libraries on the same data: exact search (numpy) vs faiss-cpu, usearch, voyager.

For each catalog size the parent draws a clustered synthetic catalog (a Gaussian mixture, normalised the way
``taggram index build`` normalises real embeddings: catalog mean removed, unit length), and 1000 queries: half are
catalog vectors plus small noise (a re-encoded upload), half fresh draws from the mixture (a new track). The exact
top-10 (float32 matmul) is the ground truth. Every library then runs in its own child process, so its memory is
measured alone (RSS growth while building; RSS after loading from the saved file):

    recall@10 vs exact · queries/s (one query at a time, one thread: the service answers one request per query)
    · build time (all cores) · memory · file size · load time (read fully, and memory-mapped where the library can)

HNSW builds are capped at ``--build-cap-seconds``: a build that passes the cap stops at the chunk boundary, its
time is extrapolated linearly to the full size (an underestimate: HNSW insertion grows ~log n) and no query figures
are given for it.

Two data sources (``--source``):

- ``synthetic``: the Gaussian mixture above (scale only: says nothing about real neighbourhoods).
- ``real``: per-segment msd-musicnn embeddings of a real collection, from ``taggram backfill --segment-embeddings``
  (``--segments DIR``). Tracks holding ``HELD_OUT_FRACTION`` of the segments are held out. Up to the number of
  segments available the catalog is real segment vectors (sampled without replacement); the queries are half
  segments of held-out tracks ("a new track") and half segments of catalog tracks removed from the catalog (a
  shifted window of a known track). Above that the catalog is **derived**: means of distinct random contiguous
  spans (``SPAN_MIN_SEGMENTS`` segments to the whole track) of one track (an excerpt's embedding), queries likewise
  from held-out tracks and from spans of catalog tracks that are not in the catalog: many overlapping excerpts of
  the same few hundred tracks, not independent tracks.

Both are normalised with the service's own function (``artefact.normalise_catalog``: catalog mean removed, unit
length). Run::

    PYTHONPATH=$PWD python bench/studies/similar.py --sizes 100000,1000000
    PYTHONPATH=$PWD python bench/studies/similar.py --source real --segments /tmp/corpus-seg --sizes 100000,1000000

A decision study (the nearest-neighbour library): its conclusion is docs/similar.md, "Which library".
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # the child processes run this file as a script

# E402: these imports need the repo root on sys.path (set above), as this file also runs as a script.
from service.artefacts.similar import artefact  # noqa: E402 - see above
from service.artefacts.similar.search import (  # noqa: E402 - see above
    HNSW_CONNECTIVITY,
    HNSW_EXPANSION_ADD,
    HNSW_EXPANSION_SEARCH,
)

DIM = 200  # musicnn's penultimate layer
CLUSTERS = 2000  # "genres × production styles": enough that neighbours are not one big blob
CLUSTER_SPREAD = 0.35  # within-cluster std relative to the centres' std (real embeddings: tight but overlapping)
QUERIES = 1000
NEAR_DUPLICATE_NOISE = 0.05  # std of the noise added to catalog vectors for the "re-encoded upload" half
K = 10
# One HNSW setting for every library, the service's (search.py), so the comparison is about the implementation, not
# the knobs; --ef-search overrides the search expansion (the synthetic tables of docs/similar.md ran at 64).
HNSW_M = HNSW_CONNECTIVITY
HNSW_EF_CONSTRUCTION = HNSW_EXPANSION_ADD
IVF_NPROBE = 16  # the default of --nprobe
BUILD_CHUNK = 50_000
LIBRARIES = ("exact", "faiss-hnsw", "faiss-ivf", "usearch-f32", "usearch-f16", "usearch-i8", "voyager")
# Real source: tracks holding this share of the segments are held out (their segments/spans are "new track" queries).
HELD_OUT_FRACTION = 0.05
# Derived vectors: the mean of at least this many consecutive segments of one track (6 s at the default hop).
SPAN_MIN_SEGMENTS = 2
DERIVE_CHUNK = 100_000  # span means computed per chunk: bounded temporaries


def draw(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    labels = rng.integers(0, len(centres), n)
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, 100_000):  # bounded temporaries
        stop = min(n, start + 100_000)
        out[start:stop] = centres[labels[start:stop]] + CLUSTER_SPREAD * rng.standard_normal(
            (stop - start, DIM), np.float32
        )
    return out


def make_synthetic(n: int, folder: Path, seed: int = 13) -> dict:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    catalog, mean = artefact.normalise_catalog(draw(n, rng, centres))
    near = catalog[rng.integers(0, n, QUERIES // 2)] + NEAR_DUPLICATE_NOISE * rng.standard_normal(
        (QUERIES // 2, DIM), np.float32
    )
    fresh = draw(QUERIES - QUERIES // 2, rng, centres)
    queries = np.vstack([near / np.linalg.norm(near, axis=1, keepdims=True), artefact.normalise(fresh, mean)])
    save_data(folder, catalog, queries)
    return {"source": "synthetic"}


def read_segments(backfill_out: Path) -> list[np.ndarray]:
    """Per track, float32 [segments, dim] from a backfill run with --segment-embeddings (Arrow buffers, no Python
    float per value)."""
    from service.offline.backfill import read_output

    table = read_output(backfill_out)
    if table is None or "segment_embeddings" not in table.column_names:
        raise SystemExit(f"{backfill_out}: no results with segment_embeddings (taggram backfill --segment-embeddings)")
    column = table.column("segment_embeddings").combine_chunks()
    offsets = column.offsets.to_numpy()
    segments = column.flatten()
    flat = segments.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, segments.type.list_size)
    offsets = offsets - offsets[0]
    return [flat[start:stop] for start, stop in itertools.pairwise(offsets) if stop > start]


def split_tracks(tracks: list[np.ndarray], rng: np.random.Generator) -> tuple[list, list]:
    """(held-out tracks, catalog tracks): whole tracks in a seeded order until HELD_OUT_FRACTION of the segments."""
    order = rng.permutation(len(tracks))
    total, held, taken = sum(len(t) for t in tracks), [], 0
    for i in order:
        if taken >= HELD_OUT_FRACTION * total:
            break
        held.append(i)
        taken += len(tracks[i])
    rest = sorted(set(range(len(tracks))) - set(held))
    return [tracks[i] for i in held], [tracks[i] for i in rest]


def span_means(tracks: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """n means of distinct contiguous spans (at least SPAN_MIN_SEGMENTS, at most the whole track) of one track
    each, drawn uniformly without replacement among all such spans: no two rows are the same span, so no exact
    duplicates (ties in the ground truth that no index could rank alike)."""
    lengths = np.array([len(t) for t in tracks])
    # one entry per (track, span length): how many starts it has; an entry's spans are numbered consecutively
    entry_track = np.concatenate([np.full(max(0, n - SPAN_MIN_SEGMENTS + 1), i) for i, n in enumerate(lengths)])
    entry_span = np.concatenate([np.arange(SPAN_MIN_SEGMENTS, n + 1) for n in lengths])
    entry_first = np.concatenate([[0], np.cumsum(lengths[entry_track] - entry_span + 1)])
    if n > entry_first[-1]:
        raise SystemExit(
            f"{n} derived vectors asked, {entry_first[-1]} distinct spans exist: a smaller size or a "
            "backfill with a smaller --hop"
        )
    segment_first = np.concatenate([[0], np.cumsum(lengths)])
    prefix = np.zeros((segment_first[-1] + 1, DIM), np.float64)  # prefix[i] = sum of the first i segments
    np.cumsum(np.concatenate(tracks).astype(np.float64), axis=0, out=prefix[1:])
    chosen = rng.choice(entry_first[-1], n, replace=False)
    out = np.empty((n, DIM), np.float32)
    for first in range(0, n, DERIVE_CHUNK):
        part = chosen[first : first + DERIVE_CHUNK]
        entry = np.searchsorted(entry_first, part, side="right") - 1
        span = entry_span[entry]
        begin = segment_first[entry_track[entry]] + part - entry_first[entry]
        out[first : first + len(part)] = (prefix[begin + span] - prefix[begin]) / span[:, None]
    return out


def make_real(n: int, folder: Path, segments_dir: Path, seed: int = 13) -> dict:
    rng = np.random.default_rng(seed)
    held, known = split_tracks(read_segments(segments_dir), rng)
    pool = np.concatenate(known)
    half = QUERIES // 2
    if n + half <= len(pool):  # real segments: queries are held-out segments + catalog segments taken out of it
        rows = rng.permutation(len(pool))
        raw, shifted = pool[rows[half : half + n]], pool[rows[:half]]
        new = np.concatenate(held)[rng.choice(sum(len(t) for t in held), QUERIES - half, replace=False)]
        kind = "segments"
    else:  # derived: span means (excerpts), queries from held-out tracks and fresh spans of catalog tracks
        both = span_means(known, n + half, rng)  # the catalog and, distinct from every catalog span, queries
        raw, shifted, new = both[half:], both[:half], span_means(held, QUERIES - half, rng)
        kind = "span means (derived)"
    catalog, mean = artefact.normalise_catalog(raw)
    save_data(folder, catalog, artefact.normalise(np.vstack([shifted, new]), mean))
    return {"source": f"real {kind}", "tracks": len(known), "held_out_tracks": len(held), "segments": len(pool)}


def save_data(folder: Path, catalog: np.ndarray, queries: np.ndarray) -> None:
    truth = np.vstack([exact_top(catalog, queries[i : i + 100], K) for i in range(0, len(queries), 100)])
    np.save(folder / "catalog.npy", catalog)
    np.save(folder / "queries.npy", queries)
    np.save(folder / "truth.npy", truth)


def exact_top(catalog: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ catalog.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# ---- one library in a child process ----------------------------------------------------------------------------


class Exact:
    mmap = True

    def build(self, catalog, cap):
        self.catalog = np.ascontiguousarray(catalog)
        return len(catalog)

    def search(self, q):
        return exact_top(self.catalog, q[None, :], K)[0]

    def save(self, path):
        np.save(path, self.catalog)

    def load(self, path, mmap):
        self.catalog = np.load(path, mmap_mode="r" if mmap else None)


class FaissHnsw:
    mmap = True

    def build(self, catalog, cap):
        import faiss

        self.index = faiss.IndexHNSWFlat(DIM, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return chunked(lambda part, start: self.index.add(part), catalog, cap)

    def search(self, q):
        import faiss

        faiss.omp_set_num_threads(1)
        self.index.hnsw.efSearch = self.ef_search
        return self.index.search(q[None, :], K)[1][0]

    def save(self, path):
        import faiss

        faiss.write_index(self.index, str(path))

    def load(self, path, mmap):
        import faiss

        self.index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP if mmap else 0)


class FaissIvf(FaissHnsw):
    def build(self, catalog, cap):
        import faiss

        nlist = int(4 * np.sqrt(len(catalog)))  # faiss's guidance: 4·√n to 16·√n lists
        quantizer = faiss.IndexFlatIP(DIM)
        self.index = faiss.IndexIVFFlat(quantizer, DIM, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = catalog[np.random.default_rng(0).choice(len(catalog), min(len(catalog), 64 * nlist), replace=False)]
        self.index.train(sample)
        return chunked(lambda part, start: self.index.add(part), catalog, cap)

    def search(self, q):
        import faiss

        faiss.omp_set_num_threads(1)
        self.index.nprobe = self.nprobe
        return self.index.search(q[None, :], K)[1][0]


class Usearch:
    mmap = True

    def __init__(self, dtype):
        self.dtype = dtype

    def build(self, catalog, cap):
        from usearch.index import Index

        self.index = Index(
            ndim=DIM,
            metric="ip",
            dtype=self.dtype,
            connectivity=HNSW_M,
            expansion_add=HNSW_EF_CONSTRUCTION,
            expansion_search=self.ef_search,
        )
        return chunked(lambda part, start: self.index.add(np.arange(start, start + len(part)), part), catalog, cap)

    def search(self, q):
        return self.index.search(q, K, threads=1).keys

    def save(self, path):
        self.index.save(str(path))

    def load(self, path, mmap):
        from usearch.index import Index

        self.index = Index.restore(str(path), view=mmap)
        self.index.expansion_search = self.ef_search


class Voyager:
    mmap = False  # voyager reads the whole file into memory

    def build(self, catalog, cap):
        from voyager import Index, Space

        self.index = Index(
            Space.InnerProduct,
            num_dimensions=DIM,
            M=HNSW_M,
            ef_construction=HNSW_EF_CONSTRUCTION,
            max_elements=len(catalog),
        )
        return chunked(
            lambda part, start: self.index.add_items(part, np.arange(start, start + len(part))), catalog, cap
        )

    def search(self, q):
        return self.index.query(q, K, num_threads=1, query_ef=self.ef_search)[0]

    def save(self, path):
        self.index.save(str(path))

    def load(self, path, mmap):
        from voyager import Index

        self.index = Index.load(str(path))


def chunked(add, catalog, cap) -> int:
    """Adds in chunks; stops after the chunk that passes ``cap`` seconds. Returns how many vectors were added."""
    started = time.perf_counter()
    for start in range(0, len(catalog), BUILD_CHUNK):
        add(catalog[start : start + BUILD_CHUNK], start)
        if time.perf_counter() - started > cap:
            return start + min(BUILD_CHUNK, len(catalog) - start)
    return len(catalog)


def make(name: str, ef_search: int, nprobe: int):
    """A library's wrapper with the search settings of this run (HNSW expansion, IVF lists probed)."""
    lib = {
        "exact": Exact,
        "faiss-hnsw": FaissHnsw,
        "faiss-ivf": FaissIvf,
        "voyager": Voyager,
        "usearch-f32": lambda: Usearch("f32"),
        "usearch-f16": lambda: Usearch("f16"),
        "usearch-i8": lambda: Usearch("i8"),
    }[name]()
    lib.ef_search, lib.nprobe = ef_search, nprobe
    return lib


def measure_queries(lib, queries, truth, budget_seconds: float = 20.0) -> dict:
    found, times = [], []
    for q in queries:
        started = time.perf_counter()
        found.append(np.asarray(lib.search(q)).astype(np.int64))
        times.append(time.perf_counter() - started)
        if sum(times) > budget_seconds:  # exact search at 10⁶ is slow: enough queries for a rate, not all 1000
            break
    hits = sum(len(set(f[:K].tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return {
        "recall_at_10": hits / (K * len(found)),
        "qps": len(found) / sum(times),
        "p50_ms": 1000 * float(np.median(times)),
        "queries": len(found),
    }


def run_one(name: str, folder: Path, cap: float, ef_search: int, nprobe: int) -> dict:
    catalog = np.load(folder / "catalog.npy")
    queries, truth = np.load(folder / "queries.npy"), np.load(folder / "truth.npy")
    lib = make(name, ef_search, nprobe)
    before = rss_bytes()
    started = time.perf_counter()
    added = lib.build(catalog, cap)
    build = time.perf_counter() - started
    result = {
        "library": name,
        "n": len(catalog),
        "added": added,
        "build_seconds": build,
        "ef_search": ef_search if "hnsw" in name or "usearch" in name or name == "voyager" else None,
        "nprobe": nprobe if name == "faiss-ivf" else None,
        "build_seconds_full": build * len(catalog) / added,
        "build_rss_bytes": rss_bytes() - before,
    }
    if added < len(catalog):
        return result
    result.update(measure_queries(lib, queries, truth))
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = Path(tmp) / "index.bin" if name != "exact" else Path(tmp) / "index.npy"
        lib.save(path)
        result["file_bytes"] = path.stat().st_size
        del lib, catalog
        for mmap in (False, True) if make(name, ef_search, nprobe).mmap else (False,):
            fresh = make(name, ef_search, nprobe)
            before = rss_bytes()
            started = time.perf_counter()
            fresh.load(path, mmap)
            key = "mmap" if mmap else "full"
            result[f"load_{key}_seconds"] = time.perf_counter() - started
            result[f"load_{key}_rss_bytes"] = rss_bytes() - before
            if mmap:  # a mapped index must answer as well: the same queries as in memory (a subset would not
                # compare: the first half are near-duplicates, the easy ones), pages come in lazily
                result["mmap_recall_at_10"] = measure_queries(fresh, queries, truth)["recall_at_10"]
            del fresh
    return result


# ---- parent: data, children, table -----------------------------------------------------------------------------


def table(rows: list[dict]) -> str:
    mib = 1 / (1024 * 1024)
    lines = [
        "| source | n | library | recall@10 | queries/s (1 thread) | p50 ms | build s | build RSS MiB | B/vector | "
        "load s (full) | load s (mmap) | RSS after mmap load MiB | recall@10 after mmap load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["added"] < r["n"]:
            lines.append(
                f"| {r['source']} | {r['n']:,} | {r['library']} | – | – | – | ≈{r['build_seconds_full']:.0f} "
                f"(extrapolated from {r['added']:,} in {r['build_seconds']:.0f} s) | – | – | – | – | – | – |"
            )
            continue
        mapped = "load_mmap_seconds" in r
        cells = [
            r["source"],
            f"{r['n']:,}",
            label(r),
            f"{r['recall_at_10']:.3f}",
            f"{r['qps']:.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['build_seconds']:.1f}",
            f"{r['build_rss_bytes'] * mib:.0f}",
            f"{r['file_bytes'] / r['n']:.0f}",
            f"{r['load_full_seconds']:.3f}",
            f"{r['load_mmap_seconds']:.3f}" if mapped else "– (cannot map)",
            f"{r['load_mmap_rss_bytes'] * mib:.0f}" if mapped else "–",
            f"{r['mmap_recall_at_10']:.3f}" if mapped else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def label(row: dict) -> str:
    settings = (
        f"ef_search {row['ef_search']}"
        if row.get("ef_search")
        else f"nprobe {row['nprobe']}"
        if row.get("nprobe")
        else ""
    )
    return f"{row['library']} ({settings})" if settings else row["library"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--build-cap-seconds", type=float, default=150.0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "taggram-bench-similar")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--source", choices=("synthetic", "real"), default="synthetic")
    parser.add_argument("--segments", type=Path, help="--source real: a `taggram backfill --segment-embeddings` output")
    parser.add_argument(
        "--ef-search",
        type=int,
        default=HNSW_EXPANSION_SEARCH,
        help=f"HNSW search expansion, every library (default: the service's, {HNSW_EXPANSION_SEARCH})",
    )
    parser.add_argument("--nprobe", type=int, default=IVF_NPROBE, help="faiss IVF lists probed per query")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.work, args.build_cap_seconds, args.ef_search, args.nprobe)))
        return 0
    if args.source == "real" and args.segments is None:
        parser.error("--source real needs --segments")
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        # the synthetic folder keeps its name: bench/studies/similar_ef_sweep.py reads
        # /tmp/taggram-bench-similar/1000000
        folder = args.work / (str(n) if args.source == "synthetic" else f"real-{n}")
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "data.json").exists():
            data = make_synthetic(n, folder) if args.source == "synthetic" else make_real(n, folder, args.segments)
            (folder / "data.json").write_text(json.dumps(data))  # last: marks the data complete
        data = json.loads((folder / "data.json").read_text())
        print(json.dumps({"n": n, **data}), file=sys.stderr, flush=True)
        for name in args.libraries.split(","):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    name,
                    "--work",
                    str(folder),
                    "--build-cap-seconds",
                    str(args.build_cap_seconds),
                    "--ef-search",
                    str(args.ef_search),
                    "--nprobe",
                    str(args.nprobe),
                ],
                capture_output=True,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "2"},
            )
            if out.returncode != 0:
                print(f"{name} at {n}: failed: {out.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append({**json.loads(out.stdout.strip().splitlines()[-1]), "source": data["source"]})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
