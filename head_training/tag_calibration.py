"""Catalog calibration of a tag taxonomy: each tag's score as its percentile over a reference backfill.

    python -m head_training.tag_calibration BACKFILL_OUT --out service/artefacts/taxonomies/MODEL.calibration.json \
        --reference "what the collection is"

Raw tag probabilities carry the base model's training priors (MSD: rock, pop, electronic are frequent, so their
scores run high on everything). A tag's percentile over a reference collection says instead how strongly *this*
track has the tag compared with the catalog. The file stores, per tag, the scores at ``QUANTILE_POINTS`` evenly
spaced quantiles; the service interpolates between them (service/artefacts/tag_calibration.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

QUANTILE_POINTS = 101  # percentiles 0, 1, ..., 100
CALIBRATION_FORMAT = 1


def build(backfill_out: Path, reference: str) -> dict:
    from service.offline.backfill import read_output

    identity = json.loads((backfill_out / "_backfill.json").read_text())
    table = read_output(backfill_out)
    labels = identity["labels"]
    scores = np.asarray(table.column("tag_scores").combine_chunks().flatten().to_numpy(), np.float64)
    scores = scores.reshape(-1, len(labels))
    quantiles = np.quantile(scores, np.linspace(0, 1, QUANTILE_POINTS), axis=0).T  # [labels, points]
    return {
        "format": CALIBRATION_FORMAT,
        "model": identity["model"],
        "onnx_sha256": identity["onnx_sha256"],
        "labels": labels,
        "points": QUANTILE_POINTS,
        "quantiles": [[round(float(v), 7) for v in row] for row in quantiles],
        "reference": {
            "description": reference,
            "tracks": int(scores.shape[0]),
            "hop_samples": identity["hop_samples"],
            "digest": hashlib.sha256(scores.astype(np.float32).tobytes()).hexdigest(),
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def top1_counts(backfill_out: Path, calibration: dict, taxonomy_file: Path) -> dict:
    """Top-1 subgenre of every track of a backfill, raw vs calibrated: {"raw": {subgenre: n}, "calibrated": ...}.
    In-sample when the calibration was built from the same backfill (the shipped case): it measures how the
    ranking spreads over the taxonomy, not whether it is right (head_training/evaluate.py does that out of fold)."""
    from collections import Counter

    from service.offline.backfill import read_output

    taxonomy = json.loads(taxonomy_file.read_text())["subgenres"]
    labels = calibration["labels"]
    index = {t: i for i, t in enumerate(labels)}
    table = read_output(backfill_out)
    scores = np.asarray(table.column("tag_scores").combine_chunks().flatten().to_numpy(), np.float64)
    scores = scores.reshape(-1, len(labels))
    levels = np.linspace(0, 1, calibration["points"])
    quantiles = np.asarray(calibration["quantiles"])
    pct = np.stack([np.interp(scores[:, j], quantiles[j], levels) for j in range(len(labels))], axis=1)
    names = list(taxonomy)
    idx = [[index[t] for t in taxonomy[n]] for n in names]

    def top1(matrix: np.ndarray) -> Counter:
        by_subgenre = np.stack([matrix[:, i].max(axis=1) for i in idx], axis=1)
        return Counter(names[i] for i in np.argmax(by_subgenre, axis=1))

    return {"tracks": len(scores), "raw": dict(top1(scores).most_common()), "calibrated": dict(top1(pct).most_common())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m head_training.tag_calibration", description=__doc__.split("\n\n")[0])
    p.add_argument("backfill_out", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--reference", required=True, help="one line saying what the reference collection is")
    p.add_argument(
        "--taxonomy",
        type=Path,
        default=None,
        help="also print top-1 counts raw vs calibrated for this taxonomy file over the backfill",
    )
    args = p.parse_args(argv)
    document = build(args.backfill_out, args.reference)
    args.out.write_text(json.dumps(document, indent=None, separators=(",", ":")) + "\n")
    print(f"{args.out}: {len(document['labels'])} tags over {document['reference']['tracks']} tracks")
    if args.taxonomy is not None:
        counts = top1_counts(args.backfill_out, document, args.taxonomy)
        print(
            json.dumps(
                {
                    "distinct_top1_raw": len(counts["raw"]),
                    "distinct_top1_calibrated": len(counts["calibrated"]),
                    **counts,
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
