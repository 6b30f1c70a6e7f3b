"""Which ~30 s window stands for the whole track (issue #23): three definitions measured on a real backfill.

Definitions (windows of ``window_segments`` consecutive segments, service/engine/representative.py):

- ``embedding``: the window whose mean embedding has the highest cosine with the track's mean embedding (shipped);
- ``tags``: the window whose mean tag scores have the highest cosine with the track's mean tag scores;
- ``middle``: the fixed window in the middle of the track (the baseline).

For every track longer than one window, how well the window's mean agrees with the whole track's:

- ``top5``: share of the track's 5 highest mean tags among the window's 5 highest;
- ``subgenre@1``: the window's best subgenre (the model's shipped taxonomy) is the track's;
- ``tag cos`` / ``emb cos``: cosine of the window's mean tag scores / mean embedding with the track's (each is what one
  definition maximises, so each favours its own definition: read the other columns to choose);
- ``finds track@1``: the window's mean embedding, normalised as the index normalises queries, has the whole track as
  its nearest among every track's mean (the window used as a query for ``/similar``).

Needs ``taggram backfill --taggram --segment-embeddings``. Run::

    flock /tmp/taggram-bench.lock .venv/bin/python -m bench.studies.representative /tmp/corpus-seg
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from service.artefacts.manifest import load_manifest
from service.artefacts.similar import artefact
from service.artefacts.taxonomy import load_taxonomy, subgenre_scores
from service.engine.representative import Window, closest_window, middle_window, segments_per_window, window_means
from service.offline.catalog_build import backfill_labels

DEFINITIONS = ("embedding", "tags", "middle")
TOP_TAGS = 5


def per_track(table, column: str) -> list[np.ndarray]:
    values = table.column(column).combine_chunks()
    offsets = values.offsets.to_numpy()
    inner = values.flatten()
    flat = inner.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, inner.type.list_size)
    offsets = offsets - offsets[0]
    return [flat[a:b] for a, b in itertools.pairwise(offsets)]


def choose(definition: str, tags: np.ndarray, embedding: np.ndarray, count: int) -> Window:
    if definition == "embedding":
        return closest_window(embedding, count)
    if definition == "tags":
        return closest_window(tags, count)
    return middle_window(len(tags), count)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main(argv: list[str] | None = None) -> int:
    from service.offline.backfill import read_output

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backfill", type=Path)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    table = read_output(args.backfill)
    if table is None or "taggram" not in table.column_names or "segment_embeddings" not in table.column_names:
        raise SystemExit(f"{args.backfill}: needs results with taggram and segment_embeddings")
    labels = backfill_labels(table)
    model = table.column("model")[0].as_py()
    taxonomy = load_taxonomy(model, labels, None)
    manifest = load_manifest(args.models_dir / f"{model}.json")
    hop_seconds = table.column("hop_samples")[0].as_py() / manifest.sample_rate
    count = segments_per_window(hop_seconds, manifest.patch_samples / manifest.sample_rate)
    tags, embeddings = per_track(table, "taggram"), per_track(table, "segment_embeddings")
    means = np.stack([e.astype(np.float64).mean(axis=0) for e in embeddings]).astype(np.float32)
    catalog, mean = artefact.normalise_catalog(means)
    rows = {d: {"top5": [], "subgenre@1": [], "tag cos": [], "emb cos": [], "finds track@1": []} for d in DEFINITIONS}
    used = 0
    for track, (t, e) in enumerate(zip(tags, embeddings)):
        if len(t) <= count:
            continue  # the whole track is its own representative under every definition
        used += 1
        whole_tags = t.astype(np.float64).mean(axis=0)
        track_top = set(np.argsort(-whole_tags)[:TOP_TAGS].tolist())
        track_subgenre = int(np.argmax(subgenre_scores(taxonomy, whole_tags)))
        for definition in DEFINITIONS:
            w = choose(definition, t, e, count)
            window_tags = window_means(t, w.count)[w.first]
            window_embedding = window_means(e, w.count)[w.first]
            r = rows[definition]
            r["top5"].append(len(track_top & set(np.argsort(-window_tags)[:TOP_TAGS].tolist())) / TOP_TAGS)
            r["subgenre@1"].append(int(np.argmax(subgenre_scores(taxonomy, window_tags))) == track_subgenre)
            r["tag cos"].append(cosine(window_tags, whole_tags))
            r["emb cos"].append(cosine(window_embedding, e.astype(np.float64).mean(axis=0)))
            query = artefact.normalise(window_embedding.astype(np.float32), mean)[0]
            r["finds track@1"].append(int(np.argmax(catalog @ query)) == track)
    summary = {d: {k: float(np.mean(v)) for k, v in r.items()} for d, r in rows.items()}
    print(f"{used} tracks longer than one window ({count} segments at a {hop_seconds:.2f} s hop) of {len(tags)}")
    print("| definition | " + " | ".join(rows["middle"]) + " |")
    print("|---|" + "---:|" * len(rows["middle"]))
    for d, values in summary.items():
        print(f"| {d} | " + " | ".join(f"{v:.3f}" for v in values.values()) + " |")
    if args.json:
        args.json.write_text(json.dumps({"tracks": used, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
