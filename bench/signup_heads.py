"""``bench.signup head-agreement``: a trained head's early answer against its complete one (issue #22's proof).

An early answer's patches are the complete analysis's own (``engine.patch.spread_patch_offsets`` picks N of the
default-hop patches; the sampled regions equal the full decode's: docs/signup.md), so the early answer of a track is
the complete analysis restricted to those N segments. A default-hop ``taggram backfill --segment-embeddings`` holds
every segment's embedding and tag scores: per track (2–10 minutes), the head ranks from all segments (complete) and
from the N spread ones (early), exactly as ``LoadedHead.rank`` does, and the tag taxonomy likewise (a check against
``bench.signup agreement``, which measured it with real sampling). No inference runs: agreement only, no times.
The head is trained separately (``taggram train-head``: docs/signup.md gives the commands).
"""

from __future__ import annotations

import sys

import numpy as np
import pyarrow.parquet as pq

from bench import common
from bench.signup import MAX_SECONDS, MIN_SECONDS, SAMPLE_SIZES, TOP_K, geometry, load
from service.artefacts.heads import load_head
from service.artefacts.taxonomy import suggest
from service.engine.patch import patch_starts, spread_patch_offsets

HEAD_TOP = 3  # a head of 5 classes: a top-5 overlap would always be 1


def spread_indices(num_samples: int, g, n: int) -> list[int]:
    """Which of the complete analysis's segments the early answer's N patches are."""
    step = g.frame_hop * g.patch_frames
    return [(offset + g.context_samples) // step for offset in spread_patch_offsets(num_samples, g, n)]


def run_head_agreement(args) -> str:
    models, _ = load(args.model)
    model = models[args.model]
    head = load_head(args.head, models)
    g = geometry(model)
    tracks = pq.read_table(args.backfill / "results").to_pylist()
    tracks = [t for t in tracks if MIN_SECONDS <= t["duration_seconds"] <= MAX_SECONDS]
    agree = {(kind, n): [] for kind in ("head", "tags") for n in SAMPLE_SIZES}
    for track in tracks:
        num_samples = round(track["duration_seconds"] * g.sample_rate)
        if len(patch_starts(num_samples, g, g.patch_frames)) != track["segments"]:
            raise SystemExit(f"{track['track_id']}: the backfill's segments are not the default hop's")
        embeddings = np.asarray(track["segment_embeddings"], np.float32)
        tags = np.asarray(track["taggram"], np.float32)
        full = {"head": rank_head(head, embeddings, HEAD_TOP), "tags": rank_tags(model, tags)}
        for n in SAMPLE_SIZES:
            pick = spread_indices(num_samples, g, n)
            early = {"head": rank_head(head, embeddings[pick], HEAD_TOP), "tags": rank_tags(model, tags[pick])}
            for kind, ranked in early.items():
                top = len(full[kind])
                agree[(kind, n)].append((ranked[0] == full[kind][0], len(set(ranked) & set(full[kind])) / top))
    rows = [
        [n, *(f"{np.mean([a[i] for a in agree[(kind, n)]]):.2f}" for kind in ("head", "tags") for i in (0, 1))]
        for n in SAMPLE_SIZES
    ]
    return "\n\n".join(
        [
            f"### A trained head's agreement against N ({head.name} on {args.model}, {len(tracks)} tracks)",
            "\n".join(common.environment_lines(["bench.signup", *sys.argv[1:]])),
            f"- backfill: `{args.backfill}` (default hop, segment embeddings); head: `{args.head}` "
            f"({len(head.manifest.classes)} classes: {', '.join(head.manifest.classes)}; pooling "
            f"{head.manifest.pooling})",
            common.markdown_table(
                [
                    "N patches",
                    "head top-1 same",
                    f"head top-{HEAD_TOP} overlap",
                    "tags top-1 same",
                    f"tags top-{TOP_K} overlap",
                ],
                rows,
            ),
        ]
    )


def rank_head(head, embeddings: np.ndarray, k: int) -> list[str]:
    scores = head.track_scores(embeddings)
    return [head.manifest.classes[i] for i in np.argsort(-scores, kind="stable")[:k]]


def rank_tags(model, tags: np.ndarray) -> list[str]:
    mean = tags.astype(np.float64).mean(axis=0).astype(np.float32)
    return [s for s, _ in suggest(model.taxonomy, mean, TOP_K)]
