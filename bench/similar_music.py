"""The embedding as a product: do re-encodings, resamplings and excerpts of a real track find it again?

Steps (each skipped when its output exists, so an interrupted run resumes):

1. ``prepare``: from a corpus CSV (track_id, path, artist, title, duration_seconds; /work/corpus/corpus.csv),
   pick ``--tracks`` tracks of ``MIN_TRACK_SECONDS``-``MAX_TRACK_SECONDS`` (seeded shuffle). The corpus files
   themselves are the *originals*, i.e. the catalog: whole tracks, as the platform holds them. For the first
   ``--queries`` of them, decode the whole track at 44.1 kHz stereo and write the *variants* with PyAV: mp3 128
   and 320 kb/s, Opus 48 and 96 kb/s, AAC 128 kb/s and a 22.05 kHz resampling (soxr, FLAC) of the whole track,
   and a ``EXCERPT_SECONDS`` excerpt from the middle of the track (FLAC).
2. ``taggram backfill`` of the originals and of the variants, per model (the real CLI, resumable).
3. ``taggram index build`` of the originals per model (exact: the figures are about the embedding, not the ANN).
4. Evaluate: every variant's mean embedding, normalised with the index's mean, searched among the originals:
   recall@1, recall@10, margin (score of its original − best score of any other track). Duplicate detection:
   positives are (variant, its original) scores, negatives each original's best score against any *other*
   original (distinct recordings) and each variant's best score against other originals. The threshold is
   calibrated on the even-numbered query tracks and the precision/recall reported on the odd-numbered ones, at
   the calibrated threshold and at the one the service ships (``CALIBRATED_DUPLICATE_THRESHOLDS``).

Run (CPU-bound: ≈ 11 000 patches per model for 110 tracks of 60-180 s and 30 query tracks)::

    PYTHONPATH=$PWD python bench/similar_music.py --corpus /work/corpus/corpus.csv --work /tmp/simmusic-full \
        --tracks 110 --queries 30 --query-limit-other 30

Writes docs/similar.md, "Is the embedding fit for it? Real music" and "Duplicate threshold" (by hand).
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

# E402: these imports need the repo root on sys.path (set above), as this file also runs as a script.
from service.artefacts.similar import artefact  # noqa: E402 - see above
from service.artefacts.similar.search import open_searcher  # noqa: E402 - see above
from service.offline.backfill import read_output  # noqa: E402 - see above
from service.offline.index_build import (  # noqa: E402 - see above
    CALIBRATED_DUPLICATE_THRESHOLDS,
    DEFAULT_DUPLICATE_THRESHOLD,
)
from tests.support.audio_factory import encode_audio  # noqa: E402 - see above (the project's PyAV encoders)

RATE_HZ = 44_100
# Whole tracks of this length: ≥ 60 s so that the 30-s excerpt is at most half of the track (an excerpt of a track,
# not the track), ≤ 180 s to bound the CPU on a shared machine (inference cost is linear in audio seconds).
MIN_TRACK_SECONDS = 60.0
MAX_TRACK_SECONDS = 180.0
EXCERPT_SECONDS = 30.0  # from the middle of the track: "a 30-s excerpt of the track" (issue #13), e.g. a preview
RESAMPLE_HZ = 22_050
# name → (format, bit rate); None = lossless FLAC of a transformed signal
VARIANTS = {
    "mp3-128": ("mp3", 128_000),
    "mp3-320": ("mp3", 320_000),
    "opus-48": ("opus", 48_000),
    "opus-96": ("opus", 96_000),
    "aac-128": ("m4a", 128_000),
    "resample-22k": ("flac", None),
    "excerpt-30s": ("flac", None),
}
EXTENSIONS = {"mp3": ".mp3", "opus": ".opus", "m4a": ".m4a", "flac": ".flac"}
MODELS = ("msd-musicnn", "msd-vgg", "mtt-musicnn", "mtt-vgg")


def decode_track(path: str) -> np.ndarray:
    """The whole file as float32 [channels, n] at RATE_HZ, in the file's own channel layout: upmixing a mono file to
    stereo would lower each channel by 3 dB (FFmpeg's centre mix level), and the service's downmix would then see a
    quieter copy, not a re-encoding."""
    chunks = []
    with av.open(path, metadata_errors="ignore") as container:  # some game files carry latin-1 tags
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=RATE_HZ)
        for frame in container.decode(stream):
            chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray() for out in resampler.resample(None))  # the resampler's tail
    return np.concatenate(chunks, axis=1).astype(np.float32)


def excerpt(track: np.ndarray) -> np.ndarray:
    """EXCERPT_SECONDS from the middle of the track."""
    length = int(EXCERPT_SECONDS * RATE_HZ)
    start = max(0, (track.shape[1] - length) // 2)
    return track[:, start : start + length]


def variant_bytes(name: str, track: np.ndarray) -> bytes:
    fmt, bit_rate = VARIANTS[name]
    if name == "resample-22k":
        return encode_audio(
            soxr.resample(track.T, RATE_HZ, RESAMPLE_HZ, quality="HQ").T.astype(np.float32), RESAMPLE_HZ, "flac"
        )
    if name == "excerpt-30s":
        return encode_audio(excerpt(track), RATE_HZ, "flac")
    return encode_audio(track, RATE_HZ, fmt, bit_rate=bit_rate)


def pick_tracks(corpus: Path, seed: int = 13) -> list[dict]:
    """Every track of a fitting length, in a seeded random order (the caller takes as many as decode)."""
    rows = [
        r
        for r in csv.DictReader(corpus.open())
        if MIN_TRACK_SECONDS <= float(r.get("duration_seconds") or 0) <= MAX_TRACK_SECONDS
    ]
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in order]


def prepare(args) -> None:
    variants = args.work / "variants"
    if (args.work / "originals.csv").exists():
        return
    variants.mkdir(parents=True, exist_ok=True)
    catalog, queries = [], []
    for row in pick_tracks(args.corpus):
        if len(catalog) == args.tracks:
            break
        i = len(catalog)
        safe = row["track_id"].replace("/", "__")
        if i < args.queries:
            try:
                track = decode_track(row["path"])
            except (av.error.FFmpegError, ValueError) as error:  # skipped, and said so: the next track takes its place
                print(f"skipped {row['track_id']}: {error}", file=sys.stderr, flush=True)
                continue
            for name, (fmt, _) in VARIANTS.items():
                vpath = variants / f"{safe}.{name}{EXTENSIONS[fmt]}"
                if not vpath.exists():  # resume: a re-run re-decodes but does not re-encode
                    vpath.write_bytes(variant_bytes(name, track))
                queries.append(
                    {
                        "track_id": f"{row['track_id']}#{name}",
                        "path": str(vpath),
                        "original": row["track_id"],
                        "variant": name,
                        "query_index": i,
                    }
                )
        catalog.append(
            {
                "track_id": row["track_id"],
                "path": row["path"],
                "artist_id": row["artist"],
                "title": row["title"],
                "query_index": i if i < args.queries else "",
            }
        )
        print(f"prepared {i + 1}: {row['track_id']}", file=sys.stderr, flush=True)
    write_csv(args.work / "queries.csv", queries)
    write_csv(args.work / "originals.csv", catalog)  # last: marks the step done


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def taggram(*args) -> None:
    subprocess.run(
        [sys.executable, "-m", "service", *map(str, args)],
        cwd=REPO_ROOT,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


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
    if args.intra_op_threads:
        common += ["--intra-op-threads", args.intra_op_threads]
    taggram("backfill", args.work / "originals.csv", "--out", args.work / model / "originals", *common)
    taggram("backfill", limited_queries(args, model), "--out", args.work / model / "variants", *common)
    if not (args.work / model / "index" / f"{model}.json").exists():
        taggram(
            "index",
            "build",
            args.work / model / "originals",
            "--output",
            args.work / model / "index",
            "--backend",
            "exact",
            "--artists",
            args.work / "originals.csv",
        )


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
        results.append(
            {
                "variant": info["variant"],
                "query_index": int(info["query_index"]),
                "rank": int(np.where(order == own)[0][0]) + 1,
                "own": float(scores[own]),
                "best_other": float(others.max()),
            }
        )
    # distinct recordings: every original's best score against any other original
    gram = catalog @ catalog.T
    np.fill_diagonal(gram, -np.inf)
    originals_best_other = gram.max(axis=1)
    return {
        "model": model,
        "queries": results,
        "originals_best_other": originals_best_other.tolist(),
        "catalog": len(ids),
    }


def calibrate(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Threshold on the calibration half: midway between the highest negative and the lowest positive when they
    separate (no false positive, every duplicate found); otherwise the value maximising F1."""
    if negatives.max() < positives.min():
        return float((negatives.max() + positives.min()) / 2)
    candidates = np.unique(np.concatenate([positives, negatives]))
    f1 = [
        (2 * (positives >= t).sum() / ((positives >= t).sum() + (negatives >= t).sum() + len(positives)), t)
        for t in candidates
    ]
    return float(max(f1)[1])


def summarise(result: dict, threshold: float | None = None, limit: int | None = None) -> dict:
    """Figures over the queries (only the first ``limit`` query tracks when given). Ranking figures count every
    query; duplicate figures count the held-out (odd-numbered) query tracks only, at ``threshold`` (default: the
    one calibrated on the even-numbered ones)."""
    qs = [q for q in result["queries"] if limit is None or q["query_index"] < limit]
    half = {"cal": [q for q in qs if q["query_index"] % 2 == 0], "eval": [q for q in qs if q["query_index"] % 2 == 1]}
    neg_originals = np.asarray(result["originals_best_other"])

    def pos_neg(subset):
        return np.asarray([q["own"] for q in subset]), np.concatenate(
            [[q["best_other"] for q in subset], neg_originals]
        )

    calibrated = calibrate(*pos_neg(half["cal"]))
    threshold = calibrated if threshold is None else threshold
    pos, neg = pos_neg(half["eval"])
    tp, fp = int((pos >= threshold).sum()), int((neg >= threshold).sum())
    per_variant = {}
    for name in VARIANTS:
        sub = [q for q in qs if q["variant"] == name]
        held = [q for q in half["eval"] if q["variant"] == name]
        if sub:
            found = sum(q["own"] >= threshold for q in held)
            wrong = sum(q["best_other"] >= threshold for q in held)  # would flag another track as its duplicate
            per_variant[name] = {
                "n": len(sub),
                "recall_at_1": float(np.mean([q["rank"] == 1 for q in sub])),
                "recall_at_10": float(np.mean([q["rank"] <= 10 for q in sub])),
                "margin_min": min(q["own"] - q["best_other"] for q in sub),
                "margin_median": float(np.median([q["own"] - q["best_other"] for q in sub])),
                "own_min": min(q["own"] for q in sub),
                "held_out": len(held),
                "duplicate_recall": found / len(held) if held else float("nan"),
                "duplicate_precision": found / (found + wrong) if found + wrong else 1.0,
                "false_positives": int(wrong),
            }
    return {
        "model": result["model"],
        "catalog": result["catalog"],
        "query_tracks": len({q["query_index"] for q in qs}),
        "queries": len(qs),
        "recall_at_1": float(np.mean([q["rank"] == 1 for q in qs])),
        "recall_at_10": float(np.mean([q["rank"] <= 10 for q in qs])),
        "margin_min": float(min(q["own"] - q["best_other"] for q in qs)),
        "margin_median": float(np.median([q["own"] - q["best_other"] for q in qs])),
        "calibrated": calibrated,
        "threshold": threshold,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / len(pos) if len(pos) else float("nan"),
        "eval_positives": len(pos),
        "eval_negatives": len(neg),
        "false_positives": fp,
        "max_distinct": float(neg_originals.max()),
        "per_variant": per_variant,
    }


def markdown(summaries: list[dict]) -> str:
    """The tables of docs/similar.md: one row per model, then one row per model and variant."""
    lines = [
        "| model | threshold | query tracks | queries | recall@1 | recall@10 | margin min | margin median | "
        "precision | recall | held-out positives / negatives | max score, distinct tracks |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s['model']} | {s['label']} {s['threshold']:.4f} | {s['query_tracks']} | {s['queries']} | "
            f"{s['recall_at_1']:.3f} | {s['recall_at_10']:.3f} | {s['margin_min']:.3f} | "
            f"{s['margin_median']:.3f} | {s['precision']:.3f} ({s['false_positives']} FP) | {s['recall']:.3f} | "
            f"{s['eval_positives']} / {s['eval_negatives']} | {s['max_distinct']:.4f} |"
        )
    lines += [
        "",
        "| model | variant | n | recall@1 | recall@10 | lowest score to its original | margin min | "
        "margin median | duplicate recall (held out) | duplicate precision (held out) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        if s["label"] != "shipped":
            continue
        for name, v in s["per_variant"].items():
            lines.append(
                f"| {s['model']} | {name} | {v['n']} | {v['recall_at_1']:.3f} | {v['recall_at_10']:.3f} | "
                f"{v['own_min']:.4f} | {v['margin_min']:.3f} | {v['margin_median']:.3f} | "
                f"{v['duplicate_recall']:.3f} of {v['held_out']} | {v['duplicate_precision']:.3f} "
                f"({v['false_positives']} FP) |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/work/corpus/corpus.csv"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/simmusic"))
    parser.add_argument("--tracks", type=int, default=110)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--query-limit-other", type=int, default=30, help="query tracks for the models after the first")
    parser.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS))
    parser.add_argument("--steps", default="prepare,run,evaluate")
    parser.add_argument("--intra-op-threads", type=int, help="the backfill's ONNX Runtime threads (default: its own)")
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
            limit = min(args.queries, args.query_limit_other)  # the query tracks every model has
            shipped = CALIBRATED_DUPLICATE_THRESHOLDS.get(model, DEFAULT_DUPLICATE_THRESHOLD)
            for label, threshold in (("calibrated", None), ("shipped", shipped)):
                summaries.append({**summarise(result, threshold, limit), "label": label})
                print(
                    json.dumps({k: v for k, v in summaries[-1].items() if k != "per_variant"}, default=float),
                    flush=True,
                )
    if summaries:
        (args.work / "summary.json").write_text(json.dumps(summaries, indent=1, default=float))
        print(markdown(summaries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
