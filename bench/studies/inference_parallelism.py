"""How to spend a machine's cores on CPU inference: one multi-threaded run per batch, or one single-threaded run
per core side by side (what ``service.engine.run.batch_policy`` picks), alone and while a thread decodes audio.

Three measurements in one run, on the model file the service loads:

1. **Cost per patch by batch size**, for 1 thread and for every usable CPU: does batching pay on CPU?
2. **Throughput on the same patches** (cut from real music by the service's own decoder and patcher), batches of
   ``--batch``: ONNX Runtime's default (one run on all cores per batch; its threads spin while they wait), the same
   without spinning, and ``workers`` single-threaded runs at once. Each configuration runs alone and again while a
   thread decodes the same tracks with ``service.decode.iter_decoded`` (as the service does while it infers).
   Configurations are interleaved round by round; each figure is the best of ``--rounds``.
3. **Peak memory by patches in flight**: a fresh process per configuration runs its batches and reports its peak
   RSS, so ONNX Runtime's arena can be read off per patch.

A decision study (the CPU batch policy of service.engine.run): its section is docs/benchmarks.md, "Inference
parallelism".
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench import common
from corpus.music import music_files
from service.artefacts.manifest import load_manifest
from service.decode import decode, iter_decoded
from service.engine.patch import PatchGeometry, patch_track
from service.engine.run import SERVED_OUTPUTS, usable_cpus

SECTION = "inference_parallelism"
MAX_SECONDS = 3600.0
BATCH_SIZES = (1, 2, 4, 8, 16)
MEMORY_BATCHES = (4, 8, 16)  # patches per run in part 3


def session(model_path: str, threads: int, spinning: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_mem_pattern = False  # as service.engine.run
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])


def run_batches(sess: ort.InferenceSession, batches: list[np.ndarray], workers: int) -> None:
    if workers == 1:
        for batch in batches:
            sess.run(list(SERVED_OUTPUTS), {"waveform": batch})
        return
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda batch: sess.run(list(SERVED_OUTPUTS), {"waveform": batch}), batches))


def best_seconds(action: Callable[[], object], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


def per_patch_rows(model_path: str, cpus: int, patch_samples: int, reps: int) -> list[list[object]]:
    rows = []
    batch = (0.3 * np.random.default_rng(0).standard_normal((max(BATCH_SIZES), patch_samples))).astype(np.float32)
    for threads in sorted({1, cpus}):
        sess = session(model_path, threads)
        for size in BATCH_SIZES:

            def run(sess=sess, size=size):
                return sess.run(list(SERVED_OUTPUTS), {"waveform": batch[:size]})

            run()
            seconds = best_seconds(run, reps)
            rows.append([threads, size, f"{seconds * 1000:.1f}", f"{seconds * 1000 / size:.1f}"])
    return rows


def decode_tracks(datas: list[bytes]) -> None:
    for data in datas:
        for _ in iter_decoded(io.BytesIO(data), max_seconds=MAX_SECONDS):
            pass


def timed_with_decoding(action: Callable[[], None], datas: list[bytes]) -> float:
    decoder = threading.Thread(target=decode_tracks, args=(datas,))
    started = time.perf_counter()
    decoder.start()
    action()
    decoder.join()
    return time.perf_counter() - started


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM). Not getrusage's ru_maxrss: a child starts with its parent's at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def memory_child(model_path: str, threads: int, workers: int, batch_size: int, patch_samples: int) -> None:
    """Run in a fresh process: peak RSS after ``workers`` concurrent runs of ``batch_size`` patches, in MiB."""
    sess = session(model_path, threads)
    idle = peak_rss_mib()
    batch = np.zeros((batch_size, patch_samples), np.float32)
    for _ in range(3):
        run_batches(sess, [batch] * workers, workers)
    print(json.dumps({"idle_mib": idle, "peak_mib": peak_rss_mib()}))


def memory_rows(model_path: str, cpus: int, patch_samples: int) -> list[list[object]]:
    rows = []
    configs = [(threads, workers, size) for threads, workers in ((cpus, 1), (1, cpus)) for size in MEMORY_BATCHES]
    for threads, workers, batch_size in configs:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.studies.inference_parallelism",
                "--memory-child",
                model_path,
                str(threads),
                str(workers),
                str(batch_size),
                str(patch_samples),
            ],
            check=True,
            capture_output=True,
            text=True,
            cwd=common.REPO_ROOT,
        )
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        in_flight = workers * batch_size
        grown = figures["peak_mib"] - figures["idle_mib"]
        rows.append(
            [
                f"{workers} × {threads} thread(s)",
                batch_size,
                in_flight,
                f"{figures['idle_mib']:.0f}",
                f"{figures['peak_mib']:.0f}",
                f"{grown / in_flight:.0f}",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--memory-child":
        model_path, threads, workers, batch_size, patch_samples = argv[1:6]
        memory_child(model_path, int(threads), int(workers), int(batch_size), int(patch_samples))
        return
    parser = argparse.ArgumentParser(
        prog="python -m bench.studies.inference_parallelism", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--formats", default="ogg", help="comma-separated: ogg (originals), mp3, m4a (transcodes)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved passes; the best one counts")
    parser.add_argument(
        "--batch",
        type=int,
        default=common.service_default("max_batch_patches"),
        help="patches per batch in part 2 (default: the service's TAGGRAM_MAX_BATCH_PATCHES)",
    )
    parser.add_argument("--reps", type=int, default=5, help="repetitions per batch size in part 1")
    common.add_service_arguments(parser)
    args = parser.parse_args(argv)

    manifest = load_manifest(common.MODELS_DIR / f"{args.model}.json")
    model_path = str(common.MODELS_DIR / manifest.onnx.file)
    cpus = usable_cpus()
    geometry = PatchGeometry(manifest.sample_rate, manifest.patch_samples, manifest.patch_frames, manifest.frame_hop)

    print("part 1: cost per patch by batch size", file=sys.stderr)
    per_patch = per_patch_rows(model_path, cpus, manifest.patch_samples, args.reps)

    print("part 2: throughput by configuration", file=sys.stderr)
    files = music_files(tuple(args.formats.split(",")))
    datas = [path.read_bytes() for path in files]
    patches = np.concatenate(
        [
            patch_track(decode(io.BytesIO(data), max_seconds=MAX_SECONDS).samples, geometry, geometry.hop_frames(None))
            for data in datas
        ]
    )
    batches = [np.ascontiguousarray(patches[i : i + args.batch]) for i in range(0, len(patches), args.batch)]
    configs = {
        f"one run per batch on {cpus} threads (ONNX Runtime's default)": (session(model_path, cpus), 1),
        f"one run per batch on {cpus} threads, no spinning": (session(model_path, cpus, spinning=False), 1),
        f"{cpus} single-threaded runs at once (the service's default)": (session(model_path, 1), cpus),
    }
    decode_alone = best_seconds(lambda: decode_tracks(datas), 1)
    alone = dict.fromkeys(configs, float("inf"))
    loaded = dict.fromkeys(configs, float("inf"))
    for sess, workers in configs.values():
        run_batches(sess, batches[:workers], workers)  # warm-up
    for round_index in range(args.rounds):
        names = list(configs)
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            sess, workers = configs[name]
            alone[name] = min(
                alone[name], best_seconds(lambda sess=sess, workers=workers: run_batches(sess, batches, workers), 1)
            )
            loaded[name] = min(
                loaded[name],
                timed_with_decoding(lambda sess=sess, workers=workers: run_batches(sess, batches, workers), datas),
            )
        print(f"round {round_index + 1} done", file=sys.stderr)
    default = next(iter(configs))
    throughput = [
        [
            name,
            f"{alone[name]:.2f}",
            f"{len(patches) / alone[name]:.1f}",
            f"{alone[default] / alone[name]:.2f}",
            f"{loaded[name]:.2f}",
            f"{len(patches) / loaded[name]:.1f}",
            f"{alone[default] / loaded[name]:.2f}",
            f"+{loaded[name] - alone[name]:.2f}",
        ]
        for name in configs
    ]

    print("part 3: peak memory", file=sys.stderr)
    memory = memory_rows(model_path, cpus, manifest.patch_samples)

    audio = len(patches) * manifest.patch_samples / manifest.sample_rate
    text = "\n".join(
        [
            "## Inference parallelism (`bench/studies/inference_parallelism.py`)",
            "",
            *common.environment_lines(["bench.studies.inference_parallelism", *argv]),
            f"- model {args.model}; {cpus} usable CPUs; part 2 input: {len(files)} tracks ({args.formats}), "
            f"{len(patches)} patches (≈{audio:.0f} s of audio) in batches of {args.batch}; best of {args.rounds} "
            "interleaved rounds",
            "",
            "**1. Cost per patch by batch size** (best of "
            f"{args.reps}): batching gains nothing per patch on CPU, so splitting the queue between workers costs "
            "nothing.",
            "",
            common.markdown_table(["threads", "batch", "ms per batch", "ms per patch"], per_patch),
            "",
            f"**2. Throughput on the same patches**, alone and while a thread decodes the same tracks (decoding alone: "
            f'{decode_alone:.2f} s). "÷ default" divides by ONNX Runtime\'s default running alone.',
            "",
            common.markdown_table(
                [
                    "configuration",
                    "alone s",
                    "patches/s",
                    "÷ default",
                    "with decoding s",
                    "patches/s",
                    "÷ default",
                    "decoding added s",
                ],
                throughput,
            ),
            "",
            "**3. Peak memory by patches in flight** (fresh process each; RSS after three rounds of runs):",
            "",
            common.markdown_table(
                ["runs at once", "batch", "patches in flight", "idle MiB", "peak MiB", "MiB per patch in flight"],
                memory,
            ),
        ]
    )
    print(text)
    if not args.no_write:
        common.update_report(SECTION, text)


if __name__ == "__main__":
    main()
