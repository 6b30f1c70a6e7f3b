"""End-to-end agreement: the service's decode (PyAV + mean mono + soxr HQ) vs ``librosa.load``, same model.

Both paths feed the same patching and the same ONNX graph, so every difference comes from decoding. Reported per
file: the largest per-segment tag difference, the mean absolute tag difference, whether the top-5 track tags agree,
and the cosine similarity of the track embeddings.

    .venv/bin/python -m bench.studies.librosa_agreement [--model msd-musicnn] [--formats ogg mp3 m4a]

A decision study (decoding changes no tag that matters): its conclusion is docs/decode.md, "End to end: the same
model's tags from our decode vs `librosa.load`".
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import librosa
import numpy as np

from corpus.music import check_librosa_reads, music_files
from service.artefacts.manifest import load_manifest
from service.config import Settings
from service.decode import SAMPLE_RATE, decode
from service.engine.patch import patch_track
from service.engine.run import batch_policy, load_runner

REPO_ROOT = Path(__file__).resolve().parents[2]
TOP_TAGS = 5


def analyse(samples: np.ndarray, manifest, runner) -> dict[str, np.ndarray]:
    patches = patch_track(samples, manifest.geometry, manifest.default_patch_hop_frames)
    outputs = [runner.run(np.ascontiguousarray(patches[i : i + 16])) for i in range(0, len(patches), 16)]
    return {name: np.concatenate([o[name] for o in outputs]) for name in ("tags", "embedding")}


def compare(path: Path, manifest, runner) -> dict:
    with path.open("rb") as f:
        ours = decode(f, max_seconds=3600).samples
    reference, _ = librosa.load(path, sr=SAMPLE_RATE)
    a, b = analyse(ours, manifest, runner), analyse(reference, manifest, runner)
    segments = min(len(a["tags"]), len(b["tags"]))
    tags_a, tags_b = a["tags"][:segments], b["tags"][:segments]
    mean_a, mean_b = tags_a.mean(axis=0), tags_b.mean(axis=0)
    emb_a, emb_b = a["embedding"][:segments].mean(axis=0), b["embedding"][:segments].mean(axis=0)
    return {
        "file": path.name,
        "seconds": len(reference) / SAMPLE_RATE,
        "length_diff_samples": len(ours) - len(reference),
        "segments": segments,
        "tags_max_abs": float(np.abs(tags_a - tags_b).max()),
        "tags_mean_abs": float(np.abs(tags_a - tags_b).mean()),
        "top5_same": set(np.argsort(-mean_a)[:TOP_TAGS]) == set(np.argsort(-mean_b)[:TOP_TAGS]),
        "embedding_cosine": float(emb_a @ emb_b / (np.linalg.norm(emb_a) * np.linalg.norm(emb_b))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="msd-musicnn")
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--formats", nargs="+", default=["ogg", "mp3", "m4a"])
    args = parser.parse_args()
    check_librosa_reads(tuple(args.formats))
    manifest = load_manifest(args.models_dir / f"{args.model}.json")
    threads = batch_policy(Settings(), on_cuda=False).intra_op_threads  # the service's
    runner = load_runner(args.models_dir / manifest.onnx.file, "cpu", threads)
    rows = [compare(path, manifest, runner) for path in music_files(tuple(args.formats))]
    print(f"librosa {librosa.__version__}, Python {platform.python_version()}, model {args.model}\n")
    print(
        "| file | seconds | length diff (samples) | segments | tags max abs diff | tags mean abs diff "
        "| top-5 tags same | embedding cosine |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for r in rows:
        print(
            f"| {r['file']} | {r['seconds']:.1f} | {r['length_diff_samples']} | {r['segments']} | "
            f"{r['tags_max_abs']:.2e} | {r['tags_mean_abs']:.2e} | {'yes' if r['top5_same'] else 'no'} | "
            f"{r['embedding_cosine']:.6f} |"
        )


if __name__ == "__main__":
    main()
