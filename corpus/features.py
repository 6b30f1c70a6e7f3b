"""A listening-proxy sanity check of the corpus labels with a few plain signal features (never the models).

``python -m corpus.features --dest /work/corpus`` loads a 20 s excerpt from the middle of every track in
``DEST/corpus.csv`` (librosa, 22.05 kHz mono), computes five simple features and writes ``DEST/features.csv``; it
then prints the median of each feature per group of tracks (per package, with Kenta Cho's seven games as one group
and Warzone 2100's albums split by composer) so a label can be checked against what the audio does, e.g. an
'electronic' set should show a steady beat and an 'orchestral' one should not. The features confirm or question a
label; they never assign one (docs/corpus.md, "How the labels were decided").
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

SAMPLE_RATE = 22_050  # Hz
EXCERPT_SECONDS = 20.0  # from the middle of the track
HOP = 512  # samples per STFT/onset frame
BEAT_PERIOD_SECONDS = (0.3, 2.0)  # the periodicities a steady beat has (200 to 30 BPM)
BASS_LIMIT_HZ = 150.0

FEATURES = ["flatness", "centroid_hz", "beat_strength", "onset_rate", "rms_cv", "bass_share"]
KENTA_CHO = {
    "parsec47-data",
    "rrootage-data",
    "noiz2sa-data",
    "tumiki-fighters-data",
    "torus-trooper-data",
    "gunroar-data",
    "titanion-data",
}


def features(y: np.ndarray, sr: int) -> dict[str, float]:
    """flatness (noise-likeness: distorted guitars, drums), spectral centroid, beat strength (the highest
    normalised autocorrelation of the onset envelope at beat-like periods), onsets per second, the coefficient of
    variation of frame RMS (dynamics) and the share of spectral magnitude below 150 Hz."""
    import librosa

    spec = np.abs(librosa.stft(y, hop_length=HOP))
    onset_env = librosa.onset.onset_strength(y=y, sr=sr, hop_length=HOP)
    ac = librosa.autocorrelate(onset_env - onset_env.mean())
    ac = ac / (ac[0] + 1e-9)
    lo, hi = (int(s * sr / HOP) for s in BEAT_PERIOD_SECONDS)
    rms = librosa.feature.rms(S=spec)[0]
    freqs = librosa.fft_frequencies(sr=sr, n_fft=2 * (spec.shape[0] - 1))
    onsets = librosa.onset.onset_detect(onset_envelope=onset_env, sr=sr, hop_length=HOP)
    return {
        "flatness": float(np.mean(librosa.feature.spectral_flatness(S=spec))),
        "centroid_hz": float(np.mean(librosa.feature.spectral_centroid(S=spec, sr=sr))),
        "beat_strength": float(ac[lo:hi].max()),
        "onset_rate": len(onsets) / (len(y) / sr),
        "rms_cv": float(rms.std() / (rms.mean() + 1e-9)),
        "bass_share": float(spec[freqs < BASS_LIMIT_HZ].sum() / (spec.sum() + 1e-9)),
    }


def group_of(row: dict[str, str]) -> str:
    if row["package"] in KENTA_CHO:
        return "Kenta Cho (7 games)"
    if row["package"] == "warzone2100-music":
        return f"warzone2100-music: {row['artist']}"
    return row["package"]


def track_features(row: dict[str, str]) -> dict[str, float]:
    import librosa

    offset = max(0.0, float(row["duration_seconds"] or 0) / 2 - EXCERPT_SECONDS / 2)
    y, sr = librosa.load(row["path"], sr=SAMPLE_RATE, mono=True, offset=offset, duration=EXCERPT_SECONDS)
    return features(y, sr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, required=True, help="the corpus directory (holds corpus.csv)")
    args = parser.parse_args(argv)
    with (args.dest / "corpus.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    with (args.dest / "features.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["track_id", "label", *FEATURES])
        writer.writeheader()
        for row in rows:
            found = track_features(row)
            writer.writerow(
                {"track_id": row["track_id"], "label": row["label"], **{k: f"{v:.4f}" for k, v in found.items()}}
            )
            groups[f"{group_of(row)} [{row['label'] or '-'}]"].append(found)
    print(f"{'group [label]':58s} {'n':>3s} " + " ".join(f"{k:>13s}" for k in FEATURES), file=sys.stdout)
    for name, found in sorted(groups.items()):
        medians = [statistics.median(x[k] for x in found) for k in FEATURES]
        print(f"{name:58s} {len(found):3d} " + " ".join(f"{m:13.4f}" for m in medians))


if __name__ == "__main__":
    main()
