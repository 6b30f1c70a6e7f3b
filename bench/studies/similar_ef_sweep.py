"""usearch HNSW search expansion against recall@10 and query time, on bench/studies/similar.py's synthetic catalog.

Builds one f16 index with the service's settings (service/artefacts/similar/search.py) over ``FOLDER/catalog.npy`` and
measures, for each ``expansion_search``, recall@10 against ``FOLDER/truth.npy`` and single-thread query time, in
memory and memory-mapped (``Index.restore(view=True)``, as the service serves it).

Usage: .venv/bin/python -m bench.studies.similar_ef_sweep [FOLDER] [--ef 64,128,256,512] [--connectivity 16]
FOLDER defaults to the 10⁶ catalog bench/studies/similar.py leaves in /tmp/taggram-bench-similar/1000000 (run
``python bench/studies/similar.py --sizes 1000000 --libraries exact`` first to make it).

A decision study (the HNSW search expansion the service ships): its conclusion is docs/similar.md, "Which library".
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from usearch.index import Index

from service.artefacts.similar.search import HNSW_CONNECTIVITY, HNSW_EXPANSION_ADD

DEFAULT_FOLDER = Path(tempfile.gettempdir()) / "taggram-bench-similar" / "1000000"
ADD_CHUNK = 50_000  # vectors added per call: bounds the build's temporary copies
K = 10


def build(catalog: np.ndarray, connectivity: int) -> Index:
    index = Index(
        ndim=catalog.shape[1], metric="ip", dtype="f16", connectivity=connectivity, expansion_add=HNSW_EXPANSION_ADD
    )
    for start in range(0, len(catalog), ADD_CHUNK):
        stop = min(start + ADD_CHUNK, len(catalog))
        index.add(np.arange(start, stop), np.asarray(catalog[start:stop]), threads=2)
    return index


def recall_and_time(index: Index, queries: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    hits, started = 0, time.perf_counter()
    for query, true in zip(queries, truth):
        hits += len(set(index.search(query, K, threads=1).keys.tolist()) & set(true[:K].tolist()))
    return hits / (K * len(queries)), (time.perf_counter() - started) / len(queries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, nargs="?", default=DEFAULT_FOLDER)
    parser.add_argument("--ef", default="64,128,256,512")
    parser.add_argument(
        "--connectivity",
        type=int,
        default=HNSW_CONNECTIVITY,
        help=f"HNSW M, links per node (default: the service's, {HNSW_CONNECTIVITY})",
    )
    args = parser.parse_args(argv)
    catalog = np.load(args.folder / "catalog.npy", mmap_mode="r")
    queries, truth = np.load(args.folder / "queries.npy"), np.load(args.folder / "truth.npy")
    started = time.perf_counter()
    index = build(catalog, args.connectivity)
    print(f"{len(catalog)} vectors, f16, M {args.connectivity}, build {time.perf_counter() - started:.0f} s")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.usearch"
        index.save(str(path))
        mapped = Index.restore(str(path), view=True)
        print("| ef_search | layout | recall@10 | ms/query | queries/s |\n|---:|---|---:|---:|---:|")
        for ef in map(int, args.ef.split(",")):
            for layout, searched in (("in memory", index), ("memory-mapped", mapped)):
                searched.expansion_search = ef
                recall, seconds = recall_and_time(searched, queries, truth)
                print(f"| {ef} | {layout} | {recall:.3f} | {1000 * seconds:.2f} | {1 / seconds:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
