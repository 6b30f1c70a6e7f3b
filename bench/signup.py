"""The sign-up form's early answer (issue #22): how many spread patches, at what cost, and which default taxonomy.

    flock /tmp/taggram-bench.lock env PYTHONPATH=$PWD .venv/bin/python -m bench.signup agreement --tracks 20
    flock /tmp/taggram-bench.lock env PYTHONPATH=$PWD .venv/bin/python -m bench.signup quality
    flock /tmp/taggram-bench.lock env PYTHONPATH=$PWD .venv/bin/python -m bench.signup http --tracks 12
    PYTHONPATH=$PWD .venv/bin/python -m bench.signup head-agreement --backfill BF --head HEADS/NAME.json
    PYTHONPATH=$PWD .venv/bin/python -m bench.signup sampled-agreement --tracks 20 [--head HEADS/NAME.json]
    PYTHONPATH=$PWD .venv/bin/python -m bench.signup mpeg-scan          # the truncation check on every corpus file

``agreement``: real corpus tracks of 2–10 minutes in four formats (the corpus's Ogg Vorbis, Opus and mp3 files, and
m4a re-encoded from Ogg with PyAV). Per track, in one run and interleaved: the complete analysis (the whole decode,
every default-hop patch) and, for each N, the sampled one (``service.decode.sample`` seeks to N patches spread by
``engine.patch.spread_patch_offsets``, then inference on those N). Agreement of the sampled answer with the complete
one for the model's tag taxonomy and its calibrated taxonomy (top-1 same, top-5 overlap), and the time of each.
``quality``: the labelled corpus tracks, each analysed from the chosen N spread patches by every model: per
candidate taxonomy, macro PR-AUC / top-1 / top-3 hit rate on the corpus's 5 classes and distinct top-1 subgenres.
``http``: the service's answer time, early vs ``?complete=true`` (bench/signup_http.py); ``head-agreement``: a
trained head's early answer against its complete one, from a backfill (bench/signup_heads.py);
``sampled-agreement``: the default (platform), msd-musicnn's tags and a head, early vs complete with real sampling
(bench/signup_sampled.py).
Sections go to docs/signup.md (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench import common
from corpus.music import transcode
from service.artefacts.tag_calibration import load_calibration
from service.artefacts.taxonomy import suggest
from service.config import Precision, Settings
from service.decode import decode
from service.decode.integrity import check_integrity
from service.decode.sample import sample_track
from service.engine.patch import PatchGeometry, patch_track, spread_patch_offsets

REPORT = common.REPO_ROOT / "docs" / "signup.md"
CORPUS_CSV = Path("/work/corpus/corpus.csv")
MIN_SECONDS, MAX_SECONDS = 120.0, 600.0  # the 2–10 minutes
SAMPLE_SIZES = (4, 8, 12, 16, 24)
TOP_K = 5
BATCH = 16  # patches per inference call
TRANSCODE_DIR = common.REPO_ROOT / ".cache" / "signup-m4a"


def geometry(model) -> PatchGeometry:
    m = model.manifest
    return PatchGeometry(m.sample_rate, m.patch_samples, m.patch_frames, m.frame_hop)


def infer_outputs(model, patches: np.ndarray) -> dict[str, np.ndarray]:
    """Every served output (tags, embedding) of the patches, BATCH at a time."""
    runs = [model.runner.run(np.ascontiguousarray(patches[i : i + BATCH])) for i in range(0, len(patches), BATCH)]
    return {name: np.concatenate([run[name] for run in runs]) for name in runs[0]}


def infer(model, patches: np.ndarray) -> np.ndarray:
    return infer_outputs(model, patches)["tags"]


def load(models: str, **settings: object):
    """The models as the service loads them, fp32 as bench.common's service runs (``settings``: more Settings)."""
    from service.artefacts.registry import load_models

    loaded = load_models(
        Settings(
            models_dir=common.MODELS_DIR,
            models=models,
            default_model=models.split(",")[0],
            inference_workers=1,
            precision=Precision.FP32,
            **settings,
        )
    )
    return loaded, {name: load_calibration(model, None) for name, model in loaded.items()}


def corpus_rows() -> list[dict]:
    with CORPUS_CSV.open() as f:
        return list(csv.DictReader(f))


def transcode_m4a(source: Path) -> Path:
    """An m4a (AAC 160 kbit/s, ``corpus.music.TRANSCODES``) of ``source``, made once with PyAV's native AAC encoder."""
    target = TRANSCODE_DIR / (source.stem + ".m4a")
    if not target.exists():
        TRANSCODE_DIR.mkdir(parents=True, exist_ok=True)
        transcode(source, target, "m4a")
    return target


def pick_tracks(count: int) -> list[tuple[str, Path]]:
    """(format, path): a quarter each of Ogg Vorbis, Opus, mp3 and m4a, spread over packages, 2–10 minutes."""
    rows = [r for r in corpus_rows() if MIN_SECONDS <= float(r["duration_seconds"]) <= MAX_SECONDS]
    by_codec = {c: [r for r in rows if r["codec"].startswith(c)] for c in ("vorbis", "opus", "mp3")}
    per = count // 4
    chosen: list[tuple[str, Path]] = []
    for fmt, codec in (("ogg", "vorbis"), ("opus", "opus"), ("mp3", "mp3")):
        pool = sorted(by_codec[codec], key=lambda r: (r["package"], r["track_id"]))
        step = max(len(pool) // per, 1)
        chosen += [(fmt, Path(r["path"])) for r in pool[::step][:per]]
    vorbis = sorted(by_codec["vorbis"], key=lambda r: r["track_id"])
    chosen += [
        ("m4a", transcode_m4a(Path(r["path"]))) for r in vorbis[1 :: max(len(vorbis) // per, 1)][: count - len(chosen)]
    ]
    return chosen


def complete(model, data: bytes) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    track = decode(io.BytesIO(data), max_seconds=MAX_SECONDS + 60).samples
    tags = infer(model, np.asarray(patch_track(track, geometry(model), geometry(model).patch_frames)))
    return tags, time.perf_counter() - started


def sampled(model, data: bytes, n: int) -> tuple[np.ndarray, float, bool]:
    started = time.perf_counter()
    g = geometry(model)
    sample = sample_track(
        io.BytesIO(data),
        lambda length: spread_patch_offsets(length, g, n),
        g.patch_samples,
        max_seconds=MAX_SECONDS + 60,
    )
    tags = infer(model, np.stack(sample.regions))
    return tags, time.perf_counter() - started, sample.seeked


def ranking(model, calibrated, tags: np.ndarray) -> dict[str, list[str]]:
    mean = tags.astype(np.float64).mean(axis=0).astype(np.float32)
    found = {"tags": [s for s, _ in suggest(model.taxonomy, mean, TOP_K)]}
    if calibrated is not None:
        found["calibrated"] = [s for s, _ in calibrated.suggest(mean, TOP_K)]
    return found


def run_agreement(args) -> str:
    models, calibrations = load(args.model)
    model, calibrated = models[args.model], calibrations[args.model]
    tracks = pick_tracks(args.tracks)
    rows, times = [], {"complete": [], **{n: [] for n in SAMPLE_SIZES}}
    agree = {(kind, n): [] for kind in ("tags", "calibrated") for n in SAMPLE_SIZES}
    for fmt, path in tracks:
        data = path.read_bytes()
        full_tags, full_seconds = complete(model, data)
        full = ranking(model, calibrated, full_tags)
        minutes = len(full_tags) * geometry(model).covered_samples / geometry(model).sample_rate / 60
        times["complete"].append((fmt, minutes, full_seconds))
        for n in SAMPLE_SIZES:
            tags, seconds, seeked = sampled(model, data, n)
            times[n].append((fmt, minutes, seconds))
            for kind, early in ranking(model, calibrated, tags).items():
                agree[(kind, n)].append((early[0] == full[kind][0], len(set(early) & set(full[kind])) / TOP_K))
        rows.append(
            [
                fmt,
                path.name,
                f"{minutes:.1f}",
                f"{full_seconds:.2f}",
                f"{times[12][-1][2]:.2f}" if 12 in SAMPLE_SIZES else "",
                "yes" if seeked else "no",
            ]
        )
        print(rows[-1], file=sys.stderr)
    curve = []
    for n in SAMPLE_SIZES:
        ratio = [s / c for (_, _, s), (_, _, c) in zip(times[n], times["complete"])]
        cells = [n]
        for kind in ("tags", "calibrated"):
            hits = agree[(kind, n)]
            cells += [f"{np.mean([h[0] for h in hits]):.2f}", f"{np.mean([h[1] for h in hits]):.2f}"]
        cells += [f"{statistics.median(s for _, _, s in times[n]):.2f}", f"{statistics.median(ratio):.2f}"]
        curve.append(cells)
    per_format = []
    for fmt in ("ogg", "opus", "mp3", "m4a"):
        pairs = [(c, s) for (f, _, c), (_, _, s) in zip(times["complete"], times[12]) if f == fmt]
        if pairs:
            per_format.append(
                [
                    fmt,
                    len(pairs),
                    f"{statistics.median(c for c, _ in pairs):.2f}",
                    f"{statistics.median(s for _, s in pairs):.2f}",
                ]
            )
    return "\n\n".join(
        [
            f"### Agreement and time against N ({args.model}, {len(tracks)} tracks)",
            "\n".join(common.environment_lines(["bench.signup", *sys.argv[1:]])),
            common.markdown_table(
                [
                    "N patches",
                    "tags top-1 same",
                    "tags top-5 overlap",
                    "calibrated top-1 same",
                    "calibrated top-5 overlap",
                    "time p50 (s)",
                    "time ÷ complete, p50",
                ],
                curve,
            ),
            "Complete vs N = 12 by format (seconds, p50):",
            common.markdown_table(["format", "tracks", "complete", "N = 12"], per_format),
            "Per track:",
            common.markdown_table(["format", "file", "minutes", "complete (s)", "N = 12 (s)", "seeked"], rows),
        ]
    )


def run_mpeg_scan(args) -> str:
    claims, mp3 = [], []
    for row in corpus_rows():
        data = Path(row["path"]).read_bytes()
        if check_integrity(io.BytesIO(data)).cut_reason:
            claims.append(row["track_id"])
        if row["codec"].startswith("mp3"):
            cuts = [
                check_integrity(io.BytesIO(data[: int(len(data) * f)])).cut_reason is not None
                for f in (0.3, 0.5, 0.9, 0.999)
            ]
            mp3.append([row["track_id"], sum(cuts), len(cuts)])
    return "\n\n".join(
        [
            "### The mp3 truncation check on the corpus",
            "\n".join(common.environment_lines(["bench.signup", *sys.argv[1:]])),
            f"Whole files with a cut claimed: {len(claims)} of {len(corpus_rows())} ({', '.join(claims) or 'none'}).",
            common.markdown_table(["mp3", "cuts warned", "cuts made (30/50/90/99.9 %)"], mp3),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "what", choices=("agreement", "quality", "http", "head-agreement", "sampled-agreement", "mpeg-scan")
    )
    parser.add_argument("--tracks", type=int, default=20)
    parser.add_argument("--model", default=common.DEFAULT_MODEL)
    parser.add_argument("--patches", type=int, default=12, help="quality: spread patches per track")
    parser.add_argument("--port", type=int, default=0, help="http: the service's port (0: a free one)")
    parser.add_argument("--backfill", type=Path, help="head-agreement: a default-hop --segment-embeddings backfill")
    parser.add_argument("--head", type=Path, help="head-agreement, sampled-agreement: the head's manifest (NAME.json)")
    parser.add_argument(
        "--platform", action="store_true", help="http: load mtt-musicnn too (the platform taxonomy's default answer)"
    )
    parser.add_argument(
        "--precision", choices=("fp32", "bf16", "auto"), default="fp32", help="http: the service's TAGGRAM_PRECISION"
    )
    parser.add_argument("--section", help="the report section's name (default: signup-WHAT)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.what == "quality":
        from bench.signup_quality import run_quality

        body = run_quality(args)
    elif args.what == "head-agreement":
        from bench.signup_heads import run_head_agreement

        body = run_head_agreement(args)
    elif args.what == "sampled-agreement":
        from bench.signup_sampled import run_sampled_agreement

        body = run_sampled_agreement(args)
    elif args.what == "http":
        from bench.signup_http import run_http

        body = run_http(args)
    else:
        body = {"agreement": run_agreement, "mpeg-scan": run_mpeg_scan}[args.what](args)
    print(body)
    if not args.no_write:
        common.update_report(args.section or f"signup-{args.what}", body, REPORT)


if __name__ == "__main__":
    main()
