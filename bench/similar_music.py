"""The embedding as a product: do re-encodings, resamplings and excerpts of a real track find it again?

Steps (each skipped when its output exists, so an interrupted run resumes):

1. ``prepare``: from a corpus CSV (track_id, path, artist, title; /work/corpus/corpus.csv), pick ``--tracks``
   tracks at least ``WINDOW`` long (seeded shuffle), decode a ``WINDOW_SECONDS`` window of each (from
   ``WINDOW_START_SECONDS``: intros are often silence) at 44.1 kHz stereo and write it losslessly (FLAC): the
   *originals*, i.e. the catalog. For the first ``--queries`` of them write the *variants* with PyAV: mp3 128 and
   320 kb/s, Opus 48 and 96 kb/s, AAC 128 kb/s, a 22.05 kHz resampling (soxr, FLAC) and an excerpt of half the
   window (FLAC).
2. ``taggram backfill`` of the originals and of the variants, per model (the real CLI, resumable).
3. ``taggram index build`` of the originals per model (exact: the figures are about the embedding, not the ANN).
4. Evaluate: every variant's mean embedding, normalised with the index's mean, searched among the originals:
   recall@1, recall@10, margin (score of its original − best score of any other track). Duplicate detection:
   positives are (variant, its original) scores, negatives each original's best score against any *other*
   original (distinct recordings) and each variant's best score against other originals. The threshold is
   calibrated on the even-numbered query tracks and the precision/recall reported on the odd-numbered ones.

Run (CPU-bound; the originals are 30-s windows to keep it bounded on a shared machine)::

    PYTHONPATH=$PWD python bench/similar_music.py --corpus /work/corpus/corpus.csv --work /tmp/simmusic \
        --tracks 110 --queries 30 --query-limit-other 10
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import soxr

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from service.backfill import read_output  # noqa: E402
from service.similar import artefact  # noqa: E402
from service.similar.search import open_searcher  # noqa: E402
from tests.audio_factory import encode_audio  # noqa: E402  (the project's PyAV encoders)

RATE_HZ = 44_100
WINDOW_START_SECONDS = 20.0
# A 30-s window stands for "the track" and a 15-s excerpt of it for "a 30-s excerpt of a 60-s track": the CPU is
# shared by several agents, and inference cost is linear in audio seconds (the figures are per window, see the doc).
WINDOW_SECONDS = 30.0
EXCERPT_START_SECONDS = 7.5  # within the window
EXCERPT_SECONDS = 15.0
RESAMPLE_HZ = 22_050
# name → (format, bit rate); None = lossless FLAC of a transformed signal
VARIANTS = {"mp3-128": ("mp3", 128_000), "mp3-320": ("mp3", 320_000), "opus-48": ("opus", 48_000),
            "opus-96": ("opus", 96_000), "aac-128": ("m4a", 128_000), "resample-22k": ("flac", None),
            "excerpt-half": ("flac", None)}
EXTENSIONS = {"mp3": ".mp3", "opus": ".opus", "m4a": ".m4a", "flac": ".flac"}
MODELS = ("msd-musicnn", "msd-vgg", "mtt-musicnn", "mtt-vgg")


def decode_window(path: str, start: float, seconds: float) -> np.ndarray:
    """float32 [2, n] at RATE_HZ: [start, start + seconds) of the file."""
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=RATE_HZ)
    need = int((start + seconds) * RATE_HZ)
    chunks, total = [], 0
    with av.open(path, metadata_errors="ignore") as container:  # some game files carry latin-1 tags
        for frame in container.decode(container.streams.audio[0]):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
                total += chunks[-1].shape[1]
            if total >= need:
                break
    return np.concatenate(chunks, axis=1)[:, int(start * RATE_HZ):need].astype(np.float32)


def variant_bytes(name: str, window: np.ndarray) -> bytes:
    fmt, bit_rate = VARIANTS[name]
    if name == "resample-22k":
        return encode_audio(soxr.resample(window.T, RATE_HZ, RESAMPLE_HZ, quality="HQ").T.astype(np.float32),
                            RESAMPLE_HZ, "flac")
    if name == "excerpt-half":
        start = int(EXCERPT_START_SECONDS * RATE_HZ)
        return encode_audio(window[:, start:start + int(EXCERPT_SECONDS * RATE_HZ)], RATE_HZ, "flac")
    return encode_audio(window, RATE_HZ, fmt, bit_rate=bit_rate)


def pick_tracks(corpus: Path, seed: int = 13) -> list[dict]:
    """Every long enough track, in a seeded random order (the caller takes as many as decode)."""
    rows = [r for r in csv.DictReader(corpus.open()) if float(r.get("duration_seconds") or 0)
            >= WINDOW_START_SECONDS + WINDOW_SECONDS + 1]
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in order]


def prepare(args) -> None:
    originals, variants = args.work / "originals", args.work / "variants"
    if (args.work / "originals.csv").exists():
        return
    originals.mkdir(parents=True, exist_ok=True)
    variants.mkdir(parents=True, exist_ok=True)
    catalog, queries = [], []
    for row in pick_tracks(args.corpus):
        if len(catalog) == args.tracks:
            break
        i = len(catalog)
        try:
            window = decode_window(row["path"], WINDOW_START_SECONDS, WINDOW_SECONDS)
        except (av.error.FFmpegError, ValueError) as error:  # skipped, and said so: the next track takes its place
            print(f"skipped {row['track_id']}: {error}", file=sys.stderr, flush=True)
            continue
        safe = row["track_id"].replace("/", "__")
        path = originals / f"{safe}.flac"
        if not path.exists():  # resume: a re-run re-decodes but does not re-encode
            path.write_bytes(encode_audio(window, RATE_HZ, "flac"))
        catalog.append({"track_id": row["track_id"], "path": str(path), "artist_id": row["artist"],
                        "title": row["title"], "query_index": i if i < args.queries else ""})
        if i < args.queries:
            for name, (fmt, _) in VARIANTS.items():
                vpath = variants / f"{safe}.{name}{EXTENSIONS[fmt]}"
                if not vpath.exists():
                    vpath.write_bytes(variant_bytes(name, window))
                queries.append({"track_id": f"{row['track_id']}#{name}", "path": str(vpath),
                                "original": row["track_id"], "variant": name, "query_index": i})
        print(f"prepared {i + 1}: {row['track_id']}", file=sys.stderr, flush=True)
    write_csv(args.work / "queries.csv", queries)
    write_csv(args.work / "originals.csv", catalog)  # last: marks the step done


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def taggram(*args) -> None:
    subprocess.run([sys.executable, "-m", "service", *map(str, args)], cwd=REPO_ROOT, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def limited_queries(args, model: str) -> Path:
    """The query CSV for a model: every query track for the first model, --query-limit-other for the others."""
    limit = args.queries if model == args.models[0] else args.query_limit_other
    path = args.work / f"queries-{limit}.csv"
    if not path.exists():
        rows = [r for r in csv.DictReader((args.work / "queries.csv").open()) if int(r["query_index"]) < limit]
        write_csv(path, rows)
    return path


def run_model(args, model: str) -> None:
    common = ["--model", model, "--models-dir", REPO_ROOT / "models", "--progress", "log", "--progress-seconds", "60"]
    taggram("backfill", args.work / "originals.csv", "--out", args.work / model / "originals", *common)
    taggram("backfill", limited_queries(args, model), "--out", args.work / model / "variants", *common)
    if not (args.work / model / "index" / f"{model}.json").exists():
        taggram("index", "build", args.work / model / "originals", "--output", args.work / model / "index",
                "--backend", "exact", "--artists", args.work / "originals.csv")


def evaluate(args, model: str) -> dict:
    index_dir = args.work / model / "index"
    manifest = artefact.read_manifest(index_dir / f"{model}.json")
    searcher = open_searcher(manifest.library, index_dir / manifest.files.vectors)
    import pyarrow.parquet as pq

    ids = pq.read_table(index_dir / manifest.files.tracks).column("track_id").to_pylist()
    row_of = {t: i for i, t in enumerate(ids)}
    catalog = np.asarray(searcher.vectors)
    queries = read_output(args.work / model / "variants").to_pylist()
    meta = {r["track_id"]: r for r in csv.DictReader((args.work / "queries.csv").open())}
    results = []
    for q in queries:
        info = meta[q["track_id"]]
        vector = artefact.normalise(np.asarray(q["embedding"], np.float32), manifest.mean)[0]
        scores = catalog @ vector
        own = row_of[info["original"]]
        order = np.argsort(-scores)
        others = np.delete(scores, own)
        results.append({"variant": info["variant"], "query_index": int(info["query_index"]),
                        "rank": int(np.where(order == own)[0][0]) + 1, "own": float(scores[own]),
                        "best_other": float(others.max())})
    # distinct recordings: every original's best score against any other original
    gram = catalog @ catalog.T
    np.fill_diagonal(gram, -np.inf)
    originals_best_other = gram.max(axis=1)
    return {"model": model, "queries": results, "originals_best_other": originals_best_other.tolist(),
            "catalog": len(ids)}


def calibrate(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Threshold on the calibration half: midway between the highest negative and the lowest positive when they
    separate (no false positive, every duplicate found); otherwise the value maximising F1."""
    if negatives.max() < positives.min():
        return float((negatives.max() + positives.min()) / 2)
    candidates = np.unique(np.concatenate([positives, negatives]))
    f1 = [(2 * (positives >= t).sum() / ((positives >= t).sum() + (negatives >= t).sum() + len(positives)), t)
          for t in candidates]
    return float(max(f1)[1])


def summarise(result: dict, threshold: float | None = None, limit: int | None = None) -> dict:
    """Figures over the queries (only the first ``limit`` query tracks when given: the models' common subset)."""
    qs = [q for q in result["queries"] if limit is None or q["query_index"] < limit]
    half = {"cal": [q for q in qs if q["query_index"] % 2 == 0], "eval": [q for q in qs if q["query_index"] % 2 == 1]}
    neg_originals = np.asarray(result["originals_best_other"])

    def pos_neg(subset):
        return np.asarray([q["own"] for q in subset]), np.concatenate([[q["best_other"] for q in subset], neg_originals])

    if threshold is None:
        threshold = calibrate(*pos_neg(half["cal"]))
    pos, neg = pos_neg(half["eval"])
    tp, fp = int((pos >= threshold).sum()), int((neg >= threshold).sum())
    per_variant = {}
    for name in VARIANTS:
        sub = [q for q in qs if q["variant"] == name]
        if sub:
            per_variant[name] = {"n": len(sub), "recall_at_1": np.mean([q["rank"] == 1 for q in sub]),
                                 "recall_at_10": np.mean([q["rank"] <= 10 for q in sub]),
                                 "margin_min": min(q["own"] - q["best_other"] for q in sub),
                                 "margin_median": float(np.median([q["own"] - q["best_other"] for q in sub])),
                                 "own_min": min(q["own"] for q in sub)}
    return {"model": result["model"], "catalog": result["catalog"], "queries": len(qs),
            "recall_at_1": float(np.mean([q["rank"] == 1 for q in qs])),
            "recall_at_10": float(np.mean([q["rank"] <= 10 for q in qs])),
            "margin_min": float(min(q["own"] - q["best_other"] for q in qs)),
            "margin_median": float(np.median([q["own"] - q["best_other"] for q in qs])),
            "threshold": threshold, "precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / len(pos) if len(pos) else float("nan"),
            "eval_positives": len(pos), "eval_negatives": len(neg), "false_positives": fp,
            "max_distinct": float(neg_originals.max()), "per_variant": per_variant}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/work/corpus/corpus.csv"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/simmusic"))
    parser.add_argument("--tracks", type=int, default=160)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--query-limit-other", type=int, default=30, help="query tracks for the models after the first")
    parser.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS))
    parser.add_argument("--steps", default="prepare,run,evaluate")
    args = parser.parse_args(argv)
    steps = args.steps.split(",")
    if "prepare" in steps:
        prepare(args)
    summaries = []
    for model in args.models:
        if "run" in steps:
            run_model(args, model)
        if "evaluate" in steps and (args.work / model / "index" / f"{model}.json").exists():
            result = evaluate(args, model)
            summaries.append(summarise(result))
            summaries.append({**summarise(result, limit=args.query_limit_other), "subset": args.query_limit_other})
            for summary in summaries[-2:]:
                print(json.dumps({k: v for k, v in summary.items() if k != "per_variant"}, default=float), flush=True)
    if summaries:
        (args.work / "summary.json").write_text(json.dumps(summaries, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
