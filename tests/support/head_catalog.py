"""Test helper: a small generated catalog with known classes, its labels file, and its backfill.

Three classes of distinct timbre and tempo, three 'artists' each (every artist its own pitch, tempo and seed), three
tracks per artist: a head trained on it must separate the classes on artists it never saw.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from service.offline import backfill
from tests.support.audio_factory import encode_audio

RATE_HZ = 16_000
TRACK_SECONDS = 6.5  # two whole patches of 2.99 s
ARTISTS_PER_CLASS = 3
TRACKS_PER_ARTIST = 3
MODEL = "msd-musicnn"


def _drone(seconds: float, artist: int, track: int) -> np.ndarray:
    """Low sustained chords: 80-140 Hz roots with a fifth and an octave."""
    t = np.arange(int(seconds * RATE_HZ)) / RATE_HZ
    root = 80 + 20 * artist + 3 * track
    return 0.2 * sum(np.sin(2 * np.pi * f * t) for f in (root, root * 1.5, root * 2))


def _pulses(seconds: float, artist: int, track: int) -> np.ndarray:
    """High beeps gated at 2-4 per second."""
    t = np.arange(int(seconds * RATE_HZ)) / RATE_HZ
    rate = 2 + artist * 0.7 + track * 0.1
    gate = (np.sin(2 * np.pi * rate * t) > 0.3).astype(np.float64)
    return 0.4 * gate * np.sin(2 * np.pi * (1500 + 400 * artist + 50 * track) * t)


def _noise_beats(seconds: float, artist: int, track: int) -> np.ndarray:
    """Broadband noise hits (drum-like decays) at 100-160 beats per minute."""
    rng = np.random.default_rng(100 * artist + track)
    n = int(seconds * RATE_HZ)
    beat = int(RATE_HZ * 60 / (100 + 20 * artist + 5 * track))
    envelope = np.exp(-np.arange(n) % beat / (0.05 * RATE_HZ))
    return 0.5 * envelope * rng.standard_normal(n)


CLASSES = {"drone": _drone, "pulses": _pulses, "noise-beats": _noise_beats}


def make_catalog(root: Path) -> tuple[Path, Path]:
    """Audio files under root/audio and root/labels.csv; returns (audio dir, labels path)."""
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rows = []
    for cls, make in CLASSES.items():
        for artist in range(ARTISTS_PER_CLASS):
            for track in range(TRACKS_PER_ARTIST):
                track_id = f"{cls}-a{artist}-t{track}.wav"
                samples = np.clip(make(TRACK_SECONDS, artist, track), -1, 1).astype(np.float32)[None, :]
                (audio / track_id).write_bytes(encode_audio(samples, RATE_HZ, "wav"))
                rows.append(
                    {
                        "track_id": track_id,
                        "subgenres": cls,
                        "artist_id": f"{cls}-artist-{artist}",
                        "genre": "synthetic",
                    }
                )
    labels = root / "labels.csv"
    with labels.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["track_id", "subgenres", "artist_id", "genre"])
        writer.writeheader()
        writer.writerows(rows)
    return audio, labels


def backfill_one_worker(source: Path, out: Path, models_dir: Path, *extra: str) -> int:
    """``taggram backfill`` in this process with MODEL, one worker and log progress; its exit code."""
    arguments = [str(source), "--out", str(out), "--models-dir", str(models_dir), "--model", MODEL]
    return backfill.main([*arguments, "--workers", "1", "--progress", "log", *extra])


def run_backfill(audio: Path, out: Path, models_dir: Path) -> None:
    code = backfill_one_worker(audio, out, models_dir, "--segment-embeddings")
    assert code == 0, f"backfill exited {code}"
