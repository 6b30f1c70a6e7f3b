"""Do artefacts built on fp32 embeddings hold in bf16? (issue #24 item 3; docs/precision.md). A study: it reads two
backfill outputs of the same tracks, one per precision, and a head trained on the fp32 one.

    taggram backfill TRACKS.csv --out BF32 --model msd-musicnn --segment-embeddings --hop 30 --precision fp32
    taggram backfill TRACKS.csv --out BF16 --model msd-musicnn --segment-embeddings --hop 30 --precision bf16
    taggram train-head BF32 LABELS.csv --name NAME --output HEADS
    .venv/bin/python -m bench.studies.precision_artefacts BF32 BF16 HEADS/NAME.json

1. The head (trained on fp32 embeddings) run as the service runs it (``LoadedHead.track_scores``, its manifest's
   pooling) on each track's fp32 and bf16 segment embeddings: top-1 agreement, max score difference.
2. The duplicate threshold (docs/similar.md) on the tracks' mean embeddings after the index's normalisation: pairs
   at or above the calibrated threshold in each precision, the largest move of a pair's similarity, and how close
   the nearest fp32 pair lies to the threshold (a pair can change side only if it moves by more than that).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.artefacts.heads import HeadManifest, LoadedHead
from service.artefacts.similar.artefact import normalise_catalog
from service.offline.backfill import read_output
from service.offline.index_build import CALIBRATED_DUPLICATE_THRESHOLDS, backfill_precision, embeddings


def segments_by_track(root: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """track_id → [segments, dim] segment embeddings, and track_id → the backfill's mean embedding."""
    table = read_output(root)
    ids = table.column("track_id").to_pylist()
    dim = json.loads((root / "_backfill.json").read_text())["embedding_dim"]
    segments = [np.asarray(v, np.float32).reshape(-1, dim) for v in table.column("segment_embeddings").to_pylist()]
    return dict(zip(ids, segments)), dict(zip(ids, embeddings(table)))


def load_head(manifest_path: Path) -> LoadedHead:
    manifest = HeadManifest.model_validate(json.loads(manifest_path.read_text()))
    session = ort.InferenceSession(str(manifest_path.parent / manifest.onnx.file), providers=["CPUExecutionProvider"])
    return LoadedHead(manifest, session)


def head_agreement(head: LoadedHead, fp32: dict, bf16: dict, ids: list[str]) -> str:
    a = np.stack([head.track_scores(fp32[i]) for i in ids])
    b = np.stack([head.track_scores(bf16[i]) for i in ids])
    top1 = float((a.argmax(1) == b.argmax(1)).mean())
    return (
        f"- head `{head.manifest.name}` ({head.manifest.pooling}, {a.shape[1]} classes, trained on the fp32 "
        f"backfill) on {len(ids)} tracks: top-1 agreement fp32 vs bf16 {top1:.1%}, max score difference "
        f"{np.abs(a - b).max():.4f}, mean {np.abs(a - b).mean():.5f}"
    )


def duplicate_agreement(model: str, fp32: dict, bf16: dict, ids: list[str]) -> str:
    threshold = CALIBRATED_DUPLICATE_THRESHOLDS[model]
    raw = {"fp32": np.stack([fp32[i] for i in ids]), "bf16": np.stack([bf16[i] for i in ids])}
    cos = (raw["fp32"] * raw["bf16"]).sum(1) / (
        np.linalg.norm(raw["fp32"], axis=1) * np.linalg.norm(raw["bf16"], axis=1)
    )
    sims = {k: normalise_catalog(v)[0] @ normalise_catalog(v)[0].T for k, v in raw.items()}
    upper = np.triu_indices(len(ids), 1)
    pairs = {k: set(zip(*np.nonzero(s[upper] >= threshold))) for k, s in sims.items()}
    shared = pairs["fp32"] & pairs["bf16"]
    jaccard = len(shared) / len(pairs["fp32"] | pairs["bf16"]) if pairs["fp32"] | pairs["bf16"] else 1.0
    moved = np.abs(sims["fp32"][upper] - sims["bf16"][upper])
    margin = np.abs(sims["fp32"][upper] - threshold).min()
    return "\n".join(
        [
            f"- {len(ids)} tracks' mean embeddings, fp32 vs bf16: cosine min {cos.min():.6f}, median "
            f"{np.median(cos):.6f}",
            f"- duplicate pairs at {model}'s calibrated threshold {threshold} ({len(upper[0])} pairs, index "
            f"normalisation): fp32 {len(pairs['fp32'])}, bf16 {len(pairs['bf16'])}, shared "
            f"{len(shared)} (Jaccard {jaccard:.2f})",
            f"- a pair's similarity moves by at most {moved.max():.4f} (median {np.median(moved):.5f}); the nearest "
            f"fp32 pair lies {margin:.4f} from the threshold; highest fp32 similarity of two tracks "
            f"{sims['fp32'][upper].max():.4f}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fp32", type=Path, help="backfill output in fp32 (--segment-embeddings)")
    parser.add_argument("bf16", type=Path, help="backfill output of the same tracks in bf16")
    parser.add_argument("head", type=Path, help="a head manifest trained on the fp32 backfill")
    args = parser.parse_args(argv)
    for root, expected in ((args.fp32, "fp32"), (args.bf16, "bf16")):
        if backfill_precision(root) != expected:
            parser.error(f"{root} holds {backfill_precision(root)} embeddings, not {expected}")
    fp32_segments, fp32_mean = segments_by_track(args.fp32)
    bf16_segments, bf16_mean = segments_by_track(args.bf16)
    ids = sorted(set(fp32_segments) & set(bf16_segments))
    model = json.loads((args.fp32 / "_backfill.json").read_text())["model"]
    print(head_agreement(load_head(args.head), fp32_segments, bf16_segments, ids))
    print(duplicate_agreement(model, fp32_mean, bf16_mean, ids))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
