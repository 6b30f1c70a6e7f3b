"""Searchers: the k nearest rows of a normalised catalog to a normalised query, by inner product (= cosine).

Two implementations behind one interface, chosen at build time (bench/studies/similar.py, docs/similar.md):
``ExactSearcher`` (a float32 matrix product over a memory-mapped .npy: exact, no build, fine up to ~10⁵ tracks)
and ``UsearchSearcher`` (usearch's HNSW graph, memory-mapped with ``view``: the pages a query touches come in from
the page cache, so several replicas on one node share them and a swap costs no copy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

# HNSW build settings: the smallest that keep recall@10 near 0.99 up to 10⁵ vectors (docs/similar.md, "Real
# embeddings").
HNSW_CONNECTIVITY = 16
HNSW_EXPANSION_ADD = 128
# Search expansion: the highest recall at 10⁶ vectors for a query time still nothing next to the analysis of an
# upload; what is left of the gap at 10⁶ is f16 storage, not the expansion (docs/similar.md, "Search expansion at
# 10⁶").
HNSW_EXPANSION_SEARCH = 512
# Above this many vectors `--backend auto` builds HNSW: exact search reads the whole matrix per query, and past this
# size its query time leaves HNSW's far behind; below it the exact index needs no build and is exact (docs/similar.md,
# "Which library").
EXACT_MAX_VECTORS = 50_000


class Searcher(Protocol):
    count: int

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...  # rows, scores (best first)

    def vector(self, row: int) -> np.ndarray: ...


class ExactSearcher:
    extension = ".npy"

    def __init__(self, path: Path) -> None:
        self.vectors = np.load(path, mmap_mode="r")
        self.count = int(self.vectors.shape[0])

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = self.vectors @ query
        k = min(k, self.count)
        top = np.argpartition(-scores, k - 1)[:k] if k < self.count else np.arange(self.count)
        order = np.argsort(-scores[top], kind="stable")
        return top[order].astype(np.int64), scores[top[order]].astype(np.float32)

    def vector(self, row: int) -> np.ndarray:
        return np.asarray(self.vectors[row], dtype=np.float32)

    @staticmethod
    def write(path: Path, vectors: np.ndarray, storage: str) -> None:
        with path.open("wb") as f:  # np.save on a path would append ".npy" to the temporary name
            np.save(f, np.ascontiguousarray(vectors, dtype=np.float32))


class UsearchSearcher:
    extension = ".usearch"

    def __init__(self, path: Path) -> None:
        from usearch.index import Index

        self.index = Index.restore(str(path), view=True)
        if self.index is None:
            raise ValueError(f"{path} is not a usearch index")
        self.index.expansion_search = HNSW_EXPANSION_SEARCH
        self.count = len(self.index)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        matches = self.index.search(query, min(k, self.count), threads=1)  # one request = one query = one thread
        # usearch's "ip" distance is 1 - dot product
        return matches.keys.astype(np.int64), (1.0 - matches.distances).astype(np.float32)

    def vector(self, row: int) -> np.ndarray:
        return np.asarray(self.index.get(row), dtype=np.float32)

    @staticmethod
    def write(path: Path, vectors: np.ndarray, storage: str) -> None:
        from usearch.index import Index

        index = Index(
            ndim=vectors.shape[1],
            metric="ip",
            dtype=storage,
            connectivity=HNSW_CONNECTIVITY,
            expansion_add=HNSW_EXPANSION_ADD,
            expansion_search=HNSW_EXPANSION_SEARCH,
        )
        index.add(np.arange(len(vectors), dtype=np.uint64), np.ascontiguousarray(vectors, dtype=np.float32))
        index.save(str(path))


SEARCHERS = {"numpy": ExactSearcher, "usearch": UsearchSearcher}


def open_searcher(library: str, path: Path) -> Searcher:
    return SEARCHERS[library](path)
