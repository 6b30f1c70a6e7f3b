"""The audio bench/fairness.py sends: long uploads (real music looped into WAVs, distinct bytes each) and clips.

Split from bench/fairness.py so the sign-up runs (``--signups``) reuse the long uploads' maker for distinct sign-ups.
"""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np
import soxr

from corpus.music import CACHE_DIR, cut_clip, duration_seconds

LONG_RATE_HZ = 22_050  # long uploads' sample rate: not 16 kHz, so the service resamples as it would for real files
LONG_CHANNELS = 2
CLIP_SECONDS = 30.0
CLIP_OFFSET_STEP_SECONDS = 1.37  # between clips of one track: distinct bytes, not a multiple of a codec frame
LONG_DIR = CACHE_DIR / "long"
# Upload i starts this far into the looped soundtrack. Starting each at a different *track* repeated itself from the
# fourth upload on (the soundtrack has three tracks), and the service computed that upload once for two.
UPLOAD_OFFSET_SECONDS = 41.3


def decode_native(path: Path) -> np.ndarray:
    """A track as float32 [samples, 2] at LONG_RATE_HZ."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="stereo", rate=stream.rate)
        pieces = [
            np.asarray(out.to_ndarray()).reshape(-1, 2)
            for frame in container.decode(stream)
            for out in resampler.resample(frame)
        ]
        rate = stream.rate
    samples = np.concatenate(pieces)
    return soxr.resample(samples, rate, LONG_RATE_HZ).astype(np.float32)


def long_upload(index: int, minutes: float, tracks: list[Path]) -> Path:
    """A WAV of ``minutes`` of real music: the tracks looped, from ``index`` × UPLOAD_OFFSET_SECONDS on (made once,
    cached)."""
    path = LONG_DIR / f"long-{index}-{minutes:g}min-from-{index * UPLOAD_OFFSET_SECONDS:g}s.wav"
    if path.exists():
        return path
    LONG_DIR.mkdir(parents=True, exist_ok=True)
    wanted = int(minutes * 60 * LONG_RATE_HZ)
    partial = path.with_suffix(".partial")
    with wave.open(str(partial), "wb") as out:
        out.setnchannels(LONG_CHANNELS)
        out.setsampwidth(2)
        out.setframerate(LONG_RATE_HZ)
        written, turn, skip = 0, 0, round(index * UPLOAD_OFFSET_SECONDS * LONG_RATE_HZ)
        while written < wanted:
            samples = decode_native(tracks[turn % len(tracks)])
            turn += 1
            if skip >= len(samples):
                skip -= len(samples)
                continue
            samples, skip = samples[skip:][: wanted - written], 0
            out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
            written += len(samples)
    partial.rename(path)
    return path


def make_clips(tracks: list[Path], count: int) -> list[bytes]:
    clips, offsets = [], {track: 0.0 for track in tracks}
    lengths = {track: duration_seconds(track) for track in tracks}
    turn = 0
    while len(clips) < count:
        track = tracks[turn % len(tracks)]
        turn += 1
        if offsets[track] + CLIP_SECONDS > lengths[track]:
            continue
        clips.append(cut_clip(track, offsets[track], CLIP_SECONDS))
        offsets[track] += CLIP_OFFSET_STEP_SECONDS
    return clips
