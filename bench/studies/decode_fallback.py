"""The fallback decoder (libsndfile) against the primary one (FFmpeg) on the same real files: speed and agreement.

For every file both decoders read, interleaved per file so machine load hits both alike:

* speed: wall time of each full decode (decode + mono + soxr HQ to 16 kHz: the whole ``service.decode`` chain),
  as seconds of audio decoded per second;
* samples: length difference, max |difference| and SNR of libsndfile's samples against FFmpeg's;
* what the service answers: both sample streams through the same model (patches, ONNX graph, mean pooling) over
  the first ``--analyse-seconds``: max |Δ| of the track-level tag scores, cosine similarity of the mean embeddings,
  and whether the top-5 tags are the same set.

Inputs: a corpus manifest (``/work/corpus/corpus.csv`` as built by ``corpus/build.py``: columns path, codec) or a
folder of audio files; ``--limit`` files, spread over the packages.

Usage: .venv/bin/python -m bench.studies.decode_fallback [--corpus CSV | --folder DIR] [--limit N] [--no-write]
Writes its section into docs/decode.md.

A decision study (a second decoder, and when it may answer): its section is docs/decode.md, "Fallback decoder:
libsndfile against FFmpeg on the same files".
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import REPO_ROOT, environment_lines, markdown_table, update_report
from service.artefacts.registry import load_models
from service.config import Settings
from service.decode import SAMPLE_RATE, decode, sndfile
from service.decode.facts import DecodeFacts
from service.engine.patch import StreamingPatcher

DECODE_DOC = REPO_ROOT / "docs" / "decode.md"
DEFAULT_CORPUS = Path("/work/corpus/corpus.csv")
MAX_SECONDS = 3_600.0
CHUNK_SAMPLES = 10 * SAMPLE_RATE
BATCH_PATCHES = 4
TOP_TAGS = 5


def pick_files(corpus: Path | None, folder: Path | None, limit: int) -> list[Path]:
    """Up to ``limit`` files, round-robin over packages (corpus) or sorted (folder)."""
    if folder is not None:
        return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".ogg", ".flac", ".wav", ".mp3"))[:limit]
    by_package: dict[str, list[Path]] = {}
    with corpus.open() as f:
        for row in csv.DictReader(f):
            by_package.setdefault(row["package"], []).append(Path(row["path"]))
    picked, rounds = [], max(len(v) for v in by_package.values())
    for i in range(rounds):
        for package in sorted(by_package):
            if i < len(by_package[package]) and len(picked) < limit:
                picked.append(by_package[package][i])
    return picked


def timed(fn) -> tuple[object, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def libsndfile_samples(data: bytes) -> np.ndarray:
    return np.concatenate(list(sndfile.decode_chunks(io.BytesIO(data), MAX_SECONDS, CHUNK_SAMPLES, DecodeFacts())))


def analyse(runner, geometry, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Track-level (mean) tag scores and embedding, as the service computes them."""
    patcher = StreamingPatcher(geometry, geometry.hop_frames(None))
    patches = list(patcher.push(samples)) + list(patcher.finish())
    tags, embeddings = [], []
    for start in range(0, len(patches), BATCH_PATCHES):
        out = runner.run(np.stack(patches[start : start + BATCH_PATCHES]))
        tags.append(out["tags"])
        embeddings.append(out["embedding"])
    return np.concatenate(tags).mean(axis=0), np.concatenate(embeddings).mean(axis=0)


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = np.sum((reference.astype(np.float64) - other) ** 2)
    return float("inf") if noise == 0 else 10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / noise)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--analyse-seconds", type=float, default=60.0)
    parser.add_argument("--model", default="msd-musicnn")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    model = load_models(Settings(models_dir=REPO_ROOT / "models", models=args.model))[args.model]
    geometry = model.manifest.geometry
    labels = model.manifest.labels
    rows, ratios, tag_deltas, cosines, same_top = [], [], [], [], 0
    files = pick_files(None if args.folder else args.corpus, args.folder, args.limit)
    for path in files:
        data = path.read_bytes()
        try:
            primary, t_ffmpeg = timed(lambda data=data: decode(io.BytesIO(data), max_seconds=MAX_SECONDS))
            fallback, t_sndfile = timed(lambda data=data: libsndfile_samples(data))
        except Exception as error:  # noqa: BLE001 - a file one decoder cannot read is reported, not compared
            rows.append([path.name, "—", "—", "—", "—", "—", "—", f"skipped: {type(error).__name__}"])
            continue
        reference = primary.samples
        n = min(reference.size, fallback.size)
        window = int(args.analyse_seconds * SAMPLE_RATE)
        tags_a, emb_a = analyse(model.runner, geometry, reference[:window])
        tags_b, emb_b = analyse(model.runner, geometry, fallback[:window])
        delta = float(np.max(np.abs(tags_a - tags_b)))
        cosine = float(emb_a @ emb_b / (np.linalg.norm(emb_a) * np.linalg.norm(emb_b)))
        top_a = {labels[i] for i in np.argsort(-tags_a)[:TOP_TAGS]}
        top_b = {labels[i] for i in np.argsort(-tags_b)[:TOP_TAGS]}
        same_top += top_a == top_b
        seconds = reference.size / SAMPLE_RATE
        ratios.append(t_sndfile / t_ffmpeg)
        tag_deltas.append(delta)
        cosines.append(cosine)
        rows.append(
            [
                f"{path.parent.name}/{path.name}",
                primary.facts.codec,
                f"{seconds:.0f}",
                f"{seconds / t_ffmpeg:.0f}",
                f"{seconds / t_sndfile:.0f}",
                fallback.size - reference.size,
                f"{np.max(np.abs(reference[:n] - fallback[:n])):.1e} / {snr_db(reference[:n], fallback[:n]):.0f} dB",
                f"{delta:.1e} / {cosine:.6f} / {'same' if top_a == top_b else 'differ'}",
            ]
        )
        print(rows[-1], file=sys.stderr, flush=True)

    compared = len(ratios)
    body = "\n".join([
        "### Fallback decoder: libsndfile against FFmpeg on the same files", "",
        *environment_lines(["bench.studies.decode_fallback", *(argv if argv is not None else sys.argv[1:])]), "",
        markdown_table(["file", "codec", "audio s", "FFmpeg ×realtime", "libsndfile ×realtime", "Δ length (samples)",
                        "samples: max abs Δ / SNR", f"{args.model} ({args.analyse_seconds:g} s): max Δtag / emb cos / "
                        f"top-{TOP_TAGS}"], rows),
        "",
        f"{compared} files compared: libsndfile takes **{np.median(ratios):.2f}×** FFmpeg's decode time (median of "
        f"per-file ratios, range {min(ratios):.2f}–{max(ratios):.2f}); track-level tag scores differ by at most "
        f"**{max(tag_deltas):.1e}**, mean-embedding cosine ≥ **{min(cosines):.6f}**, top-{TOP_TAGS} tags the same "
        f"set for {same_top}/{compared} files." if compared else "no file was read by both decoders",
    ])  # fmt: skip
    print(body)
    if not args.no_write:
        update_report("decode_fallback", body, DECODE_DOC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
