"""`taggram backfill` on real music: throughput vs raw ONNX Runtime on the same patches, and peak memory.

    .venv/bin/python -m bench.backfill            # 9 real tracks (ogg, mp3, m4a) + one 60-minute track
    .venv/bin/python -m bench.backfill --quick    # 3 tracks + a 20-minute one, to try things out

Catalog: the lincity-ng soundtrack (corpus/music.py: 3 .ogg files and their mp3/m4a transcodes) plus one long track
made by looping those tracks to 60 minutes and encoding them with PyAV (Opus in Ogg, 128 kb/s), cached in
``.cache/bench-music/``. Ogg/Opus because a 60-minute WAV or FLAC would exceed the service's 100 MiB upload limit.

1. **Raw ONNX Runtime**: in this process, every catalog track is decoded and cut into patches exactly as the backfill
   does (``iter_decoded`` + ``service.engine.patch.StreamingPatcher``, batches of ``--batch-patches`` patches of one
   track), and only ``Runner.run`` is timed, run as the backfill's batch policy runs it (``--inference-workers`` batches
   at once, each on ``--intra-op-threads`` threads): audio hours per hour of pure inference, the ceiling for the
   backfill. A third pass runs one batch at a time on ONNX Runtime's default threads (one per core), the other way to
   use the cores.
2. **Backfill**: ``python -m service backfill CATALOG --out TMP --max-seconds 4000`` as a subprocess, timed from
   start to exit (model loading, worker start-up and Parquet writing included). Its memory is sampled every 0.1 s
   with psutil: RSS and PSS (proportional set size: shared library pages divided among the processes that map
   them) of the parent and each worker, and of the whole process tree. The kernel's own high-water mark of each
   process's RSS (``VmHWM`` in /proc/PID/status, which no sampling interval can miss) is reported as a cross-check;
   not ``getrusage(RUSAGE_CHILDREN).ru_maxrss``, which also counts the pages a child shares with this process
   between fork and exec, i.e. this bench's own size.

The two passes alternate (raw, backfill, raw) and the raw figure is the mean of its two passes, since the cores
are shared with other work. CPU seconds (user + system) per audio hour are reported too: less sensitive to that
sharing than wall-clock time. The report section goes into docs/backfill.md (``--no-write``: print only).

Writes docs/backfill.md, "Backfill throughput and memory".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from bench.common import REPO_ROOT, environment_lines, markdown_table, update_report
from corpus.music import CACHE_DIR, ensure_music, music_files

REPORT = REPO_ROOT / "docs" / "backfill.md"
MODEL = "msd-musicnn"
LONG_BIT_RATE = 128_000
RSS_TARGET_MB = 500
SPEED_TARGET = 0.85


# ---- catalog ------------------------------------------------------------------------------------------------------


def long_track(minutes: int) -> Path:
    """The soundtrack looped to ``minutes`` and encoded once as Ogg/Opus (PyAV's FFmpeg has libopus, no libvorbis)."""
    target = CACHE_DIR / f"long-{minutes}min.opus"
    if target.exists():
        return target
    sources = ensure_music()
    partial = target.with_suffix(".partial")
    total = minutes * 60 * 48_000  # samples at the encoder's rate
    written = 0
    resampler = av.AudioResampler(format="flt", layout="stereo", rate=48_000)
    with av.open(str(partial), "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=48_000, layout="stereo")
        stream.bit_rate = LONG_BIT_RATE
        while written < total:
            for source in sources:
                with av.open(str(source)) as inp:
                    for frame in inp.decode(audio=0):
                        frame.pts = None
                        for resampled in resampler.resample(frame):
                            keep = min(resampled.samples, total - written)
                            if keep <= 0:
                                break
                            if keep < resampled.samples:
                                data = resampled.to_ndarray()[:, : keep * 2]
                                resampled = av.AudioFrame.from_ndarray(data, format="flt", layout="stereo")
                                resampled.sample_rate = 48_000
                            resampled.pts = written
                            written += keep
                            for packet in stream.encode(resampled):
                                out.mux(packet)
                if written >= total:
                    break
        for packet in stream.encode(None):
            out.mux(packet)
    partial.rename(target)
    return target


def build_catalog(root: Path, quick: bool) -> list[Path]:
    files = [*music_files(("ogg",) if quick else ("ogg", "mp3", "m4a")), long_track(20 if quick else 60)]
    root.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(files):
        (root / f"{i:02d}-{source.name}").symlink_to(source)
    return sorted(root.iterdir())


# ---- raw ONNX Runtime ---------------------------------------------------------------------------------------------


@dataclass
class RawPass:
    audio_seconds: float = 0.0
    patches: int = 0
    run_seconds: float = 0.0
    run_cpu_seconds: float = 0.0

    @property
    def speed(self) -> float:
        return self.audio_seconds / self.run_seconds


def track_batches(files: list[Path], batch: int, max_seconds: float) -> tuple[list[np.ndarray], float]:
    """Every track decoded and cut into batches exactly as the backfill does (one track's patches per batch, the
    last one partial); and the audio seconds."""
    from service.artefacts.manifest import load_manifest
    from service.decode import SAMPLE_RATE, iter_decoded
    from service.engine.patch import StreamingPatcher

    geometry = load_manifest(REPO_ROOT / "models" / f"{MODEL}.json").geometry
    batches: list[np.ndarray] = []
    audio_seconds = 0.0
    for path in files:
        patcher = StreamingPatcher(geometry, geometry.hop_frames(None))
        patches: list[np.ndarray] = []
        with open(path, "rb") as f:
            for chunk in iter_decoded(f, max_seconds=max_seconds, chunk_samples=30 * SAMPLE_RATE):
                patches += [patch.copy() for patch in patcher.push(chunk)]
        patches += [patch.copy() for patch in patcher.finish()]
        batches += [np.stack(patches[i : i + batch]) for i in range(0, len(patches), batch)]
        audio_seconds += patcher.num_samples / SAMPLE_RATE
    return batches, audio_seconds


def raw_pass(batches: list[np.ndarray], audio_seconds: float, workers: int, threads: int) -> RawPass:
    """Only ``Runner.run`` over the same batches, ``workers`` of them at once with ``threads`` ONNX Runtime threads
    each, as the backfill's batch policy runs them: the ceiling for the backfill."""
    from concurrent.futures import ThreadPoolExecutor

    from service.artefacts.manifest import load_manifest, verify_onnx
    from service.engine.run import load_runner

    manifest_path = REPO_ROOT / "models" / f"{MODEL}.json"
    runner = load_runner(verify_onnx(manifest_path, load_manifest(manifest_path)), "cpu", threads, ())
    runner.run(batches[0][:1])  # warm-up, not timed
    wall, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(runner.run, batches))
    return RawPass(audio_seconds, sum(len(b) for b in batches), time.perf_counter() - wall, time.process_time() - cpu)


# ---- backfill subprocess with memory sampling ------------------------------------------------------------------------


@dataclass
class Memory:
    peak_tree_rss: int = 0
    peak_tree_pss: int = 0
    peak_parent_rss: int = 0
    peak_worker_rss: int = 0
    peak_parent_pss: int = 0
    peak_worker_pss: int = 0
    peak_parent_hwm: int = 0  # bytes: the kernel's RSS high-water marks (VmHWM), largest seen
    peak_worker_hwm: int = 0
    samples: int = 0
    processes: set = field(default_factory=set)
    cpu_seconds: dict = field(default_factory=dict)  # pid -> last seen user + system CPU seconds

    def cpu_of(self, kind: str) -> float:
        return sum(self.cpu_seconds.get(pid, 0.0) for pid, k in self.processes if k == kind)


def high_water_mark(pid: int) -> int:
    """The kernel's peak RSS of a process since its exec (VmHWM), in bytes; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def sample_memory(pid: int, memory: Memory, stop: threading.Event) -> None:
    import psutil

    root = psutil.Process(pid)
    while not stop.is_set():
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        rss_total = pss_total = 0
        for process in tree:
            try:
                info = process.memory_full_info()
                cmdline = " ".join(process.cmdline())
                times = process.cpu_times()
            except psutil.Error:
                continue
            memory.cpu_seconds[process.pid] = times.user + times.system
            kind = "tracker" if "resource_tracker" in cmdline else "parent" if process.pid == pid else "worker"
            memory.processes.add((process.pid, kind))
            rss_total += info.rss
            pss_total += info.pss
            hwm = high_water_mark(process.pid)
            if kind == "parent":
                memory.peak_parent_rss = max(memory.peak_parent_rss, info.rss)
                memory.peak_parent_pss = max(memory.peak_parent_pss, info.pss)
                memory.peak_parent_hwm = max(memory.peak_parent_hwm, hwm)
            elif kind == "worker":
                memory.peak_worker_rss = max(memory.peak_worker_rss, info.rss)
                memory.peak_worker_pss = max(memory.peak_worker_pss, info.pss)
                memory.peak_worker_hwm = max(memory.peak_worker_hwm, hwm)
        memory.peak_tree_rss = max(memory.peak_tree_rss, rss_total)
        memory.peak_tree_pss = max(memory.peak_tree_pss, pss_total)
        memory.samples += 1
        stop.wait(0.1)


@dataclass
class BackfillPass:
    command: list[str]
    wall_seconds: float
    cpu_seconds: float
    summary: dict
    memory: Memory

    @property
    def speed(self) -> float:
        return self.summary["audio_hours"] * 3600 / self.wall_seconds


def backfill_pass(catalog: Path, out: Path, args: argparse.Namespace) -> BackfillPass:
    command = [
        sys.executable,
        "-m",
        "service",
        "backfill",
        str(catalog),
        "--out",
        str(out),
        "--model",
        MODEL,
        "--models-dir",
        str(REPO_ROOT / "models"),
        "--max-seconds",
        "4000",
        "--progress",
        "log",
        "--progress-seconds",
        "60",
        "--batch-patches",
        str(args.batch_patches),
        "--workers",
        str(args.workers),
        "--inference-workers",
        str(args.inference_workers),
        "--intra-op-threads",
        str(args.intra_op_threads),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGRAM_")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    memory, stop = Memory(), threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(process.pid, memory, stop), daemon=True)
    sampler.start()
    stdout, _ = process.communicate()
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise SystemExit(f"backfill exited with {process.returncode}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = json.loads(stdout.strip().splitlines()[-1])
    return BackfillPass(command, wall, cpu, summary, memory)


# ---- report ---------------------------------------------------------------------------------------------------------


def mb(value: float) -> str:
    return f"{value / 1e6:.0f} MB"


def report(
    argv: list[str], files: list[Path], raws: list[RawPass], ort_default: RawPass, run: BackfillPass, args
) -> str:
    raw_speed = float(np.mean([r.speed for r in raws]))
    raw_cpu_per_hour = float(np.mean([r.run_cpu_seconds / (r.audio_seconds / 3600) for r in raws]))
    audio_hours = run.summary["audio_hours"]
    best_raw = max(raw_speed, ort_default.speed)
    m = run.memory
    parent_cpu = m.cpu_of("parent") / audio_hours
    workers = sum(1 for _, kind in m.processes if kind == "worker")
    lines = [
        "## Backfill throughput and memory (`bench/backfill.py`)",
        "",
        *environment_lines(argv),
        f"- catalog: {len(files)} real tracks, {audio_hours:.2f} h of audio in all ({raws[0].patches} patches), "
        f"the longest {args.long_minutes} min (Ogg/Opus); `--batch-patches {args.batch_patches} --workers "
        f"{args.workers} --inference-workers {args.inference_workers} --intra-op-threads {args.intra_op_threads}`",
        f"- backfill command: `{' '.join(Path(c).name if i == 0 else c for i, c in enumerate(run.command))}` "
        "(temporary paths)",
        "",
        markdown_table(
            ["", "audio hours per hour", "CPU s per audio hour"],
            [
                [
                    f"raw ONNX Runtime, the backfill's policy ({args.inference_workers} batch(es) at once, "
                    f"{args.intra_op_threads} thread(s) each), same patches and batches (mean of 2 passes: "
                    + " / ".join(f"{r.speed:.1f}" for r in raws)
                    + ")",
                    f"{raw_speed:.1f}",
                    f"{raw_cpu_per_hour:.0f}",
                ],
                [
                    "raw ONNX Runtime, one batch at a time on its default threads (one per core), same batches",
                    f"{ort_default.speed:.1f}",
                    f"{ort_default.run_cpu_seconds / (ort_default.audio_seconds / 3600):.0f}",
                ],
                [
                    "`taggram backfill`, wall clock from start to exit (decode, inference, Parquet)",
                    f"{run.speed:.1f}",
                    f"{run.cpu_seconds / audio_hours:.0f}",
                ],
                ["... of which the parent (model, patching, Parquet)", "", f"{parent_cpu:.0f}"],
                ["... of which the decode worker(s)", "", f"{m.cpu_of('worker') / audio_hours:.0f}"],
            ],
        ),
        "",
        f"- **backfill vs raw ONNX Runtime (same policy), wall clock: {run.speed / raw_speed:.0%}** "
        f"(target ≥ {SPEED_TARGET:.0%}); vs the best raw figure ({best_raw:.1f}): {run.speed / best_raw:.0%}",
        f"- per CPU second (raw CPU s per audio hour / backfill CPU s per audio hour): "
        f"{raw_cpu_per_hour / (run.cpu_seconds / audio_hours):.0%}; "
        f"the parent alone: {raw_cpu_per_hour / parent_cpu:.0%}",
        f"- CPU used by the backfill's processes on average: {run.cpu_seconds / run.wall_seconds:.2f} cores "
        f"(raw passes: {np.mean([r.run_cpu_seconds / r.run_seconds for r in raws]):.2f}); the inference threads "
        f"were inside `Runner.run` {run.summary['inference_busy']:.0%} of the wall-clock time",
        "",
        markdown_table(
            ["peak memory (sampled every 0.1 s)", "RSS", "PSS", "target"],
            [
                ["parent (inference, Parquet)", mb(m.peak_parent_rss), mb(m.peak_parent_pss), ""],
                [f"decode worker (largest of {workers})", mb(m.peak_worker_rss), mb(m.peak_worker_pss), ""],
                [
                    "whole process tree (parent + workers + multiprocessing's resource tracker)",
                    mb(m.peak_tree_rss),
                    mb(m.peak_tree_pss),
                    f"< {RSS_TARGET_MB} MB",
                ],
                [
                    "kernel high-water mark (VmHWM): parent / largest decode worker",
                    f"{mb(m.peak_parent_hwm)} / {mb(m.peak_worker_hwm)}",
                    "",
                    "",
                ],
            ],
        ),
        "",
        f"Errors: {run.summary['errors']}; analysed: {run.summary['analysed']} tracks; memory samples: {m.samples}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 tracks + a 20-minute one")
    parser.add_argument("--batch-patches", type=int, default=None, help="default: the backfill's default")
    parser.add_argument("--workers", type=int, default=None, help="default: the backfill's default")
    parser.add_argument("--inference-workers", type=int, default=None, help="default: the backfill's default")
    parser.add_argument("--intra-op-threads", type=int, default=None, help="default: the backfill's default")
    parser.add_argument("--no-write", action="store_true", help="print the report without updating docs/backfill.md")
    args = parser.parse_args()
    from service.config import Settings
    from service.offline.backfill import DEFAULT_BATCH_PATCHES, default_batch_policy, default_workers

    args.batch_patches = args.batch_patches or DEFAULT_BATCH_PATCHES
    args.workers = args.workers or default_workers()
    policy = default_batch_policy(
        Settings().model_copy(
            update={"inference_workers": args.inference_workers or 0, "intra_op_threads": args.intra_op_threads or 0}
        )
    )
    args.inference_workers, args.intra_op_threads = policy.inference_workers, policy.intra_op_threads
    args.long_minutes = 20 if args.quick else 60
    with tempfile.TemporaryDirectory(prefix="taggram-bench-backfill-") as tmp:
        files = build_catalog(Path(tmp) / "catalog", args.quick)
        print(f"catalog: {len(files)} files; raw pass 1", file=sys.stderr, flush=True)
        batches, audio_seconds = track_batches(files, args.batch_patches, 4000)
        raws = [raw_pass(batches, audio_seconds, args.inference_workers, args.intra_op_threads)]
        print(f"raw: {raws[0].speed:.1f} audio h/h; backfill pass", file=sys.stderr, flush=True)
        run = backfill_pass(Path(tmp) / "catalog", Path(tmp) / "out", args)
        print(f"backfill: {run.speed:.1f} audio h/h; raw pass 2", file=sys.stderr, flush=True)
        raws.append(raw_pass(batches, audio_seconds, args.inference_workers, args.intra_op_threads))
        print(
            f"raw: {raws[1].speed:.1f} audio h/h; raw pass with ONNX Runtime's default threads",
            file=sys.stderr,
            flush=True,
        )
        ort_default = raw_pass(batches, audio_seconds, 1, 0)
    text = report(["bench.backfill", *sys.argv[1:]], files, raws, ort_default, run, args)
    print(text)
    if not args.no_write:
        update_report("backfill", text, path=REPORT)


if __name__ == "__main__":
    main()
