"""Memory of the models on CPU: ONNX Runtime arenas per session vs one arena shared by every session.

Each variant runs in its own child process (RSS is per process), alternating ``--rounds`` times, so both see the
same machine load. A child loads every model in ``models/`` with the service's defaults
(``service.engine.run.batch_policy``, ``--workers`` inference threads), warms each up the way the service does
(``Batcher.warm_up``: one batch of ``--batch`` patches on every worker thread at once), then runs ``--load-batches``
batches of real-valued noise per model on the worker threads. Reported: RSS after loading, after warm-up (= ready) and
at the end of the load (any growth after ready is an arena the warm-up did not reach), peak RSS, and ms per patch under
the load.

A decision study (one ONNX Runtime arena shared by every session): its section is docs/benchmarks.md, "Memory: four
models, per-session vs shared ONNX Runtime arena".
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import numpy as np

from bench import common

SECTION = "memory"
PATCH_SAMPLES = 48_128
VARIANTS = ("per-session arenas", "shared arena")


def child(shared: bool, workers: int, batch: int, load_batches: int) -> dict:
    import psutil

    from service.config import Settings
    from service.engine.run import batch_policy, load_runner

    process = psutil.Process()
    peak = [process.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peak[0] = max(peak[0], process.memory_info().rss)

    threading.Thread(target=sample, daemon=True).start()

    def mib() -> float:
        return process.memory_info().rss / 2**20

    threads = batch_policy(Settings(inference_workers=workers), on_cuda=False).intra_op_threads
    runners = [
        load_runner(path, "cpu", threads, shared_arena=shared) for path in sorted(common.MODELS_DIR.glob("*.onnx"))
    ]
    loaded = mib()

    def on_every_worker(runner, patches: np.ndarray) -> None:
        threads = [threading.Thread(target=runner.run, args=(patches,)) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    for runner in runners:
        on_every_worker(runner, np.zeros((batch, PATCH_SAMPLES), np.float32))
    ready = mib()
    rng = np.random.default_rng(0)
    started, patches = time.perf_counter(), 0
    for _ in range(load_batches):
        for runner in runners:
            on_every_worker(runner, (0.3 * rng.standard_normal((batch, PATCH_SAMPLES))).astype(np.float32))
            patches += batch * workers
    seconds = time.perf_counter() - started
    stop.set()
    return {
        "models": len(runners),
        "loaded": loaded,
        "ready": ready,
        "after_load": mib(),
        "peak": max(peak[0], process.memory_info().rss) / 2**20,
        "ms_per_patch": 1000 * seconds / patches,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=common.service_default("max_batch_patches"))
    parser.add_argument("--load-batches", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child == "shared arena", args.workers, args.batch, args.load_batches)))
        return
    results: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.studies.memory",
                    "--child",
                    variant,
                    "--workers",
                    str(args.workers),
                    "--batch",
                    str(args.batch),
                    "--load-batches",
                    str(args.load_batches),
                ],
                cwd=common.REPO_ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            results[variant].append(json.loads(out.stdout.splitlines()[-1]))
    rows = []
    for variant, runs in results.items():
        med = {key: float(np.median([r[key] for r in runs])) for key in runs[0]}
        # Speed as paired ratios: each round ran both variants back to back, so a round's ratio sees one machine load.
        ratios = [base["ms_per_patch"] / run["ms_per_patch"] for base, run in zip(results[VARIANTS[0]], runs)]
        rows.append(
            [
                variant,
                f"{med['loaded']:.0f}",
                f"{med['ready']:.0f}",
                f"{med['after_load']:.0f}",
                f"{med['peak']:.0f}",
                f"{med['ms_per_patch']:.1f}",
                f"{np.median(ratios):.2f}×",
                ", ".join(f"{ratio:.2f}" for ratio in ratios),
            ]
        )
    table = common.markdown_table(
        [
            "arenas",
            "RSS loaded MiB",
            "RSS ready MiB",
            "RSS after load MiB",
            "peak MiB",
            "ms/patch",
            "speed vs per-session (median of rounds)",
            "per round",
        ],
        rows,
    )
    body = "\n".join(
        [
            "## Memory: four models, per-session vs shared ONNX Runtime arena",
            "",
            *common.environment_lines(["bench.studies.memory", *(argv if argv is not None else sys.argv[1:])]),
            f"- {results[VARIANTS[0]][0]['models']} models, {args.workers} inference threads each, warm-up and load at "
            f"batch {args.batch}; one child process per variant and round, variants alternated, medians of "
            f"{args.rounds} rounds; the speed is the median of each round's ratio",
            "- the 2 cores were shared with other agents' work: ms/patch is comparable only within this table",
            "",
            table,
            "",
        ]
    )
    print(body)
    if not args.no_write:
        common.update_report(SECTION, body)


if __name__ == "__main__":
    main()
