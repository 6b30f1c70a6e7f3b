"""Inference speed of two builds of the same models: e.g. the torch-traced graphs against the hand-built ones.

    PYTHONPATH=$PWD flock /tmp/taggram-bench.lock .venv/bin/python -m bench.export_graph_speed \
        --old /work/main/models --new models

Raw ONNX Runtime (no service): for each model, one session per build with the service's CPU options (one
intra-op thread per run as the service gives each worker on CPU, all graph optimisations, no memory-pattern
planner), the same patches (every full patch of the committed reference clips, tests/fixtures/reference, cycled
to ``--patches``) in batches of ``--batch``. The builds alternate within each round, the first build of a round
alternating too; each figure is the median of ``--rounds`` rounds. One run, so ratios are comparable even on a
shared machine. The section ``export-graph-speed`` goes into docs/model_export.md (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench import common
from model_export.export import FIXTURES_DIR
from model_export.parity import load_clip, patch_windows
from model_export.tagger import MODELS

SECTION = "export-graph-speed"
REPORT = common.REPO_ROOT / "docs" / "model_export.md"
SERVICE_BATCH = 4  # TAGGRAM_MAX_BATCH_PATCHES default


def fixture_patches(count: int) -> np.ndarray:
    """[count, 48128]: every full patch of the reference clips (music, synthetic, silence), cycled."""
    pool = []
    for clip in sorted(FIXTURES_DIR.glob("*.npz")):
        audio, reference = load_clip(clip)
        pool.append(patch_windows(audio, len(reference["MSD_musicnn.tags"])))
    patches = np.concatenate(pool)
    return patches[np.arange(count) % len(patches)]


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_mem_pattern = False  # as service.engine.run.load_runner
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_all(sess: ort.InferenceSession, batches: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """(seconds for every batch, the tags of every patch)."""
    start = time.perf_counter()
    tags = [sess.run(["tags"], {"waveform": batch})[0] for batch in batches]
    return time.perf_counter() - start, np.concatenate(tags)


def bench_model(name: str, builds: dict[str, Path], batches: list[np.ndarray], rounds: int, threads: int) -> dict:
    sessions = {label: session(folder / f"{name}.onnx", threads) for label, folder in builds.items()}
    times: dict[str, list[float]] = {label: [] for label in builds}
    tags: dict[str, np.ndarray] = {}
    for label, sess in sessions.items():  # warm-up: first runs allocate and pick kernels
        _, tags[label] = run_all(sess, batches)
    labels = list(builds)
    for r in range(rounds):
        for label in labels if r % 2 == 0 else labels[::-1]:
            seconds, _ = run_all(sessions[label], batches)
            times[label].append(seconds)
    patches = sum(len(b) for b in batches)
    old, new = labels
    ms = {label: 1000 * statistics.median(t) / patches for label, t in times.items()}
    return {"ms": ms, "ratio": ms[old] / ms[new], "tags_diff": float(np.abs(tags[old] - tags[new]).max())}


def report(results: dict[str, dict], builds: dict[str, Path], args: argparse.Namespace, command: list[str]) -> str:
    old, new = builds
    rows = [
        [name, f"{r['ms'][old]:.1f}", f"{r['ms'][new]:.1f}", f"**{r['ratio']:.2f}×**", f"{r['tags_diff']:.1e}"]
        for name, r in results.items()
    ]
    return "\n".join([
        "### Inference speed of the graph builds (`bench/export_graph_speed.py`)", "", *command,
        f"- builds: old = `{builds[old]}`, new = `{builds[new]}`", "",
        f"ms per patch (median of {args.rounds} interleaved rounds of {args.patches} patches in batches of "
        f"{args.batch}, {args.threads} intra-op thread(s), raw ONNX Runtime); speed-up = old / new (> 1: new is "
        "faster); the last column is the largest |tags old − tags new| over those patches.", "",
        common.markdown_table(["model", "old ms/patch", "new ms/patch", "speed-up", "max tags diff"], rows),
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="folder of the reference build's <model>.onnx")
    parser.add_argument("--new", type=Path, required=True, help="folder of the build under test")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: all four)")
    parser.add_argument("--patches", type=int, default=16)
    parser.add_argument("--batch", type=int, default=SERVICE_BATCH)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; do not update docs/model_export.md")
    args = parser.parse_args(argv)
    command = common.environment_lines(["bench.export_graph_speed", *(argv if argv is not None else sys.argv[1:])])
    patches = fixture_patches(args.patches)
    batches = [patches[i : i + args.batch] for i in range(0, len(patches), args.batch)]
    builds = {"old": args.old, "new": args.new}
    results = {}
    for name in args.models.split(","):
        results[name] = bench_model(name, builds, batches, args.rounds, args.threads)
        print(name, results[name], flush=True)
    body = report(results, builds, args, command)
    print(body)
    if not args.no_write:
        common.update_report(SECTION, body, path=REPORT)


if __name__ == "__main__":
    main()
