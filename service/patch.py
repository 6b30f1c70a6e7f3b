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
