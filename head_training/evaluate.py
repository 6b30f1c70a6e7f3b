"""Trained heads against the tag-taxonomy baseline, on the same grouped folds (docs/heads.md).

    python -m head_training.evaluate BACKFILL_OUT LABELS --tag-map MAP.json [--out RESULTS.json]

MAP.json maps every class of the labels to base-model tags (``{"class": ["tag", ...]}``), exactly like a tag
taxonomy. Scored out of fold, each track by models that never saw its artist:

* every head candidate (head_training.candidates), calibrated as ``train-head`` does;
* ``tags-raw``: a class's score is the highest mean tag probability among its tags (what kind "tags" serves);
* ``tags-percentile``: each tag's score replaced by its percentile among the *training* tracks' scores for that
  tag (the catalog calibration of docs/heads.md), then the highest among the class's tags;
* ``tags-platt``: ``tags-raw`` passed through a per-class Platt scaling fitted on the training tracks (the same
  calibration the heads get), so its calibration error is comparable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from head_training import candidates as cand
from head_training.dataset import Dataset, load
from head_training.folds import DEFAULT_FOLDS, assert_disjoint, grouped_folds, primary_class
from head_training.labels import LabelError, read_labels
from head_training.metrics import evaluate
from head_training.train import DEFAULT_JOBS, available, out_of_fold
from service.offline.arguments import positive_int
from service.offline.codes import EXIT_OK, EXIT_USAGE


def class_tag_indices(data: Dataset, tag_map: dict[str, list[str]]) -> list[list[int]]:
    index = {t: i for i, t in enumerate(data.tag_labels)}
    missing = [c for c in data.classes if not tag_map.get(c)]
    unknown = sorted({t for tags in tag_map.values() for t in tags if t not in index})
    if missing or unknown:
        raise LabelError(f"tag map: classes without tags {missing}, tags the model does not have {unknown}")
    return [[index[t] for t in tag_map[c]] for c in data.classes]


def percentiles(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per column, the fraction of reference rows at or below each value (the empirical CDF)."""
    out = np.empty(values.shape, np.float64)
    for j in range(values.shape[1]):
        ref = np.sort(reference[:, j])
        out[:, j] = np.searchsorted(ref, values[:, j], side="right") / len(ref)
    return out


def tag_baselines(data: Dataset, tag_idx: list[list[int]], folds) -> dict[str, np.ndarray]:
    def by_class(scores: np.ndarray) -> np.ndarray:
        return np.stack([scores[:, idx].max(axis=1) for idx in tag_idx], axis=1)

    raw = by_class(data.tag_scores.astype(np.float64))
    percentile = np.zeros(raw.shape)
    platt = np.zeros(raw.shape)
    for train, test in folds:
        percentile[test] = by_class(percentiles(data.tag_scores[train], data.tag_scores[test]))
        logits = np.log(np.clip(raw, 1e-6, 1 - 1e-6) / np.clip(1 - raw, 1e-6, 1))
        slope, offset = cand._platt(logits[train], np.ones(logits[train].shape, bool), data.targets[train].astype(int))
        platt[test] = 1 / (1 + np.exp(-(slope * logits[test] + offset)))
    return {"tags-raw": raw, "tags-percentile": percentile, "tags-platt": platt}


def run(args) -> dict:
    labels = read_labels(args.labels)
    data = load(args.backfill_out, labels, min_examples=args.min_examples, min_artists=args.min_artists)
    tag_idx = class_tag_indices(data, json.loads(args.tag_map.read_text()))
    folds = grouped_folds(data.groups, args.folds, args.seed, primary_class(data.targets))
    assert_disjoint(data.groups, folds)
    results = {}
    for candidate in available(data, args.candidates.split(",")):
        oof = out_of_fold(candidate, data, folds, args.seed, jobs=args.jobs)
        results[candidate.name] = evaluate(data.targets, oof, data.classes)
        print(candidate.name, results[candidate.name]["macro"], file=sys.stderr, flush=True)
    for name, scores in tag_baselines(data, tag_idx, folds).items():
        results[name] = evaluate(data.targets, scores, data.classes)
    top1 = {name: np.argmax(scores, axis=1) for name, scores in tag_baselines(data, tag_idx, folds).items()}
    return {
        "tracks": len(data.track_ids),
        "classes": data.classes,
        "grouped_by": data.grouped_by,
        "groups": len(set(data.groups)),
        "folds": len(folds),
        "warnings": data.warnings,
        "class_counts": dict(zip(data.classes, data.targets.sum(axis=0).tolist())),
        "distinct_top1": {k: len(set(v.tolist())) for k, v in top1.items()},
        "results": results,
    }


def markdown(summary: dict) -> str:
    lines = ["| scorer | macro ROC-AUC | macro PR-AUC | top-1 | top-3 | ECE |", "|---|---|---|---|---|---|"]
    for name, r in summary["results"].items():
        m = r["macro"]
        lines.append(f"| {name} | {m['roc_auc']} | {m['pr_auc']} | {m['top1']} | {m['top3']} | {m['ece']} |")
    lines += [
        "",
        "| class | n | " + " | ".join(f"{n} PR-AUC" for n in summary["results"]) + " |",
        "|---|---|" + "---|" * len(summary["results"]),
    ]
    for cls in summary["classes"]:
        cells = [str(summary["results"][n]["per_class"][cls]["pr_auc"]) for n in summary["results"]]
        lines.append(f"| {cls} | {summary['class_counts'][cls]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m head_training.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("backfill_out", type=Path)
    p.add_argument("labels", type=Path)
    p.add_argument("--tag-map", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--candidates", default=",".join(cand.CANDIDATES))
    p.add_argument("--folds", type=int, default=DEFAULT_FOLDS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--jobs", type=positive_int, default=DEFAULT_JOBS, help="classes fitted side by side (default: %(default)s)"
    )
    p.add_argument("--min-examples", type=int, default=5)
    p.add_argument("--min-artists", type=int, default=2)
    args = p.parse_args(argv)
    try:
        summary = run(args)
    except LabelError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))
    print(markdown(summary))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
