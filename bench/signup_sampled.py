"""``bench.signup sampled-agreement``: the early answer against the complete one with real sampling, for the default
the form gets (the platform taxonomy over msd-musicnn and mtt-musicnn), msd-musicnn's tag taxonomy and, with
``--head``, a trained head of msd-musicnn (issue #22's proof; ``head-agreement`` measured the head from a backfill's
segments instead).

Per track (``pick_tracks``: 2–10 minutes, a quarter each of Ogg Vorbis, Opus, mp3 and m4a): the whole track decoded
and every default-hop patch inferred by both models (the complete analyses), then N patches sampled by seeking
(``service.decode.sample``, as the service's early answer reaches them) and inferred by both. Each ranking ranks both
analyses exactly as the service does (``PlatformTaxonomy.rank``, ``Taxonomy.rank``, ``LoadedHead.rank`` over
``Analysis`` records). Agreement only (top-1 the same; overlap of the top 5, or of the top 3 for a head of 5 classes):
no times, so the machine's load does not matter.
"""

from __future__ import annotations

import io
import sys

import numpy as np

from bench import common
from bench.signup import MAX_SECONDS, SAMPLE_SIZES, TOP_K, geometry, infer_outputs, load, pick_tracks
from bench.signup_heads import HEAD_TOP
from service.artefacts.heads import load_head
from service.artefacts.platform import load_platform
from service.decode import decode
from service.decode.sample import sample_track
from service.engine.analysis import Analysis
from service.engine.patch import patch_track, spread_patch_offsets

MODELS = ("msd-musicnn", "mtt-musicnn")


def analyse(model, patches: np.ndarray, duration_seconds: float) -> Analysis:
    outputs = infer_outputs(model, patches)
    g = geometry(model)
    return Analysis(
        duration_seconds=duration_seconds,
        sample_rate=g.sample_rate,
        patch_samples=g.covered_samples,
        hop_samples=g.patch_frames * g.frame_hop,
        tags=outputs["tags"].astype(np.float32),
        embedding=outputs["embedding"].astype(np.float32),
    )


def run_sampled_agreement(args) -> str:
    models, _ = load(",".join(MODELS))
    first = models[MODELS[0]]
    g = geometry(first)
    platform = load_platform({name: model.taxonomy for name, model in models.items()}, None)
    head = load_head(args.head, models) if args.head else None
    rankings = {
        f"platform ({'+'.join(platform.models)})": (lambda a, k: platform.rank(a, k), TOP_K),
        f"{MODELS[0]} tags": (lambda a, k: first.taxonomy.rank(a[MODELS[0]], k), TOP_K),
    }
    if head is not None:
        rankings[f"head {head.name}"] = (lambda a, k: head.rank(a[MODELS[0]], k), HEAD_TOP)
    agree = {(name, n): [] for name in rankings for n in SAMPLE_SIZES}
    tracks = pick_tracks(args.tracks)
    for fmt, path in tracks:
        data = path.read_bytes()
        track = decode(io.BytesIO(data), max_seconds=MAX_SECONDS + 60).samples
        seconds = len(track) / g.sample_rate
        patches = np.asarray(patch_track(track, g, g.patch_frames))
        whole = {name: analyse(model, patches, seconds) for name, model in models.items()}
        for n in SAMPLE_SIZES:
            sample = sample_track(
                io.BytesIO(data),
                lambda length, n=n: spread_patch_offsets(length, g, n),
                g.patch_samples,
                max_seconds=MAX_SECONDS + 60,
            )
            regions = np.stack(sample.regions)
            early = {name: analyse(model, regions, seconds) for name, model in models.items()}
            for name, (rank, k) in rankings.items():
                full = [s for s, _ in rank(whole, k)]
                ranked = [s for s, _ in rank(early, k)]
                agree[(name, n)].append((ranked[0] == full[0], len(set(ranked) & set(full)) / len(full)))
        print(fmt, path.name, f"{seconds / 60:.1f} min", file=sys.stderr)
    formats = ", ".join(f"{fmt} {sum(1 for f, _ in tracks if f == fmt)}" for fmt in dict.fromkeys(f for f, _ in tracks))
    table = [
        [
            name,
            n,
            f"{np.mean([a[0] for a in agree[(name, n)]]):.2f}",
            f"{np.mean([a[1] for a in agree[(name, n)]]):.2f}",
        ]
        for name in rankings
        for n in SAMPLE_SIZES
    ]
    return "\n\n".join(
        [
            f"### Early vs complete answer with real sampling ({len(tracks)} tracks of 2–10 min)",
            "\n".join(common.environment_lines(["bench.signup", *sys.argv[1:]])),
            f"- tracks: {formats}"
            + (
                f"; head: `{args.head}` ({', '.join(head.manifest.classes)}; pooling {head.manifest.pooling})"
                if head
                else ""
            ),
            f"- overlap: of the top {TOP_K} (a head: top {HEAD_TOP})",
            common.markdown_table(["ranking", "N patches", "top-1 same", "top-k overlap"], table),
        ]
    )
