"""The representative segment (issue #23): the ~30 s window whose mean embedding is closest to the track's."""

from __future__ import annotations

import numpy as np
import pytest

from service.engine.analysis import Analysis
from service.engine.representative import WINDOW_SECONDS, closest_window, middle_window, representative, window_segments

RATE = 16_000
PATCH = 48_128  # msd-musicnn's patch: 3.008 s
DIM = 200


def analysis(embedding: np.ndarray, hop: int = PATCH, duration: float | None = None) -> Analysis:
    segments = len(embedding)
    if duration is None:
        duration = ((segments - 1) * hop + PATCH) / RATE
    return Analysis(
        duration_seconds=duration,
        sample_rate=RATE,
        patch_samples=PATCH,
        hop_samples=hop,
        tags=np.zeros((segments, 3), np.float32),
        embedding=embedding.astype(np.float32),
    )


def naive_best_start(embedding: np.ndarray, count: int) -> int:
    whole = embedding.astype(np.float64).mean(axis=0)
    cosines = []
    for first in range(len(embedding) - count + 1):
        window = embedding[first : first + count].astype(np.float64).mean(axis=0)
        cosines.append(window @ whole / (np.linalg.norm(window) * np.linalg.norm(whole)))
    return int(np.argmax(cosines))


def test_a_window_covers_thirty_seconds_at_any_hop():
    track = analysis(np.ones((100, DIM)))
    assert window_segments(track) == 10  # 9 hops of 3.008 s + one patch = 30.08 s
    overlapping = analysis(np.ones((100, DIM)), hop=PATCH // 2)
    count = window_segments(overlapping)
    start, end = closest_window(overlapping.embedding, count).bounds(overlapping)
    assert abs((end - start) - WINDOW_SECONDS) <= overlapping.hop_samples / RATE / 2


def test_the_window_whose_mean_is_the_tracks_mean_is_chosen():
    rng = np.random.default_rng(3)
    centre = rng.standard_normal(DIM)
    noise = rng.standard_normal((60, DIM))
    planted = slice(37, 47)  # ten segments exactly at the track's mean
    noise[planted] = 0.0
    noise -= noise.sum(axis=0) / (len(noise) - 10) * np.isin(np.arange(60), np.arange(37, 47), invert=True)[:, None]
    track = analysis(centre + noise)
    np.testing.assert_allclose(track.embedding.mean(axis=0), centre, atol=1e-5)
    start, end = representative(track)
    assert (start, end) == pytest.approx((37 * PATCH / RATE, (46 * PATCH + PATCH) / RATE))


@pytest.mark.parametrize("seed", range(5))
def test_the_choice_is_the_best_cosine_of_every_window(seed):
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.standard_normal((80, DIM)), axis=0) + 5.0  # sections that drift, as songs do
    track = analysis(walk)
    count = window_segments(track)
    assert closest_window(track.embedding, count).first == naive_best_start(track.embedding, count)


def test_a_track_shorter_than_a_window_is_its_own_representative():
    track = analysis(np.random.default_rng(1).standard_normal((4, DIM)), duration=11.5)
    assert representative(track) == (0.0, 11.5)


def test_the_end_is_clipped_to_the_tracks_duration():
    track = analysis(np.random.default_rng(2).standard_normal((10, DIM)), duration=29.0)  # last patch repeat-padded
    assert representative(track) == (0.0, 29.0)


def test_the_middle_baseline_is_centred():
    assert middle_window(40, 10).first == 15
    assert middle_window(10, 10).first == 0


def test_a_window_holding_the_last_segment_reaches_the_tracks_end():
    """The tail after the last full hop (shorter than a segment) belongs to the window that ends the track."""
    track = analysis(np.random.default_rng(8).standard_normal((3, DIM)), duration=10.0)  # 3 segments end at 9.0 s
    assert representative(track) == (0.0, 10.0)
