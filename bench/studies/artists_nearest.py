"""Nearest artists at index build time (service/artefacts/similar/artists.py ``nearest_others``): wall time and peak
memory for random unit vectors of the embedding's size, per catalog size (docs/catalog.md, "Artists").

    env PYTHONPATH=$PWD .venv/bin/python -m bench.studies.artists_nearest --artists 10000 100000

Each size runs in a fresh process, so the peak RSS (VmHWM) is that size's alone; random vectors, because the cost
does not depend on what the vectors hold (exact all-pairs in chunks).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np

DIM = 200  # msd-musicnn's embedding
NEIGHBOURS = 10


def measure(artists: int) -> str:
    from service.artefacts.similar.artists import SIMILARITY_CHUNK, nearest_others

    vectors = np.random.default_rng(0).standard_normal((artists, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    before = peak_mib()
    started = time.perf_counter()
    nearest_others(vectors, NEIGHBOURS)
    seconds = time.perf_counter() - started
    return f"| {artists} | {SIMILARITY_CHUNK} | {seconds:.1f} | {peak_mib() - before:.0f} |"


def peak_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artists", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process's single size
    args = parser.parse_args()
    if args.one:
        print(measure(args.one))
        return
    print("| artists | chunk | seconds | peak MiB above the vectors |\n|---:|---:|---:|---:|")
    for artists in args.artists:
        run = [sys.executable, "-m", "bench.studies.artists_nearest", "--one", str(artists)]
        print(subprocess.run(run, check=True, capture_output=True, text=True).stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
