"""Cut a decoded track into the model's input patches, as the manifest describes them.

Patch i covers frames [h·i, h·i + 187) of librosa's centred STFT of the track (h = hop in frames): it starts at
sample h·256·i of the track left-padded with 256 zeros and spans 48128 samples. Patches are strided views of
one padded array, so a track costs its own size in memory however many patches overlap.

Edges, documented in docs/api.md:
- The final patch is kept when at least half of its frames come from the track; the rest of it is zeros,
  as the centred STFT pads. A shorter tail is dropped, as musicnn itself drops partial tails.
- A track shorter than one patch is repeated until it fills one ("repeat-pad", how musicnn was trained);
  below ``min_samples`` it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PatchGeometry:
    """The manifest's numbers that define a model input."""

    sample_rate: int  # Hz
    patch_samples: int  # 48128 = (patch_frames − 1)·frame_hop + n_fft
    patch_frames: int  # 187
    frame_hop: int  # samples between STFT frames

    @property
    def context_samples(self) -> int:
        """Samples before the first frame's centre: n_fft / 2."""
        return (self.patch_samples - (self.patch_frames - 1) * self.frame_hop) // 2

    @property
    def covered_samples(self) -> int:
        """Track samples one patch stands for (frame centres one hop apart): 47872 ≈ 2.99 s."""
        return self.patch_frames * self.frame_hop

    def hop_frames(self, hop_seconds: float | None) -> int:
        """Seconds between patch starts, rounded to whole frames; None = one patch (no overlap)."""
        if hop_seconds is None:
            return self.patch_frames
        return max(1, round(hop_seconds * self.sample_rate / self.frame_hop))


def count_frames(num_samples: int, frame_hop: int) -> int:
    """Frames of a centred STFT."""
    return 1 + num_samples // frame_hop


def patch_starts(num_samples: int, geometry: PatchGeometry, hop_frames: int) -> list[int]:
    """First frame of every kept patch (the track is assumed at least one patch long)."""
    frames = count_frames(num_samples, geometry.frame_hop)
    min_track_frames = (geometry.patch_frames + 1) // 2
    starts = range(0, max(frames - min_track_frames, 0) + 1, hop_frames)
    return list(starts) or [0]


def spread_patch_offsets(num_samples: int, geometry: PatchGeometry, count: int) -> list[int]:
    """Track-sample offsets of ``count`` of the default-hop patches (one patch apart, as a full analysis cuts them),
    spread evenly from the first kept patch to the last; all of them when the track has no more than ``count``.
    The first offset is negative: the centred STFT's left padding. Sampled this way, a track's sample is a subset
    of its full analysis's patches (issue #22; how many: docs/signup.md)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count!r}")
    starts = patch_starts(max(num_samples, geometry.covered_samples), geometry, geometry.patch_frames)
    picks = (
        range(len(starts))
        if count >= len(starts)
        else sorted({round(float(i)) for i in np.linspace(0, len(starts) - 1, count)})
    )
    return [starts[i] * geometry.frame_hop - geometry.context_samples for i in picks]


def repeat_pad(samples: np.ndarray, length: int) -> np.ndarray:
    repeats = -(-length // len(samples))
    return np.tile(samples, repeats)[:length]


def patch_track(samples: np.ndarray, geometry: PatchGeometry, hop_frames: int) -> np.ndarray:
    """[patches, patch_samples] float32 read-only view over one padded copy of the track."""
    if len(samples) == 0:
        raise ValueError("cannot patch an empty track")
    if len(samples) < geometry.covered_samples:
        samples = repeat_pad(samples, geometry.covered_samples)
    starts = patch_starts(len(samples), geometry, hop_frames)
    context = geometry.context_samples
    padded_length = starts[-1] * geometry.frame_hop + geometry.patch_samples
    padded = np.zeros(max(padded_length, context + len(samples)), dtype=np.float32)
    padded[context : context + len(samples)] = samples
    windows = np.lib.stride_tricks.sliding_window_view(padded, geometry.patch_samples)
    return windows[:: hop_frames * geometry.frame_hop][: len(starts)]


class StreamingPatcher:
    """``patch_track`` for a track that arrives in chunks: full patches are emitted as soon as their samples are in.

    ``push`` returns the patches completed by a chunk; ``finish`` the tail (and the repeat-padded single patch of
    a track shorter than one patch). Together they equal ``patch_track`` of the whole track, patch for patch.
    Memory: one patch plus one chunk, whatever the track's length.
    """

    def __init__(self, geometry: PatchGeometry, hop_frames: int) -> None:
        self.geometry = geometry
        self.hop_samples = hop_frames * geometry.frame_hop
        self.hop_frames = hop_frames
        self.num_samples = 0  # track samples received
        self.emitted = 0  # patches emitted so far
        self._buffer = np.zeros(geometry.context_samples, np.float32)  # padded track from _buffer_start on
        self._buffer_start = 0  # padded-sample index of _buffer[0]
        self._head: list[np.ndarray] = []  # the first covered_samples of the track, kept for repeat-padding

    def _next_start(self) -> int:
        return self.emitted * self.hop_samples

    def _take_ready(self) -> list[np.ndarray]:
        ready = []
        size = self.geometry.patch_samples
        while self._next_start() + size <= self._buffer_start + len(self._buffer):
            offset = self._next_start() - self._buffer_start
            ready.append(self._buffer[offset : offset + size].copy())
            self.emitted += 1
        drop = min(self._next_start() - self._buffer_start, len(self._buffer))
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop
        return ready

    def push(self, chunk: np.ndarray) -> list[np.ndarray]:
        chunk = np.asarray(chunk, dtype=np.float32)
        if self.num_samples < self.geometry.covered_samples:
            self._head.append(chunk[: self.geometry.covered_samples - self.num_samples].copy())
        self.num_samples += len(chunk)
        self._buffer = np.concatenate([self._buffer, chunk])
        return self._take_ready()

    def finish(self) -> list[np.ndarray]:
        if self.num_samples == 0:
            raise ValueError("cannot patch an empty track")
        if self.num_samples < self.geometry.covered_samples:
            return list(patch_track(np.concatenate(self._head), self.geometry, self.hop_frames))
        total = len(patch_starts(self.num_samples, self.geometry, self.hop_frames))
        end = (total - 1) * self.hop_samples + self.geometry.patch_samples  # padded end of the last kept patch
        missing = end - (self._buffer_start + len(self._buffer))
        if missing > 0:  # the zeros a centred STFT pads the track's end with
            self._buffer = np.concatenate([self._buffer, np.zeros(missing, np.float32)])
        tail = self._take_ready()
        assert self.emitted == total, (self.emitted, total)  # every patch emitted while streaming is kept
        return tail
