"""`taggram train-head BACKFILL_OUT LABELS --name NAME --output DIR`: compare candidate heads by grouped
cross-validation, fit the best on everything, export it with its manifest.

Selection: the candidate with the best macro PR-AUC on out-of-fold probabilities (ties: macro ROC-AUC), every
candidate scored on the same folds. The manifest records every candidate's figures, not only the winner's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from head_training import candidates as cand
from head_training.dataset import DEFAULT_MIN_ARTISTS, DEFAULT_MIN_EXAMPLES, Dataset, load
from head_training.export import sha256_bytes, write_artefact
from head_training.folds import DEFAULT_FOLDS, assert_disjoint, grouped_folds, primary_class
from head_training.labels import LabelError, read_labels
from head_training.metrics import evaluate
from service.engine.cpus import usable_cpus
from service.logs import configure_logging
from service.offline.arguments import positive_int
from service.offline.codes import EXIT_OK, EXIT_USAGE

log = logging.getLogger("taggram.train_head")

DEFAULT_SEED = 0
DEFAULT_JOBS = usable_cpus()  # the fits are CPU-bound, one BLAS thread each (candidates._fit_logreg)
NAME_PATTERN = "^[a-z0-9][a-z0-9._-]*$"  # as model names: a file stem and a URL query value


def out_of_fold(
    candidate: cand.Candidate, data: Dataset, folds, seed: int, calibrate: bool = True, jobs: int = 1
) -> np.ndarray:
    """Track-level probabilities [tracks, classes], each from a head that never saw that track's group."""
    groups = np.asarray(data.groups)
    oof = np.zeros(data.targets.shape, np.float32)
    for train, test in folds:
        x, y, g = cand.training_matrix(candidate, train, data.pooled, data.segments, data.targets, groups)
        head = cand.fit(candidate, x, y, g, seed, calibrate, jobs)
        segments = [data.segments[i] for i in test] if data.segments is not None else None
        oof[test] = head.track_scores(data.pooled[test], segments)
    return oof


def available(data: Dataset, names: list[str]) -> list[cand.Candidate]:
    chosen = [cand.CANDIDATES[n] for n in names]
    return [c for c in chosen if not c.uses_segments or data.segments is not None]


def select(data: Dataset, names: list[str], n_folds: int, seed: int, jobs: int = 1):
    folds = grouped_folds(data.groups, n_folds, seed, primary_class(data.targets))
    assert_disjoint(data.groups, folds)
    scored = {}
    for candidate in available(data, names):
        started = time.perf_counter()
        oof = out_of_fold(candidate, data, folds, seed, jobs=jobs)
        scored[candidate.name] = evaluate(data.targets, oof, data.classes)
        scored[candidate.name]["cv_seconds"] = round(time.perf_counter() - started, 2)
        log.info("%s: %s", candidate.name, scored[candidate.name]["macro"])
    best = max(scored, key=lambda n: (scored[n]["macro"]["pr_auc"] or 0, scored[n]["macro"]["roc_auc"] or 0))
    return cand.CANDIDATES[best], scored, folds


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for package in ("scikit-learn", "numpy", "onnx"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def build_manifest(data: Dataset, labels, chosen: cand.Candidate, scored: dict, folds, args) -> dict:
    return {
        "kind": "head",
        "classes": data.classes,
        "hierarchy": labels.hierarchy,
        "base_model": {
            "name": data.model,
            "onnx_sha256": data.onnx_sha256,
            "precision": data.precision,
            "embedding_output": "embedding",
            "embedding_dim": data.embedding_dim,
        },
        "pooling": chosen.pooling,
        "head_type": chosen.name,
        "calibration": "platt, per class, fitted on inner grouped out-of-fold scores of the training set",
        "metrics": {
            "cv": scored[chosen.name],
            "folds": len(folds),
            "grouped_by": data.grouped_by,
            "tracks": len(data.track_ids),
            "candidates": {k: v["macro"] for k, v in scored.items()},
            "selection": "best macro PR-AUC on out-of-fold probabilities",
        },
        "training": {
            "labels_file": str(labels.path),
            "labels_sha256": sha256_bytes(labels.path.read_bytes()),
            "embeddings_digest": data.embeddings_digest,
            "backfill": str(args.backfill_out),
            "seed": args.seed,
            "min_examples": args.min_examples,
            "min_artists": args.min_artists,
        },
        "warnings": data.warnings,
        "versions": _versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def build_parser() -> argparse.ArgumentParser:
    from service.config import Settings

    settings = Settings()
    p = argparse.ArgumentParser(prog="taggram train-head", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "backfill_out",
        type=Path,
        help="a `taggram backfill` output directory (--segment-embeddings also compares per-segment training)",
    )
    p.add_argument(
        "labels",
        type=Path,
        help="labels .csv/.jsonl: track_id, subgenres (';'-separated), optional artist_id and genre",
    )
    p.add_argument("--name", required=True, help="head name (file stem, and the API's ?taxonomy= value)")
    p.add_argument("--output", type=Path, required=True, help="directory for NAME.onnx + NAME.json")
    p.add_argument("--hierarchy", type=Path, default=None, help="JSON {genre: [subgenre, ...]}")
    p.add_argument(
        "--models-dir",
        type=Path,
        default=settings.models_dir,
        help="the base model's manifest is checked against the embeddings (default: %(default)s)",
    )
    p.add_argument("--model", default=None, help="expected base model (default: the backfill's)")
    p.add_argument(
        "--candidates",
        default=",".join(cand.CANDIDATES),
        help="comma-separated candidate heads to compare (default: %(default)s)",
    )
    p.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="grouped CV folds (default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=DEFAULT_JOBS,
        help="classes fitted side by side, one core each (default: the CPU count, %(default)s)",
    )
    p.add_argument("--min-examples", type=int, default=DEFAULT_MIN_EXAMPLES)
    p.add_argument("--min-artists", type=int, default=DEFAULT_MIN_ARTISTS)
    return p


def base_model_sha(models_dir: Path, backfill_out: Path) -> tuple[str, str]:
    from service.artefacts.manifest import ModelFileError, load_manifest

    name = json.loads((backfill_out / "_backfill.json").read_text())["model"]
    try:
        manifest = load_manifest(models_dir / f"{name}.json")
    except ModelFileError as error:
        raise LabelError(f"base model {name!r}: {error}") from None
    return manifest.name, manifest.onnx.sha256


def run(args: argparse.Namespace) -> dict:
    import re

    if not re.match(NAME_PATTERN, args.name):
        raise LabelError(f"--name {args.name!r} must match {NAME_PATTERN}")
    unknown = [n for n in args.candidates.split(",") if n not in cand.CANDIDATES]
    if unknown:
        raise LabelError(f"unknown candidates {unknown}; choose from {list(cand.CANDIDATES)}")
    try:
        model, sha = base_model_sha(args.models_dir, args.backfill_out)
    except OSError as error:
        raise LabelError(f"{args.backfill_out} is not a backfill output directory ({error})") from None
    if args.model is not None and args.model != model:
        raise LabelError(f"{args.backfill_out} holds embeddings of model {model!r}, not {args.model!r}")
    labels = read_labels(args.labels, args.hierarchy)
    data = load(
        args.backfill_out,
        labels,
        expected_model=model,
        expected_sha256=sha,
        min_examples=args.min_examples,
        min_artists=args.min_artists,
    )
    for warning in data.warnings:
        log.warning("%s", warning)
    chosen, scored, folds = select(data, args.candidates.split(","), args.folds, args.seed, args.jobs)
    x, y, g = cand.training_matrix(
        chosen, np.arange(len(data.track_ids)), data.pooled, data.segments, data.targets, np.asarray(data.groups)
    )
    head = cand.fit(chosen, x, y, g, args.seed, jobs=args.jobs)
    manifest = build_manifest(data, labels, chosen, scored, folds, args)
    onnx_path, json_path = write_artefact(head, args.name, args.output, manifest)
    return {
        "head": args.name,
        "chosen": chosen.name,
        "onnx": str(onnx_path),
        "manifest": str(json_path),
        "classes": len(data.classes),
        "tracks": len(data.track_ids),
        "grouped_by": data.grouped_by,
        "candidates": {k: v["macro"] for k, v in scored.items()},
        "warnings": len(data.warnings),
    }


def main(argv: list[str] | None = None) -> int:
    configure_logging("info")
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except LabelError as error:
        log.error("%s", error)
        return EXIT_USAGE
    print(json.dumps(summary), flush=True)
    return EXIT_OK
