"""Classification heads: what one costs per request next to the base model, and what training costs at scale.

    PYTHONPATH=$PWD .venv/bin/python -m bench.heads                       # everything below (about 20 min)
    PYTHONPATH=$PWD .venv/bin/python -m bench.heads --only training --sizes 2000,4000 --selection-size 0 \
        --mlp-size 0 --compare-sizes 2000 --no-write                       # a quick look

Sections ``heads-inference`` and ``heads-training`` go into docs/benchmarks.md and docs/heads.md (``--no-write``:
print only).

1. **Inference per request**: a 3-minute track is 60 segments. Timed, interleaved in one run: the base model
   (msd-musicnn via the service's ``Runner``, batches of 4 patches as the service's default) on 60 patches of
   random audio, and a head (a calibrated one-vs-rest logistic head, 50 classes, exported by head_training) on the
   60 segment embeddings, both poolings. The ratio is what a head adds to an uncached request; on a cached one
   the head is all the compute there is.
2. **Training**, measured at every size up to 100k tracks, on synthetic embeddings (50 Gaussian class centroids
   in 200-d, 1-2 classes per track, 10 tracks per artist), on 2 cores (BLAS pool 2 threads, ``--jobs 2``):
   * one ``logreg-pooled`` fit as ``train-head`` makes it at the end (with its inner 3-fold Platt calibration:
     4 logistic fits per class) at each ``--sizes``;
   * the previous configuration (classes one at a time, each fit on 2 BLAS threads), then the current one, on
     the same data at ``--compare-sizes``, with the largest difference between their probabilities;
   * the whole ``train-head`` selection for ``logreg-pooled`` (grouped 5-fold CV, then the final fit) at
     ``--selection-size``, with its cross-validated macro ROC-AUC / PR-AUC on the synthetic classes;
   * one calibrated ``mlp-pooled`` fit at ``--mlp-size`` (its cost per track, to bound it at 100k).

Wall and CPU seconds are both given: the machine is shared with other jobs.

Writes docs/benchmarks.md and docs/heads.md (the heads' cost sections).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BLAS_POOL_THREADS = 2  # the "2 cores" of the figure
os.environ.setdefault("OMP_NUM_THREADS", str(BLAS_POOL_THREADS))  # before numpy/scipy load BLAS
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(BLAS_POOL_THREADS))

# E402: the BLAS thread counts above must be set before numpy (and what imports it) loads BLAS.
import numpy as np  # noqa: E402 - see above

from bench import common  # noqa: E402 - see above
from head_training.folds import DEFAULT_FOLDS  # noqa: E402 - see above

REPO_ROOT = Path(__file__).resolve().parent.parent
SEGMENTS_PER_REQUEST = 60  # a 3-minute track at the default hop (one 2.99-s patch)
CLASSES = 50
DIM = 200
TRACKS_PER_ARTIST = 10
TARGET_TRACKS = 100_000
SERVICE_BATCH = 4  # TAGGRAM_MAX_BATCH_PATCHES default
SECTION_INFERENCE, SECTION_TRAINING = "heads-inference", "heads-training"
REPORTS = (common.REPORT, REPO_ROOT / "docs" / "heads.md")


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
    from service.artefacts.registry import load_models
    from service.config import Settings

    model = load_models(Settings(models_dir=models_dir, models="msd-musicnn", inference_workers=1))["msd-musicnn"]
    patches = np.random.default_rng(1).uniform(-0.5, 0.5, (SEGMENTS_PER_REQUEST, model.manifest.patch_samples))
    patches = patches.astype(np.float32)
    x, y, g = synthetic(2000)
    head = cand.fit(cand.CANDIDATES["logreg-pooled"], x, y, g, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, _ = write_artefact(head, "bench", Path(tmp), {})
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1  # as service/artefacts/heads.py
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
    return {
        "base_ms": b * 1e3,
        "head_segments_ms": s * 1e3,
        "head_pooled_ms": p * 1e3,
        "ratio_segments": s / b,
        "ratio_pooled": p / b,
    }


def timed(work):
    """(result, wall seconds, CPU seconds of this process: every thread, BLAS's included)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    result = work()
    return result, time.perf_counter() - started, time.process_time() - cpu_started


def fit_pooled(n: int, jobs: int, name: str = "logreg-pooled"):
    from head_training import candidates as cand

    x, y, g = synthetic(n, seed=n)
    return timed(lambda: cand.fit(cand.CANDIDATES[name], x, y, g, seed=0, jobs=jobs))


def bench_training(sizes: list[int], jobs: int) -> list[dict]:
    rows = []
    for n in sizes:
        _, wall, cpu = fit_pooled(n, jobs)
        rows.append({"tracks": n, "wall_s": wall, "cpu_s": cpu})
        print(
            f"  logreg-pooled, {n} tracks x {CLASSES} classes, --jobs {jobs}: {wall:.1f} s wall, {cpu:.1f} CPU-s",
            flush=True,
        )
    return rows


@contextlib.contextmanager
def blas_threads_per_fit(threads: int):
    """The previous configuration: every logistic fit on the whole BLAS pool."""
    from head_training import candidates as cand

    kept = cand.BLAS_THREADS_PER_FIT
    cand.BLAS_THREADS_PER_FIT = threads
    try:
        yield
    finally:
        cand.BLAS_THREADS_PER_FIT = kept


def bench_previous(sizes: list[int], jobs: int) -> list[dict]:
    rows = []
    for n in sizes:
        x, _, _ = synthetic(n, seed=n)
        with blas_threads_per_fit(BLAS_POOL_THREADS):
            before, before_wall, before_cpu = fit_pooled(n, jobs=1)
        now, wall, cpu = fit_pooled(n, jobs)
        difference = float(np.abs(before.scores(x) - now.scores(x)).max())
        rows.append(
            {
                "tracks": n,
                "previous_wall_s": before_wall,
                "previous_cpu_s": before_cpu,
                "wall_s": wall,
                "cpu_s": cpu,
                "max_probability_difference": difference,
            }
        )
        print(
            f"  {n} tracks: previous {before_wall:.1f} s wall / {before_cpu:.1f} CPU-s, now {wall:.1f} s / "
            f"{cpu:.1f} CPU-s, max |probability difference| {difference:.1e}",
            flush=True,
        )
    return rows


def bench_selection(n: int, jobs: int, folds: int) -> dict:
    """What ``train-head --candidates logreg-pooled`` does after loading: grouped CV, then the final fit."""
    from types import SimpleNamespace

    from head_training import candidates as cand
    from head_training.train import select

    x, y, g = synthetic(n, seed=n)
    data = SimpleNamespace(
        pooled=x, segments=None, targets=y, groups=g.tolist(), classes=[f"class-{c}" for c in range(CLASSES)]
    )
    (chosen, scored, _), cv_wall, cv_cpu = timed(lambda: select(data, ["logreg-pooled"], folds, 0, jobs))
    _, fit_wall, fit_cpu = timed(lambda: cand.fit(chosen, x, y, g, seed=0, jobs=jobs))
    macro = scored[chosen.name]["macro"]
    print(
        f"  selection at {n} tracks: {folds}-fold CV {cv_wall:.1f} s wall / {cv_cpu:.1f} CPU-s, final fit "
        f"{fit_wall:.1f} s / {fit_cpu:.1f} CPU-s; CV macro ROC-AUC {macro['roc_auc']}, PR-AUC {macro['pr_auc']}",
        flush=True,
    )
    return {
        "tracks": n,
        "folds": folds,
        "cv_wall_s": cv_wall,
        "cv_cpu_s": cv_cpu,
        "fit_wall_s": fit_wall,
        "fit_cpu_s": fit_cpu,
        "macro": macro,
    }


def bench_mlp(n: int, jobs: int) -> dict:
    _, wall, cpu = fit_pooled(n, jobs, "mlp-pooled")
    print(f"  mlp-pooled, {n} tracks: {wall:.1f} s wall, {cpu:.1f} CPU-s", flush=True)
    return {"tracks": n, "wall_s": wall, "cpu_s": cpu}


def parse_sizes(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if int(v) > 0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--sizes", type=parse_sizes, default="12500,25000,50000,100000", help="tracks for one logreg-pooled fit each"
    )
    parser.add_argument(
        "--compare-sizes",
        type=parse_sizes,
        default="2000,4000,8000",
        help="tracks at which the previous configuration is timed next to the current one",
    )
    parser.add_argument("--selection-size", type=int, default=TARGET_TRACKS, help="0: skip the selection")
    parser.add_argument("--mlp-size", type=int, default=10_000, help="0: skip the mlp-pooled fit")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS)
    parser.add_argument("--jobs", type=int, default=BLAS_POOL_THREADS, help="train-head --jobs (default: %(default)s)")
    parser.add_argument("--only", choices=("inference", "training"), default=None)
    parser.add_argument("--no-write", action="store_true", help="print only; do not update the docs")
    args = parser.parse_args(argv)
    command = common.environment_lines(["bench.heads", *(argv if argv is not None else sys.argv[1:])])
    sections = {}
    if args.only != "training":
        sections[SECTION_INFERENCE] = report_inference(bench_inference(args.models_dir, args.repeats), command)
    if args.only != "inference":
        print("training:", flush=True)
        scaling = bench_training(args.sizes, args.jobs)
        previous = bench_previous(args.compare_sizes, args.jobs)
        selection = bench_selection(args.selection_size, args.jobs, args.folds) if args.selection_size else None
        mlp = bench_mlp(args.mlp_size, args.jobs) if args.mlp_size else None
        sections[SECTION_TRAINING] = report_training(scaling, previous, selection, mlp, args.jobs, command)
    for name, body in sections.items():
        print(body)
        if not args.no_write:
            for report in REPORTS:
                common.update_report(name, body, path=report)


def report_inference(inference: dict, command: list[str]) -> str:
    return "\n".join(
        [
            "### Head inference per request (`bench/heads.py`)",
            "",
            *command,
            "",
            f"A 3-minute track ({SEGMENTS_PER_REQUEST} segments): base model {inference['base_ms']:.0f} ms "
            "(msd-musicnn, "
            f"batches of {SERVICE_BATCH}, one thread); a {CLASSES}-class calibrated logistic head on every segment "
            f"**{inference['head_segments_ms']:.3f} ms** ({inference['ratio_segments']:.1e} of the base model), on the "
            f"pooled embedding {inference['head_pooled_ms']:.3f} ms ({inference['ratio_pooled']:.1e}). Medians of "
            "interleaved repeats.",
            "",
        ]
    )


def report_training(
    scaling: list[dict], previous: list[dict], selection: dict | None, mlp: dict | None, jobs: int, command: list[str]
) -> str:
    per_track = [r["cpu_s"] / r["tracks"] for r in scaling]
    rows = [
        [
            f"{r['tracks']:,}",
            f"{r['wall_s']:.1f}",
            f"{r['cpu_s']:.1f}",
            f"{cost * 1e3:.2f}",
            f"{cost / per_track[0]:.2f}",
        ]
        for r, cost in zip(scaling, per_track)
    ]
    lines = [
        "### Head training time (`bench/heads.py`)",
        "",
        *command,
        f"- synthetic embeddings ({DIM}-d, {CLASSES} classes, 1-2 per track, {TRACKS_PER_ARTIST} tracks per artist); "
        f"BLAS pool {BLAS_POOL_THREADS} threads, `--jobs {jobs}` (classes fitted side by side, one BLAS thread each)",
        "",
        f"One `logreg-pooled` fit with its inner 3-fold Platt calibration (4 logistic fits per class, "
        f"{CLASSES} classes), as `train-head` makes it after the selection:",
        "",
        common.markdown_table(["tracks", "wall s", "CPU s", "CPU ms per track", "per track vs smallest"], rows),
        "",
    ]
    if previous:
        rows = [
            [
                f"{r['tracks']:,}",
                f"{r['previous_wall_s']:.1f}",
                f"{r['previous_cpu_s']:.1f}",
                f"{r['wall_s']:.1f}",
                f"{r['cpu_s']:.1f}",
                f"{r['max_probability_difference']:.0e}",
            ]
            for r in previous
        ]
        lines += [
            "The previous configuration (classes one at a time, each fit on the whole BLAS pool of "
            f"{BLAS_POOL_THREADS} threads) and the current one, one after the other on the same data:",
            "",
            common.markdown_table(
                [
                    "tracks",
                    "previous wall s",
                    "previous CPU s",
                    "now wall s",
                    "now CPU s",
                    "max abs probability difference",
                ],
                rows,
            ),
            "",
        ]
    if selection:
        total = selection["cv_wall_s"] + selection["fit_wall_s"]
        lines += [
            f"The whole selection for `logreg-pooled` at {selection['tracks']:,} tracks ({selection['folds']} "
            f"grouped folds, then the final fit): CV {selection['cv_wall_s']:.0f} s wall "
            f"({selection['cv_cpu_s']:.0f} CPU-s) + final fit {selection['fit_wall_s']:.0f} s "
            f"({selection['fit_cpu_s']:.0f} CPU-s) = **{total / 60:.1f} min wall**. Cross-validated on the "
            f"synthetic classes: macro ROC-AUC {selection['macro']['roc_auc']}, PR-AUC "
            f"{selection['macro']['pr_auc']}, top-1 {selection['macro']['top1']}.",
            "",
        ]
    if mlp:
        lines += [
            f"One calibrated `mlp-pooled` fit at {mlp['tracks']:,} tracks: {mlp['wall_s']:.0f} s wall "
            f"({mlp['cpu_s']:.0f} CPU-s, {mlp['cpu_s'] / mlp['tracks'] * 1e3:.1f} CPU-ms per track).",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
