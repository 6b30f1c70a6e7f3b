"""The GPU check, in one go, for a machine with an NVIDIA GPU (none was at hand when this was written: #21).

Run it in the GPU image (or a checkout whose venv has onnxruntime-gpu instead of onnxruntime):

    docker run --rm --gpus all -v "$PWD:/src" -w /src --entrypoint python taggram:0.1.0-gpu -m bench.gpu
    flock /tmp/taggram-bench.lock .venv/bin/python -m bench.gpu --models-dir models      # from a checkout

Four checks, each printed as one PASS/FAIL line, then a JSON summary (exit 1 if any failed):

1. **provider**: every model loads with ``TAGGRAM_DEVICE=cuda`` and its session runs on ``CUDAExecutionProvider``.
2. **warm-up**: every fixed batch size of ``TAGGRAM_CUDA_BATCH_SIZES`` is run once (what the service does before
   ready) and then timed warm: a second run of a size must not take more than ``WARM_SLOWDOWN_LIMIT`` × the first
   warm run (a size left cold would re-search convolution algorithms on first use).
3. **parity**: the patches of real tracks (``corpus.music``) through the CPU and the CUDA session: tags within
   ``PARITY_TOLERANCE`` (1e-4), embeddings' cosine >= ``EMBEDDING_COSINE_MIN``.
4. **service under load**: ``taggram serve`` on CUDA, four long uploads at once plus a client sending 30-s clips
   back to back (bench.fairness's mixed phase): the clips' p50/p99 and the audio seconds analysed per second.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench import common, fairness
from corpus.music import ensure_music
from service.artefacts.manifest import discover, load_manifest
from service.config import Device, Settings
from service.decode import decode
from service.engine.device import CUDA_PROVIDER, visible_gpus
from service.engine.patch import patch_track
from service.engine.run import load_runner

PARITY_TOLERANCE = 1e-4
EMBEDDING_COSINE_MIN = 0.9999
WARM_SLOWDOWN_LIMIT = 3.0  # warm runs of one size vary with the GPU's clocks; a cold one is 10-100x slower
LONG_UPLOADS = 4
LONG_MINUTES = 10.0
CLIPS = 24
CLIP_GAP_SECONDS = 0.05
MAX_CLIPS = 400


def report(name: str, ok: bool, detail: str, results: dict) -> None:
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    results[name] = {"ok": ok, "detail": detail}


def track_patches(manifest, tracks: list[Path], max_seconds: float) -> np.ndarray:
    geometry = manifest.geometry
    batches = []
    for track in tracks:
        with track.open("rb") as source:
            samples = decode(source, max_seconds=max_seconds).samples
        batches.append(patch_track(samples, geometry, geometry.hop_frames(None)))
    return np.concatenate(batches).astype(np.float32)


def check_models(models_dir: Path, sizes: tuple[int, ...], results: dict) -> None:
    settings = Settings()
    tracks = ensure_music()
    for manifest_path in discover(models_dir, []):
        manifest = load_manifest(manifest_path)
        onnx = models_dir / manifest.onnx.file
        gpu = load_runner(onnx, Device.CUDA, 0, sizes)
        report(f"provider {manifest.name}", gpu.provider == CUDA_PROVIDER, gpu.provider, results)
        if gpu.provider != CUDA_PROVIDER:
            continue
        patch = np.zeros((1, manifest.patch_samples), dtype=np.float32)
        first, second = {}, {}
        for size in sizes:  # the service's warm-up: each fixed size once, then timed warm twice
            gpu.run(np.repeat(patch, size, axis=0))
            for timings in (first, second):
                started = time.perf_counter()
                gpu.run(np.repeat(patch, size, axis=0))
                timings[size] = time.perf_counter() - started
        slow = {s: round(second[s] / first[s], 2) for s in sizes if second[s] > WARM_SLOWDOWN_LIMIT * first[s]}
        report(
            f"warm-up {manifest.name}",
            not slow,
            f"ms per batch by size { ({s: round(1000 * second[s], 2) for s in sizes}) }; cold after warm-up: {slow}",
            results,
        )
        patches = track_patches(manifest, tracks, settings.max_audio_seconds)
        cpu = load_runner(onnx, Device.CPU, 0)
        expected, actual = cpu.run(patches), gpu.run(patches)
        tag_error = float(np.max(np.abs(expected["tags"] - actual["tags"])))
        a, b = expected["embedding"], actual["embedding"]
        cosine = float(np.min(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
        report(
            f"parity {manifest.name}",
            tag_error <= PARITY_TOLERANCE and cosine >= EMBEDDING_COSINE_MIN,
            f"{len(patches)} real patches: max |tag CPU - CUDA| {tag_error:.2e} (<= {PARITY_TOLERANCE:g}), "
            f"min embedding cosine {cosine:.6f}",
            results,
        )


def check_service_under_load(model: str, results: dict) -> None:
    tracks = ensure_music()
    longs = [fairness.long_upload(i, LONG_MINUTES, tracks) for i in range(LONG_UPLOADS)]
    clips = fairness.make_clips(tracks, CLIPS)
    with common.running_service(
        model=model,
        device="cuda",
        memory_cache_bytes=0,
        request_timeout_seconds=fairness.SERVICE_REQUEST_TIMEOUT_SECONDS,
    ) as service:
        idle = fairness.run_phase(service, "idle", [], clips, CLIP_GAP_SECONDS, MAX_CLIPS)
        mixed = fairness.run_phase(service, "mixed", longs, clips, CLIP_GAP_SECONDS, MAX_CLIPS)
    audio_per_second = (mixed.long_seconds + mixed.clip_seconds) / mixed.long_wall
    p50, p99 = common.percentile(mixed.clip_latencies, 50), common.percentile(mixed.clip_latencies, 99)
    errors = idle.errors + mixed.errors
    report(
        "service under load",
        not errors and bool(mixed.clip_latencies),
        f"{LONG_UPLOADS} x {LONG_MINUTES:g} min uploads + {len(mixed.clip_latencies)} clips: "
        f"{audio_per_second:.0f} audio s/s; clip p50 {1000 * p50:.0f} ms, p99 {1000 * p99:.0f} ms "
        f"(idle p99 {1000 * common.percentile(idle.clip_latencies, 99):.0f} ms); errors {errors[:3]}",
        results,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=Path(Settings().models_dir))
    parser.add_argument("--model", default="msd-musicnn", help="the model the load check serves")
    parser.add_argument("--skip-load", action="store_true", help="only the in-process checks (1-3)")
    args = parser.parse_args(argv)
    results: dict = {}
    gpus, reason = visible_gpus()
    report("gpu visible", gpus > 0, f"{gpus} GPU(s)" if gpus else reason, results)
    if gpus:
        check_models(args.models_dir, Settings().cuda_batch_sizes, results)
        if not args.skip_load:
            check_service_under_load(args.model, results)
    print(json.dumps(results, indent=1))
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
