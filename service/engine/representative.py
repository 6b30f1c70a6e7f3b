"""A track's representative segment: the ~30 s window that stands for the whole track (previews, curators' listening).

A window is ``window_segments(analysis)`` consecutive segments (30 s of audio at the analysis' hop). The
representative one is the window whose mean embedding is closest (cosine) to the track's mean embedding; ties go to
the earliest window. Chosen by measurement on the corpus against the window whose mean tag scores are closest to the
track's and against a fixed window in the middle (docs/catalog.md, "Representative segment"). A track no longer
than one window is its own representative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.engine.analysis import Analysis

WINDOW_SECONDS = 30.0  # what a curator listens to (issue #23); Cyanite-style previews are 30 s too


@dataclass(frozen=True)
class Window:
    first: int  # index of the window's first segment
    count: int  # segments in the window

    def bounds(self, analysis: Analysis) -> tuple[float, float]:
        """(start_seconds, end_seconds) of the window in the track: to the track's end when it holds the last
        segment (the tail shorter than a hop belongs to it), else to its last segment's end."""
        rate = analysis.sample_rate
        start = self.first * analysis.hop_samples / rate
        if self.first + self.count >= analysis.segments:
            return start, analysis.duration_seconds
        last_start = (self.first + self.count - 1) * analysis.hop_samples / rate
        return start, min(last_start + analysis.patch_samples / rate, analysis.duration_seconds)


def segments_per_window(hop_seconds: float, patch_seconds: float, window_seconds: float = WINDOW_SECONDS) -> int:
    """How many consecutive segments (``hop_seconds`` apart, ``patch_seconds`` long) cover ``window_seconds``."""
    return 1 + max(0, round((window_seconds - patch_seconds) / hop_seconds))


def window_segments(analysis: Analysis, window_seconds: float = WINDOW_SECONDS) -> int:
    """How many consecutive segments of this analysis cover ``window_seconds`` (at least one, at most the track's)."""
    rate = analysis.sample_rate
    wanted = segments_per_window(analysis.hop_samples / rate, analysis.patch_samples / rate, window_seconds)
    return max(1, min(wanted, analysis.segments))


def window_means(values: np.ndarray, count: int) -> np.ndarray:
    """Mean of every run of ``count`` consecutive rows, [rows - count + 1, dim], in float64 (prefix sums)."""
    prefix = np.zeros((values.shape[0] + 1, values.shape[1]), np.float64)
    np.cumsum(values, axis=0, dtype=np.float64, out=prefix[1:])
    return (prefix[count:] - prefix[:-count]) / count


def closest_window(values: np.ndarray, count: int) -> Window:
    """The window whose mean row has the highest cosine with the mean of all rows (earliest on ties)."""
    means = window_means(values, count)
    whole = values.astype(np.float64).mean(axis=0)
    norms = np.linalg.norm(means, axis=1) * np.linalg.norm(whole)
    cosine = (means @ whole) / np.where(norms > 0, norms, 1.0)
    return Window(int(np.argmax(cosine)), count)


def middle_window(segments: int, count: int) -> Window:
    """The fixed baseline: the window centred in the track."""
    return Window((segments - count) // 2, count)


def representative(analysis: Analysis, window_seconds: float = WINDOW_SECONDS) -> tuple[float, float]:
    """(start_seconds, end_seconds) of the track's representative window: closest mean embedding to the track's."""
    count = window_segments(analysis, window_seconds)
    return closest_window(analysis.embedding, count).bounds(analysis)
