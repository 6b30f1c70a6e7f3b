"""Per-track analysis and its song-level pooling (mean over segments, the best aggregation for these models)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from service.decode import DecodeFacts


@dataclass(frozen=True)
class Analysis:
    """Everything computed for one (audio, model, hop): serves /taggram, /embed and /suggest-subgenres alike."""

    duration_seconds: float
    sample_rate: int
    patch_samples: int  # audio covered by one segment, context excluded
    hop_samples: int
    tags: np.ndarray  # float32 [segments, labels]
    embedding: np.ndarray  # float32 [segments, dim]
    # Which decoder read the audio, its declared duration, warnings (damaged, truncated). Empty for an analysis of
    # samples that were never a file (tests, benchmarks).
    decode: DecodeFacts = field(default_factory=DecodeFacts)

    @property
    def segments(self) -> int:
        return int(self.tags.shape[0])

    def segment_bounds(self) -> list[tuple[float, float]]:
        """Start and end (seconds) of every segment; the last one is clipped to the track's duration."""
        starts = np.arange(self.segments) * self.hop_samples / self.sample_rate
        ends = np.minimum(starts + self.patch_samples / self.sample_rate, self.duration_seconds)
        return [(float(s), float(e)) for s, e in zip(starts, ends)]


def mean_over_segments(values: np.ndarray) -> np.ndarray:
    """Track-level vector: the mean of the per-segment vectors, computed in float64 and returned as float32."""
    return values.astype(np.float64).mean(axis=0).astype(np.float32)
