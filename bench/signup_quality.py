"""``bench.signup quality``: which taxonomy the sign-up form should get by default (issue #22 item 6).

Every labelled corpus track is sampled once (``--patches`` spread patches, ``service.decode.sample``) and every model
runs on the same regions. Candidates: each model's tag taxonomy, raw and calibrated (its shipped calibration file),
and one platform taxonomy scored from two models together: msd-musicnn's subgenres from msd-musicnn's tags, and the
subgenres only mtt-musicnn can name (Classical, Baroque, Opera, Choral, Techno, New Age, Indian Classical) from
mtt-musicnn's tags. Scored against the corpus's 5 classes through ``CLASS_OF`` (a subgenre → the classes it names;
written knowing the classes, as docs/heads.md's tag map was): macro PR-AUC of the class scores (a class's score is
the highest score among its subgenres), top-1 and top-3 hit rates (a hit when one of the top subgenres names the
track's class), and the distinct top-1 subgenres over those tracks. No fit uses the labels: nothing here needs an
artist-disjoint split (the calibrations' quantiles come from the whole corpus, labels unused: docs/heads.md).
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench import common
from bench.signup import corpus_rows, geometry, infer, load
from service.decode.sample import sample_track
from service.engine.patch import spread_patch_offsets

MODELS = "msd-musicnn,mtt-musicnn,msd-vgg,mtt-vgg"
PRIMARY, SECOND = "msd-musicnn", "mtt-musicnn"
CLASSES = ("electronic", "orchestral", "rock_metal", "chiptune_retro", "ambient")
CLASS_OF = {
    "Electronic": ("electronic",),
    "Electro": ("electronic", "chiptune_retro"),
    "House": ("electronic",),
    "Dance": ("electronic",),
    "Techno": ("electronic",),
    "Classical": ("orchestral",),
    "Baroque": ("orchestral",),
    "Opera": ("orchestral",),
    "Choral": ("orchestral",),
    "Easy Listening": ("orchestral",),
    "Rock": ("rock_metal",),
    "Alternative Rock": ("rock_metal",),
    "Indie Rock": ("rock_metal",),
    "Classic Rock": ("rock_metal",),
    "Hard Rock": ("rock_metal",),
    "Progressive Rock": ("rock_metal",),
    "Punk": ("rock_metal",),
    "Metal": ("rock_metal",),
    "Heavy Metal": ("rock_metal",),
    "Ambient": ("ambient",),
    "Chillout": ("ambient",),
    "New Age": ("ambient",),
}
MAX_SECONDS = 1200.0


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = positive[order]
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float(precision[hits].mean()) if hits.any() else float("nan")


def scores_of(taxonomy, tag_scores: np.ndarray) -> dict[str, float]:
    return {s: float(tag_scores[list(idx)].max()) for s, idx in zip(taxonomy.subgenres, taxonomy.tag_indices)}


def candidates(models, calibrations, means: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Candidate name → subgenre → score, for one track (``means``: model → mean tag scores)."""
    found = {}
    for name, model in models.items():
        found[f"{name} tags"] = scores_of(model.taxonomy, means[name])
        if calibrations[name] is not None:
            found[f"{name} calibrated"] = scores_of(model.taxonomy, calibrations[name].percentiles(means[name]))
    for kind in ("tags", "calibrated"):
        first, second = found.get(f"{PRIMARY} {kind}"), found.get(f"{SECOND} {kind}")
        if first is not None and second is not None:
            found[f"platform {PRIMARY}+{SECOND} {kind}"] = first | {s: v for s, v in second.items() if s not in first}
    return found


def evaluate(per_track: list[dict[str, float]], labels: list[str]) -> list[object]:
    names = list(per_track[0])
    matrix = np.array([[t[s] for s in names] for t in per_track])
    truth = np.array(labels)
    aps = []
    for cls in CLASSES:
        columns = [i for i, s in enumerate(names) if cls in CLASS_OF.get(s, ())]
        if columns:
            aps.append(average_precision(matrix[:, columns].max(axis=1), truth == cls))
        else:
            aps.append(0.0 if (truth == cls).any() else float("nan"))  # a class the taxonomy cannot name
    order = np.argsort(-matrix, axis=1, kind="stable")
    top = [[names[j] for j in row[:3]] for row in order]
    hit1 = np.mean([lab in CLASS_OF.get(t[0], ()) for t, lab in zip(top, labels)])
    hit3 = np.mean([any(lab in CLASS_OF.get(s, ()) for s in t) for t, lab in zip(top, labels)])
    distinct = len({t[0] for t in top})
    return [f"{np.nanmean(aps):.3f}", f"{hit1:.2f}", f"{hit3:.2f}", distinct, len(names)]


def run_quality(args) -> str:
    models, calibrations = load(MODELS)
    rows = [r for r in corpus_rows() if r["label"]]
    g = geometry(models[PRIMARY])
    per_candidate: dict[str, list[dict[str, float]]] = {}
    seconds = {"sample": [], **{name: [] for name in models}}
    for row in rows:
        started = time.perf_counter()
        sample = sample_track(
            io.BytesIO(Path(row["path"]).read_bytes()),
            lambda n: spread_patch_offsets(n, g, args.patches),
            g.patch_samples,
            max_seconds=MAX_SECONDS,
        )
        seconds["sample"].append(time.perf_counter() - started)
        patches = np.stack(sample.regions)
        means = {}
        for name, model in models.items():
            started = time.perf_counter()
            means[name] = infer(model, patches).astype(np.float64).mean(axis=0).astype(np.float32)
            seconds[name].append(time.perf_counter() - started)
        for name, scores in candidates(models, calibrations, means).items():
            per_candidate.setdefault(name, []).append(scores)
    labels = [r["label"] for r in rows]
    table = [[name, *evaluate(tracks, labels)] for name, tracks in per_candidate.items()]
    cost = [[what, f"{statistics.median(v) * 1e3:.0f}"] for what, v in seconds.items()]
    counts = {c: labels.count(c) for c in CLASSES}
    return "\n\n".join(
        [
            f"### Default taxonomy quality ({len(rows)} labelled tracks, {args.patches} spread patches each)",
            "\n".join(common.environment_lines(["bench.signup", *sys.argv[1:]])),
            f"Classes: {', '.join(f'{c} {n}' for c, n in counts.items())}.",
            common.markdown_table(
                ["candidate", "macro PR-AUC", "top-1 hit", "top-3 hit", "distinct top-1", "subgenres"], table
            ),
            f"Cost per track, p50 (ms): sampling {args.patches} patches, then each model's inference on them:",
            common.markdown_table(["step", "ms p50"], cost),
        ]
    )
