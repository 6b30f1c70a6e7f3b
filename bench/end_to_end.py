"""End-to-end throughput on real music, sequential (one track at a time), six paths measured in ONE run:

1. **raw ONNX** — an ``onnxruntime.InferenceSession`` on the model file (all graph optimisations, ONNX Runtime's
   default thread count: one multi-threaded run per batch) run on precomputed, contiguous waveform batches of
   ``--batch`` patches.
1b. **raw ONNX, the service's configuration** — the same batches through the service's ``Runner`` as
   ``service.engine.run.batch_policy`` configures it (``inference_workers`` single-threaded runs at once). The higher of
   1 and 1b is the ceiling the target is measured against.
2. **service path, in-process** — ``service.decode.decode`` + ``service.engine.patch.patch_track`` + the service's
   ``Runner`` on batches of ``--batch`` patches (``np.stack`` of rows, as the batcher does), ``workers`` at once.
   No HTTP, no batcher.
3. **end to end over HTTP** — ``taggram serve`` in a subprocess (cache disabled: ``TAGGRAM_MEMORY_CACHE_BYTES=0``),
   one ``POST /taggram`` per track with the raw file bytes, one request at a time.
4. **librosa baseline** (what musicnn's own extractor does) — ``librosa.load(path, sr=16000)`` +
   ``librosa.feature.melspectrogram`` (n_fft 512, hop 256, 96 mels) + ``log10(1 + 10000·mel)`` in float32, cut into
   187-frame patches at the same frames as ours, then the network. Our graph takes a waveform, so the network
   is the **log-mel → outputs subgraph of the same ONNX file** (``onnx.utils.Extractor``, input ``logmel``): the
   baseline pays for its mel once, in librosa. The brief's simpler alternative — librosa's preprocessing plus our
   whole graph (which computes the mel again) — is reported too, as "baseline (+ in-graph frontend)"; it is
   computed from the same run (librosa time + path 1's time on the same patches).
5. **path 2 streamed** — as the service's pipeline does it: a thread decodes with ``service.decode.iter_decoded``
   while the main thread cuts patches with ``service.engine.patch.StreamingPatcher`` and hands every batch to the
   runner's workers as soon as it is full (same patches, same batches as path 2, checked): what overlapping decoding
   with inference buys.

Every path processes the same patches (same count per track), so patches/s compare directly. Paths are
interleaved track by track (the order rotates), so load from other work on the machine hits all of them alike,
and each path's time for a track is its best of ``--rounds`` passes (the minimum is the statistic other load moves
least; the ratio from plain totals is printed too). Warm-up: each path runs once on a 30 s clip first.

Writes docs/benchmarks.md, "End to end, sequential".
"""

from __future__ import annotations

import argparse
import io
import queue
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
from onnx.utils import Extractor

from bench import common
from corpus.music import check_librosa_reads, cut_clip, music_files
from service.artefacts.manifest import load_manifest
from service.config import Settings
from service.decode import SAMPLE_RATE, decode, iter_decoded
from service.engine.patch import PatchGeometry, StreamingPatcher, patch_starts, patch_track
from service.engine.run import batch_policy, load_runner

SECTION = "end_to_end"
MAX_SECONDS = 3600.0
WARM_UP_CLIP_SECONDS = 30.0
E2E_TARGET = 0.85
PATHS = ("raw", "raw_service", "service", "http", "baseline", "overlap")
LABELS = {
    "raw": "1. raw ONNX, runtime defaults (precomputed patches)",
    "raw_service": "1b. raw ONNX, the service's configuration (precomputed patches)",
    "service": "2. service path in-process (decode + patch + run)",
    "http": "3. end to end over HTTP (`POST /taggram`, cache off)",
    "baseline": "4. librosa baseline (load + mel + network-only subgraph)",
    "baseline_full": "4b. librosa baseline (+ in-graph frontend, brief's variant)",
    "overlap": "5. path 2 streamed (decoding overlapped with inference, as the service)",
}


@dataclass
class Track:
    path: Path
    data: bytes
    seconds: float  # decoded duration
    patches: int
    batches: list[np.ndarray]  # contiguous waveform batches for the raw path
    times: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)  # CPU seconds (this process + the server's for http)
    detail: dict[str, list[float]] = field(default_factory=dict)  # breakdowns: decode, infer, load, mel, net


class Bench:
    def __init__(self, args: argparse.Namespace, service_url: str, service_pid: int) -> None:
        self.args = args
        self.url = service_url
        self.service_pid = service_pid
        manifest = load_manifest(common.MODELS_DIR / f"{args.model}.json")
        self.geometry = PatchGeometry(
            manifest.sample_rate, manifest.patch_samples, manifest.patch_frames, manifest.frame_hop
        )
        self.hop_frames = self.geometry.hop_frames(None)
        onnx_path = common.MODELS_DIR / manifest.onnx.file
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.raw = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        network = Extractor(onnx.load(str(onnx_path))).extract_model(["logmel"], ["tags", "embedding"])
        self.network = ort.InferenceSession(network.SerializeToString(), options, providers=["CPUExecutionProvider"])
        policy = batch_policy(Settings(), on_cuda=False)  # the service's defaults
        self.runner = load_runner(onnx_path, "cpu", policy.intra_op_threads)
        self.pool = ThreadPoolExecutor(policy.inference_workers, thread_name_prefix="infer")
        self.client = httpx.Client(base_url=service_url, timeout=600.0)

    # ---- the paths: each returns (seconds, breakdown) for one track ----

    def run_raw(self, track: Track) -> tuple[float, dict[str, float]]:
        started = time.perf_counter()
        for batch in track.batches:
            self.raw.run(["tags", "embedding"], {"waveform": batch})
        return time.perf_counter() - started, {}

    def run_raw_service(self, track: Track) -> tuple[float, dict[str, float]]:
        started = time.perf_counter()
        list(self.pool.map(self.runner.run, track.batches))
        return time.perf_counter() - started, {}

    def run_service(self, track: Track) -> tuple[float, dict[str, float]]:
        started = time.perf_counter()
        decoded = decode(io.BytesIO(track.data), max_seconds=MAX_SECONDS)
        decoded_at = time.perf_counter()
        patches = patch_track(decoded.samples, self.geometry, self.hop_frames)
        batches = (
            np.stack(patches[start : start + self.args.batch]) for start in range(0, len(patches), self.args.batch)
        )
        list(self.pool.map(self.runner.run, batches))
        ended = time.perf_counter()
        if len(patches) != track.patches:
            raise RuntimeError(f"{track.path.name}: {len(patches)} patches, expected {track.patches}")
        return ended - started, {"decode": decoded_at - started, "infer": ended - decoded_at}

    def run_overlap(self, track: Track) -> tuple[float, dict[str, float]]:
        """Path 2 streamed, as the service's pipeline does it: a thread decodes (``iter_decoded``) while this thread
        cuts patches with the service's ``StreamingPatcher`` and hands every batch to the inference workers as soon as
        it is full. Same patches, same batches of ``--batch`` as path 2."""
        started = time.perf_counter()
        chunks: queue.Queue = queue.Queue()

        def produce() -> None:
            try:
                for chunk in iter_decoded(io.BytesIO(track.data), max_seconds=MAX_SECONDS):
                    chunks.put(chunk)
                chunks.put(None)
            except BaseException as error:  # noqa: BLE001 - handed to the consumer
                chunks.put(error)

        threading.Thread(target=produce, daemon=True).start()
        patcher = StreamingPatcher(self.geometry, self.hop_frames)
        pending: list[np.ndarray] = []
        running = []
        computed = 0
        while (item := chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            pending += patcher.push(item)
            while len(pending) >= self.args.batch:
                running.append(self.pool.submit(self.runner.run, np.stack(pending[: self.args.batch])))
                computed += self.args.batch
                del pending[: self.args.batch]
        pending += patcher.finish()
        for start in range(0, len(pending), self.args.batch):
            running.append(self.pool.submit(self.runner.run, np.stack(pending[start : start + self.args.batch])))
        computed += len(pending)
        for future in running:
            future.result()
        if computed != track.patches:
            raise RuntimeError(f"{track.path.name}: {computed} patches, expected {track.patches}")
        return time.perf_counter() - started, {}

    def run_http(self, track: Track) -> tuple[float, dict[str, float]]:
        started = time.perf_counter()
        response = self.client.post(
            "/taggram", content=track.data, headers={"content-type": common.content_type(track.path)}
        )
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{track.path.name}: HTTP {response.status_code}: {response.text[:300]}")
        body = response.json()
        if body["cached"] or len(body["segments"]) != track.patches:
            raise RuntimeError(
                f"{track.path.name}: cached={body['cached']}, {len(body['segments'])} segments, "
                f"expected {track.patches} uncached"
            )
        return elapsed, {}

    def run_baseline(self, track: Track) -> tuple[float, dict[str, float]]:
        import librosa  # imported (and warmed up) before timing

        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # m4a: "PySoundFile failed. Trying audioread instead."
            y, _ = librosa.load(track.path, sr=SAMPLE_RATE)
        loaded = time.perf_counter()
        mel = librosa.feature.melspectrogram(y=y, sr=SAMPLE_RATE, n_fft=512, hop_length=256, n_mels=96)
        logmel = np.log10(np.float32(1) + np.float32(10000) * mel.astype(np.float32, copy=False)).T  # [frames, 96]
        frames = self.geometry.patch_frames
        starts = patch_starts(len(y), self.geometry, self.hop_frames)
        padded = np.zeros((starts[-1] + frames, logmel.shape[1]), np.float32)
        padded[: min(len(logmel), len(padded))] = logmel[: len(padded)]
        patches = np.stack([padded[s : s + frames] for s in starts])
        melled = time.perf_counter()
        for start in range(0, len(patches), self.args.batch):
            self.network.run(["tags", "embedding"], {"logmel": patches[start : start + self.args.batch]})
        ended = time.perf_counter()
        if len(patches) != track.patches:
            raise RuntimeError(f"{track.path.name}: baseline cut {len(patches)} patches, expected {track.patches}")
        return ended - started, {"load": loaded - started, "mel": melled - loaded, "net": ended - melled}

    def run(self, name: str, track: Track) -> tuple[float, float, dict[str, float]]:
        """(wall seconds, CPU seconds, breakdown); CPU = this process's + (for http) the server process's."""
        cpu_before = time.process_time() + common.process_cpu_seconds(self.service_pid)
        seconds, breakdown = getattr(self, f"run_{name}")(track)
        cpu = time.process_time() + common.process_cpu_seconds(self.service_pid) - cpu_before
        return seconds, cpu, breakdown


def prepare(path: Path, data: bytes, bench: Bench, batch: int) -> Track:
    decoded = decode(io.BytesIO(data), max_seconds=MAX_SECONDS)
    patches = patch_track(decoded.samples, bench.geometry, bench.hop_frames)
    batches = [np.ascontiguousarray(patches[i : i + batch]) for i in range(0, len(patches), batch)]
    return Track(path, data, decoded.duration_seconds, len(patches), batches)


def load_tracks(args: argparse.Namespace, bench: Bench) -> list[Track]:
    tracks = []
    for path in music_files(tuple(args.formats.split(",")), limit=args.tracks):
        if args.max_seconds:
            clip_path = (
                common.REPO_ROOT
                / ".cache"
                / "bench-music"
                / "clips"
                / f"{path.stem}.{args.max_seconds:g}s{path.suffix}"
            )
            if not clip_path.exists():
                clip_path.parent.mkdir(parents=True, exist_ok=True)
                clip_path.write_bytes(cut_clip(path, 0.0, args.max_seconds))
            path = clip_path  # librosa must read the same bytes
        tracks.append(prepare(path, path.read_bytes(), bench, args.batch))
    return tracks


def warm_up(bench: Bench, tracks: list[Track], args: argparse.Namespace) -> None:
    clip_path = common.REPO_ROOT / ".cache" / "bench-music" / "clips" / f"warmup{tracks[0].path.suffix}"
    clip_path.parent.mkdir(parents=True, exist_ok=True)
    clip_path.write_bytes(cut_clip(tracks[0].path, 0.0, WARM_UP_CLIP_SECONDS))
    clip = prepare(clip_path, clip_path.read_bytes(), bench, args.batch)
    for name in PATHS:
        bench.run(name, clip)


def best(track: Track, name: str) -> int:
    """Index of the round in which ``name`` was fastest on ``track`` (best of N rounds: robust to other load)."""
    times = track.times[name]
    return times.index(min(times))


def seconds_of(track: Track, name: str, key: str | None = None) -> float:
    index = best(track, name)
    return track.times[name][index] if key is None else track.detail[f"{name}_{key}"][index]


def summarise(tracks: list[Track]) -> dict[str, dict[str, float]]:
    """Per path: seconds (sum over tracks of the best round), patches, audio seconds."""
    patches = sum(t.patches for t in tracks)
    audio = sum(t.seconds for t in tracks)
    out = {
        name: {"seconds": sum(seconds_of(t, name) for t in tracks), "patches": patches, "audio": audio}
        for name in PATHS
    }
    preprocessing = sum(seconds_of(t, "baseline", "load") + seconds_of(t, "baseline", "mel") for t in tracks)
    out["baseline_full"] = {"seconds": preprocessing + out["raw"]["seconds"], "patches": patches, "audio": audio}
    return out


def mean_ratio(tracks: list[Track], numerator: str, denominator: str) -> float:
    """The same ratio from the totals of every round (not best-of): shows how much the statistic matters."""
    return sum(sum(t.times[denominator]) for t in tracks) / sum(sum(t.times[numerator]) for t in tracks)


def report(args: argparse.Namespace, argv: list[str], tracks: list[Track]) -> str:
    summary = summarise(tracks)
    rate = {name: s["patches"] / s["seconds"] for name, s in summary.items()}
    ceiling = max(("raw", "raw_service"), key=rate.get)  # the faster way to run raw ONNX on this machine
    # CPU time: totals over all rounds (it moves far less with other load than wall time does)
    rounds_patches = sum(t.patches * len(t.cpu["raw"]) for t in tracks)
    cpu = {name: sum(sum(t.cpu[name]) for t in tracks) for name in PATHS}
    cpu_rate = {name: rounds_patches / cpu[name] for name in PATHS}
    rows = []
    for name in ("raw", "raw_service", "service", "http", "baseline", "baseline_full", "overlap"):
        s = summary[name]
        cpu_cells = [f"{cpu_rate[name]:.1f}", f"{cpu_rate[name] / cpu_rate[ceiling]:.2f}"] if name in cpu else ["", ""]
        rows.append(
            [
                LABELS[name],
                s["patches"],
                f"{s['seconds']:.2f}",
                f"{rate[name]:.1f}",
                f"{s['audio'] / s['seconds']:.0f}×",
                f"**{rate[name] / rate[ceiling]:.2f}**",
                *cpu_cells,
            ]
        )
    e2e_ratio = rate["http"] / rate[ceiling]
    detail = {
        f"{name}_{key}": sum(seconds_of(t, name, key) for t in tracks)
        for name, key in (
            ("service", "decode"),
            ("service", "infer"),
            ("baseline", "load"),
            ("baseline", "mel"),
            ("baseline", "net"),
        )
    }
    per_track = [
        [
            t.path.name,
            f"{t.seconds:.0f}",
            t.patches,
            *(f"{t.patches / seconds_of(t, n):.1f}" for n in PATHS),
            f"{seconds_of(t, 'service', 'decode'):.2f}",
            f"{seconds_of(t, 'baseline', 'load'):.2f}",
        ]
        for t in tracks
    ]
    lines = [
        "## End to end, sequential (`bench/end_to_end.py`)",
        "",
        *common.environment_lines(argv),
        f"- input: {len(tracks)} tracks ({args.formats}"
        f"{f', first {args.max_seconds:g} s of each' if args.max_seconds else ', full length'}), "
        f"{sum(t.seconds for t in tracks):.0f} s of audio, {sum(t.patches for t in tracks)} patches "
        f"(hop = one patch); {args.rounds} round(s), each path's time per track is its best round; batch "
        f"{args.batch}; model {args.model}",
        "",
        common.markdown_table(
            [
                "path",
                "patches",
                "seconds",
                "patches/s",
                "× real time",
                "÷ raw ONNX",
                "patches per CPU-s",
                "÷ raw ONNX (CPU)",
            ],
            rows,
        ),
        "",
        f'"÷ raw ONNX" divides by the faster raw path, here {LABELS[ceiling].split(" (")[0]!r}. Wall-clock columns '
        "use each path's best round per track. CPU columns: all rounds, CPU time of this process plus the server "
        "process (the client's share of path 3 is included; the idle server's is included for every path alike); "
        "they say how much extra work each path does per patch.",
        "",
        f"- **e2e / raw ONNX = {e2e_ratio:.2f}** "
        f"(target ≥ {E2E_TARGET}: {'met' if e2e_ratio >= E2E_TARGET else 'MISSED'}); "
        f"from the totals of all rounds instead of the best: {mean_ratio(tracks, 'http', ceiling):.2f}; "
        f"per CPU-second: {cpu_rate['http'] / cpu_rate[ceiling]:.2f}; against the other raw path: "
        f"{rate['http'] / rate['raw' if ceiling == 'raw_service' else 'raw_service']:.2f}",
        f"- in-process service path / librosa baseline = {rate['service'] / rate['baseline']:.2f}; "
        f"e2e / librosa baseline = {rate['http'] / rate['baseline']:.2f}; "
        f"e2e / baseline (+ in-graph frontend) = {rate['http'] / rate['baseline_full']:.2f}",
        f"- where the in-process service path spends its time: decode + resample {detail['service_decode']:.2f} s "
        f"({detail['service_decode'] / (detail['service_decode'] + detail['service_infer']):.0%}), "
        f"patch + inference {detail['service_infer']:.2f} s",
        f"- where the baseline spends it: librosa.load {detail['baseline_load']:.2f} s, mel + log + patching "
        f"{detail['baseline_mel']:.2f} s, network-only subgraph {detail['baseline_net']:.2f} s "
        f"(the whole graph on the same patches: {summary['raw']['seconds']:.2f} s, so the in-graph frontend costs "
        f"{(summary['raw']['seconds'] - detail['baseline_net']) / summary['raw']['seconds']:.0%} of it)",
        "",
        "Per track (patches/s of each path; decode = our `decode`, load = `librosa.load`, seconds; best round):",
        "",
        common.markdown_table(["track", "audio s", "patches", *PATHS, "decode s", "load s"], per_track),
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.end_to_end",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--formats", default="ogg", help="comma-separated: ogg (originals), mp3, m4a (transcodes)")
    parser.add_argument("--tracks", type=int, default=0, help="use only the first N files (0 = all)")
    parser.add_argument("--max-seconds", type=float, default=0.0, help="cut each track to its first N s (0 = full)")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the tracks; the best round counts")
    parser.add_argument(
        "--batch",
        type=int,
        default=common.service_default("max_batch_patches"),
        help="patches per inference batch, every path (default: the service's TAGGRAM_MAX_BATCH_PATCHES)",
    )
    common.add_service_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    check_librosa_reads(tuple(args.formats.split(",")))  # the baseline path is librosa.load
    with common.running_service(args.port, args.model, memory_cache_bytes=0, max_batch_patches=args.batch) as service:
        bench = Bench(args, service.url, service.process.pid)
        tracks = load_tracks(args, bench)
        print(f"{len(tracks)} tracks, {sum(t.patches for t in tracks)} patches; warming up", file=sys.stderr)
        warm_up(bench, tracks, args)
        for round_index in range(args.rounds):
            for index, track in enumerate(tracks):
                shift = (index + round_index) % len(PATHS)
                for name in PATHS[shift:] + PATHS[:shift]:
                    seconds, cpu, breakdown = bench.run(name, track)
                    track.times.setdefault(name, []).append(seconds)
                    track.cpu.setdefault(name, []).append(cpu)
                    for key, value in breakdown.items():
                        track.detail.setdefault(f"{name}_{key}", []).append(value)
                print(
                    f"round {round_index + 1} {track.path.name}: "
                    + ", ".join(f"{n} {track.patches / track.times[n][-1]:.1f}/s" for n in PATHS),
                    file=sys.stderr,
                )
        bench.client.close()
        bench.pool.shutdown()
    text = report(args, ["bench.end_to_end", *argv], tracks)
    print(text)
    if not args.no_write:
        common.update_report(SECTION, text)


if __name__ == "__main__":
    main()
