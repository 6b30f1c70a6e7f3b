"""Classification heads: what one costs per request next to the base model, and what training costs at scale.

    PYTHONPATH=$PWD .venv/bin/python -m bench.heads                 # inference + training at 5k/10k/20k tracks
    PYTHONPATH=$PWD .venv/bin/python -m bench.heads --sizes 2000    # quicker

1. **Inference per request**: a 3-minute track is 60 segments. Timed, interleaved in one run: the base model
   (msd-musicnn via the service's ``Runner``, batches of 4 patches as the service's default) on 60 patches of
   random audio, and a head (a calibrated one-vs-rest logistic head, 50 classes, exported by head_training) on the
   60 segment embeddings, both poolings. The ratio is what a head adds to an uncached request; on a cached one
   the head is all the compute there is.
2. **Training**: ``logreg-pooled`` (the linear head with its inner 3-fold Platt calibration: 4 fits per class)
   on synthetic embeddings (50 Gaussian class centroids in 200-d, 1-2 classes per track, 10 tracks per artist),
   BLAS limited to 2 threads. Timed at ``--sizes`` tracks and extrapolated linearly (lbfgs on a fixed feature
   count costs about linearly in rows; the fitted slope is printed so the assumption can be checked) to 100k
   tracks; a full grouped-CV selection costs (folds + 1) times one fit.

The machine is shared with other jobs: figures are medians of interleaved repeats.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")  # before numpy/scipy load BLAS: the "2 cores" of the figure
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SEGMENTS_PER_REQUEST = 60  # a 3-minute track at the default hop (one 2.99-s patch)
CLASSES = 50
DIM = 200
TRACKS_PER_ARTIST = 10
TARGET_TRACKS = 100_000
SERVICE_BATCH = 4  # TAGGRAM_MAX_BATCH_PATCHES default


def synthetic(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(CLASSES, DIM))
    primary = rng.integers(0, CLASSES, n)
    secondary = np.where(rng.random(n) < 0.3, rng.integers(0, CLASSES, n), primary)
    targets = np.zeros((n, CLASSES), bool)
    targets[np.arange(n), primary] = True
    targets[np.arange(n), secondary] = True
    x = (centroids[primary] + 0.5 * centroids[secondary] + 2.0 * rng.normal(size=(n, DIM))).astype(np.float32)
    groups = np.array([f"artist-{i // TRACKS_PER_ARTIST}" for i in range(n)])
    return x, targets, groups


def bench_inference(models_dir: Path, repeats: int) -> dict:
    import onnxruntime as ort

    from head_training import candidates as cand
    from head_training.export import write_artefact
    from service.config import Settings
    from service.registry import load_models

    model = load_models(Settings(models_dir=models_dir, models="msd-musicnn", inference_workers=1))["msd-musicnn"]
    patches = np.random.default_rng(1).uniform(-0.5, 0.5, (SEGMENTS_PER_REQUEST, model.manifest.patch_samples))
    patches = patches.astype(np.float32)
    x, y, g = synthetic(2000)
    head = cand.fit(cand.CANDIDATES["logreg-pooled"], x, y, g, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, _ = write_artefact(head, "bench", Path(tmp), {})
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1  # as service/heads.py
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    embeddings = model.runner.run(patches[:SERVICE_BATCH])["embedding"]
    embeddings = np.resize(embeddings, (SEGMENTS_PER_REQUEST, DIM)).astype(np.float32)
    base, per_segment, pooled = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(0, SEGMENTS_PER_REQUEST, SERVICE_BATCH):
            model.runner.run(patches[i : i + SERVICE_BATCH])
        base.append(time.perf_counter() - started)
        started = time.perf_counter()
        session.run(None, {"embedding": embeddings})  # mean_scores: the head on every segment
        per_segment.append(time.perf_counter() - started)
        started = time.perf_counter()
        session.run(None, {"embedding": embeddings.mean(axis=0, keepdims=True)})  # mean_embedding
        pooled.append(time.perf_counter() - started)
    b, s, p = (statistics.median(v) for v in (base, per_segment, pooled))
    return {"base_ms": b * 1e3, "head_segments_ms": s * 1e3, "head_pooled_ms": p * 1e3,
            "ratio_segments": s / b, "ratio_pooled": p / b}


def bench_training(sizes: list[int]) -> dict:
    from head_training import candidates as cand

    timings = {}
    for n in sizes:
        x, y, g = synthetic(n, seed=n)
        started, cpu_started = time.perf_counter(), time.process_time()
        cand.fit(cand.CANDIDATES["logreg-pooled"], x, y, g, seed=0)
        timings[n] = time.process_time() - cpu_started  # CPU seconds: less sensitive to the machine's sharing
        print(f"  {n} tracks x {CLASSES} classes: {time.perf_counter() - started:.1f} s wall, {timings[n]:.1f} CPU-s",
              flush=True)
    ns = np.array(sorted(timings), float)
    ts = np.array([timings[int(n)] for n in ns])
    slope, intercept = np.polyfit(ns, ts, 1) if len(ns) > 1 else (ts[0] / ns[0], 0.0)
    return {"timings": timings, "slope_s_per_track": slope, "intercept_s": intercept,
            "extrapolated_s": slope * TARGET_TRACKS + intercept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="5000,10000,20000")
    parser.add_argument("--only", choices=("inference", "training"), default=None)
    args = parser.parse_args()
    if args.only != "training":
        report_inference(bench_inference(args.models_dir, args.repeats))
    if args.only != "inference":
        report_training(bench_training([int(s) for s in args.sizes.split(",")]))


def report_inference(inference: dict) -> None:
    print(f"per request ({SEGMENTS_PER_REQUEST} segments): base model {inference['base_ms']:.0f} ms; head on every "
          f"segment {inference['head_segments_ms']:.3f} ms ({inference['ratio_segments']:.2e} of the base); "
          f"head on the pooled embedding {inference['head_pooled_ms']:.3f} ms ({inference['ratio_pooled']:.2e})", flush=True)


def report_training(training: dict) -> None:
    print(f"training logreg-pooled + calibration, {CLASSES} classes: {training['slope_s_per_track'] * 1e3:.2f} CPU-ms per "
          f"track (+{training['intercept_s']:.1f} CPU-s) → {TARGET_TRACKS} tracks ≈ {training['extrapolated_s'] / 60:.1f} "
          f"CPU-min for one fit (÷2 for wall time on 2 idle cores); grouped 5-fold selection ≈ (folds + 1) = 6× that")


if __name__ == "__main__":
    main()
