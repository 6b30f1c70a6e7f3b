"""One track's analysis: decoded chunks → model patches, model outputs → the ``Analysis`` every endpoint serves.

``TrackAnalyser`` holds the per-(model, hop) steps that the service's pipeline and the backfill share; the
``Analysis`` record is what the cache stores; ``mean_over_segments`` is the song-level pooling (mean over
segments, the best aggregation for these models).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from service.decode import DecodeFacts
from service.engine.patch import PatchGeometry, StreamingPatcher
from service.errors import AudioTooShort


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


def check_min_duration(num_samples: int, sample_rate: int, min_seconds: float) -> None:
    """Raise AudioTooShort below ``min_seconds``: the one floor of the service, the backfill and the catalog check."""
    if num_samples < min_seconds * sample_rate:
        raise AudioTooShort(num_samples, sample_rate, min_seconds)


@dataclass(frozen=True)
class TrackAnalyser:
    """The steps of one (model geometry, hop, minimum duration) analysis, shared by the service and the backfill:
    ``patcher()`` per track, ``push`` each decoded chunk, ``finish`` for the tail (refusing a too-short track),
    then ``analysis`` from the model's outputs for every patch, in order."""

    geometry: PatchGeometry
    hop_frames: int
    min_seconds: float

    def patcher(self) -> StreamingPatcher:
        return StreamingPatcher(self.geometry, self.hop_frames)

    def finish(self, patcher: StreamingPatcher) -> list[np.ndarray]:
        """The track's last patches; raises AudioTooShort below ``min_seconds``."""
        check_min_duration(patcher.num_samples, self.geometry.sample_rate, self.min_seconds)
        return patcher.finish()

    def analysis(self, num_samples: int, outputs: dict[str, np.ndarray], decode: DecodeFacts) -> Analysis:
        return Analysis(
            duration_seconds=num_samples / self.geometry.sample_rate,
            sample_rate=self.geometry.sample_rate,
            patch_samples=self.geometry.covered_samples,
            hop_samples=self.hop_frames * self.geometry.frame_hop,
            tags=np.ascontiguousarray(outputs["tags"], dtype=np.float32),
            embedding=np.ascontiguousarray(outputs["embedding"], dtype=np.float32),
            decode=decode,
        )
