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
are given for it. Run::

    PYTHONPATH=$PWD python bench/similar.py --sizes 100000,1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 200  # musicnn's penultimate layer
CLUSTERS = 2000  # "genres × production styles": enough that neighbours are not one big blob
CLUSTER_SPREAD = 0.35  # within-cluster std relative to the centres' std (real embeddings: tight but overlapping)
QUERIES = 1000
NEAR_DUPLICATE_NOISE = 0.05  # std of the noise added to catalog vectors for the "re-encoded upload" half
K = 10
# One HNSW setting for every library so the comparison is about the implementation, not the knobs.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128
HNSW_EF_SEARCH = 64
IVF_NPROBE = 16
BUILD_CHUNK = 50_000
LIBRARIES = ("exact", "faiss-hnsw", "faiss-ivf", "usearch-f32", "usearch-f16", "voyager")


def normalise(vectors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    centred = vectors - mean
    return (centred / np.linalg.norm(centred, axis=1, keepdims=True)).astype(np.float32)


def draw(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    labels = rng.integers(0, len(centres), n)
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, 100_000):  # bounded temporaries
        stop = min(n, start + 100_000)
        out[start:stop] = centres[labels[start:stop]] + CLUSTER_SPREAD * rng.standard_normal((stop - start, DIM), np.float32)
    return out


def make_data(n: int, folder: Path, seed: int = 13) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    catalog = draw(n, rng, centres)
    mean = catalog.mean(axis=0)
    catalog = normalise(catalog, mean)
    near = catalog[rng.integers(0, n, QUERIES // 2)] + NEAR_DUPLICATE_NOISE * rng.standard_normal((QUERIES // 2, DIM), np.float32)
    fresh = draw(QUERIES - QUERIES // 2, rng, centres)
    queries = np.vstack([near / np.linalg.norm(near, axis=1, keepdims=True), normalise(fresh, mean)]).astype(np.float32)
    truth = np.vstack([exact_top(catalog, queries[i:i + 100], K) for i in range(0, QUERIES, 100)])
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
        self.index.hnsw.efSearch = HNSW_EF_SEARCH
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
        self.index.nprobe = IVF_NPROBE
        return self.index.search(q[None, :], K)[1][0]


class Usearch:
    mmap = True

    def __init__(self, dtype):
        self.dtype = dtype

    def build(self, catalog, cap):
        from usearch.index import Index

        self.index = Index(ndim=DIM, metric="ip", dtype=self.dtype, connectivity=HNSW_M,
                           expansion_add=HNSW_EF_CONSTRUCTION, expansion_search=HNSW_EF_SEARCH)
        return chunked(lambda part, start: self.index.add(np.arange(start, start + len(part)), part), catalog, cap)

    def search(self, q):
        return self.index.search(q, K, threads=1).keys

    def save(self, path):
        self.index.save(str(path))

    def load(self, path, mmap):
        from usearch.index import Index

        self.index = Index.restore(str(path), view=mmap)
        self.index.expansion_search = HNSW_EF_SEARCH


class Voyager:
    mmap = False  # voyager reads the whole file into memory

    def build(self, catalog, cap):
        from voyager import Index, Space

        self.index = Index(Space.InnerProduct, num_dimensions=DIM, M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION,
                           max_elements=len(catalog))
        return chunked(lambda part, start: self.index.add_items(part, np.arange(start, start + len(part))), catalog, cap)

    def search(self, q):
        return self.index.query(q, K, num_threads=1, query_ef=HNSW_EF_SEARCH)[0]

    def save(self, path):
        self.index.save(str(path))

    def load(self, path, mmap):
        from voyager import Index

        self.index = Index.load(str(path))


def chunked(add, catalog, cap) -> int:
    """Adds in chunks; stops after the chunk that passes ``cap`` seconds. Returns how many vectors were added."""
    started = time.perf_counter()
    for start in range(0, len(catalog), BUILD_CHUNK):
        add(catalog[start:start + BUILD_CHUNK], start)
        if time.perf_counter() - started > cap:
            return start + min(BUILD_CHUNK, len(catalog) - start)
    return len(catalog)


def make(name: str):
    return {"exact": Exact, "faiss-hnsw": FaissHnsw, "faiss-ivf": FaissIvf, "voyager": Voyager,
            "usearch-f32": lambda: Usearch("f32"), "usearch-f16": lambda: Usearch("f16")}[name]()


def measure_queries(lib, queries, truth, budget_seconds: float = 20.0) -> dict:
    found, times = [], []
    for q in queries:
        started = time.perf_counter()
        found.append(np.asarray(lib.search(q)).astype(np.int64))
        times.append(time.perf_counter() - started)
        if sum(times) > budget_seconds:  # exact search at 10⁶ is slow: enough queries for a rate, not all 1000
            break
    hits = sum(len(set(f[:K].tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return {"recall_at_10": hits / (K * len(found)), "qps": len(found) / sum(times),
            "p50_ms": 1000 * float(np.median(times)), "queries": len(found)}


def run_one(name: str, folder: Path, cap: float) -> dict:
    catalog = np.load(folder / "catalog.npy")
    queries, truth = np.load(folder / "queries.npy"), np.load(folder / "truth.npy")
    lib = make(name)
    before = rss_bytes()
    started = time.perf_counter()
    added = lib.build(catalog, cap)
    build = time.perf_counter() - started
    result = {"library": name, "n": len(catalog), "added": added, "build_seconds": build,
              "build_seconds_full": build * len(catalog) / added, "build_rss_bytes": rss_bytes() - before}
    if added < len(catalog):
        return result
    result.update(measure_queries(lib, queries, truth))
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = Path(tmp) / "index.bin" if name != "exact" else Path(tmp) / "index.npy"
        lib.save(path)
        result["file_bytes"] = path.stat().st_size
        del lib, catalog
        for mmap in ((False, True) if make(name).mmap else (False,)):
            fresh = make(name)
            before = rss_bytes()
            started = time.perf_counter()
            fresh.load(path, mmap)
            key = "mmap" if mmap else "full"
            result[f"load_{key}_seconds"] = time.perf_counter() - started
            result[f"load_{key}_rss_bytes"] = rss_bytes() - before
            if mmap:  # a mapped index must still answer: check recall on a few queries, pages come in lazily
                result["mmap_recall_at_10"] = measure_queries(fresh, queries[:100], truth[:100], 10.0)["recall_at_10"]
            del fresh
    return result


# ---- parent: data, children, table -----------------------------------------------------------------------------


def table(rows: list[dict]) -> str:
    mib = 1 / (1024 * 1024)
    lines = ["| n | library | recall@10 | queries/s (1 thread) | p50 ms | build s | build RSS MiB | file MiB | load s (full) | load s (mmap) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["added"] < r["n"]:
            lines.append(f"| {r['n']:,} | {r['library']} | – | – | – | ≈{r['build_seconds_full']:.0f} (extrapolated from "
                         f"{r['added']:,} in {r['build_seconds']:.0f} s) | – | – | – | – |")
            continue
        mmap = f"{r['load_mmap_seconds']:.3f}" if "load_mmap_seconds" in r else "n/a"
        lines.append(f"| {r['n']:,} | {r['library']} | {r['recall_at_10']:.3f} | {r['qps']:.0f} | {r['p50_ms']:.2f} | "
                     f"{r['build_seconds']:.1f} | {r['build_rss_bytes'] * mib:.0f} | {r['file_bytes'] * mib:.0f} | "
                     f"{r['load_full_seconds']:.3f} | {mmap} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--build-cap-seconds", type=float, default=150.0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "taggram-bench-similar")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.work, args.build_cap_seconds)))
        return 0
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        folder = args.work / str(n)
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "truth.npy").exists():
            make_data(n, folder)
        for name in args.libraries.split(","):
            out = subprocess.run([sys.executable, __file__, "--one", name, "--work", str(folder),
                                  "--build-cap-seconds", str(args.build_cap_seconds)],
                                 capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
            if out.returncode != 0:
                print(f"{name} at {n}: failed: {out.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
