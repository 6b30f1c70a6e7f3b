"""Patching: how a decoded track becomes model inputs (service/engine/patch.py)."""

from __future__ import annotations

import numpy as np
import pytest

from service.engine.patch import PatchGeometry, count_frames, patch_starts, patch_track, spread_patch_offsets

GEOMETRY = PatchGeometry(sample_rate=16_000, patch_samples=48_128, patch_frames=187, frame_hop=256)
COVERED = 187 * 256  # 47 872 samples ≈ 2.992 s


def ramp(n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.float32)


def test_geometry_matches_the_manifest_numbers():
    assert GEOMETRY.context_samples == 256
    assert GEOMETRY.covered_samples == COVERED
    assert GEOMETRY.hop_frames(None) == 187
    assert GEOMETRY.hop_frames(1.5) == 94  # 1.5 s = 93.75 frames, rounded
    assert GEOMETRY.hop_frames(0.001) == 1


def test_patch_i_is_the_centred_stft_window_of_frames_187i_onwards():
    track = ramp(3 * COVERED + 5000)
    patches = patch_track(track, GEOMETRY, 187)
    padded = np.concatenate([np.zeros(256, np.float32), track, np.zeros(48_128, np.float32)])
    assert patches.shape == (3, 48_128) and patches.dtype == np.float32
    for i, patch in enumerate(patches):
        np.testing.assert_array_equal(patch, padded[i * COVERED : i * COVERED + 48_128])
    assert patches[0][:256].tolist() == [0.0] * 256  # the centred STFT's left zero padding


def test_overlapping_hops_start_every_hop_frames():
    patches = patch_track(ramp(4 * COVERED), GEOMETRY, 94)
    for i in (1, 2, 5):
        assert patches[i][0] == i * 94 * 256 - 256 + 1  # the ramp's value at track sample 94·256·i − 256


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(3.0, 1), (4.4, 1), (4.6, 2), (6.0, 2), (7.0, 2), (7.6, 3), (180.0, 60)],
)
def test_a_tail_is_kept_only_when_half_a_patch_of_it_is_track(seconds, expected):
    n = int(seconds * 16_000)
    assert len(patch_starts(n, GEOMETRY, 187)) == expected
    assert len(patch_track(np.ones(n, np.float32), GEOMETRY, 187)) == expected


def test_a_track_shorter_than_one_patch_is_repeated_to_fill_it():
    clip = ramp(20_000)  # 1.25 s
    (patch,) = patch_track(clip, GEOMETRY, 187)
    body = patch[256 : 256 + COVERED]
    np.testing.assert_array_equal(body[:20_000], clip)
    np.testing.assert_array_equal(body[20_000:40_000], clip)
    np.testing.assert_array_equal(body[40_000:], clip[: COVERED - 40_000])


def test_patches_are_views_of_one_padded_copy():
    patches = patch_track(np.ones(60 * 16_000, np.float32), GEOMETRY, 31)
    assert patches.base is not None and not patches.flags.writeable
    assert len(patches) > 100  # 6× overlap on a minute: many windows, one buffer


def test_frame_count_is_that_of_a_centred_stft():
    assert count_frames(0, 256) == 1 and count_frames(255, 256) == 1 and count_frames(256, 256) == 2


def test_an_empty_track_cannot_be_patched():
    with pytest.raises(ValueError):
        patch_track(np.zeros(0, np.float32), GEOMETRY, 187)


@pytest.mark.parametrize("hop_frames", [187, 94, 31, 400])
@pytest.mark.parametrize("seconds", [1.1, 2.99, 3.0, 4.5, 4.6, 7.0, 31.3])
@pytest.mark.parametrize("chunk_samples", [1000, 48_128, 160_000])
def test_streaming_patches_equal_patching_the_whole_track(hop_frames, seconds, chunk_samples):
    from service.engine.patch import StreamingPatcher

    track = np.random.default_rng(0).standard_normal(int(seconds * 16_000)).astype(np.float32)
    patcher = StreamingPatcher(GEOMETRY, hop_frames)
    streamed = []
    for start in range(0, len(track), chunk_samples):
        streamed += patcher.push(track[start : start + chunk_samples])
    streamed += patcher.finish()
    expected = patch_track(track, GEOMETRY, hop_frames)
    assert len(streamed) == len(expected)
    for a, b in zip(streamed, expected):
        np.testing.assert_array_equal(a, b)


def test_streaming_emits_each_patch_as_soon_as_its_samples_arrived():
    from service.engine.patch import StreamingPatcher

    patcher = StreamingPatcher(GEOMETRY, 187)
    assert patcher.push(np.ones(COVERED - 1, np.float32)) == []
    assert len(patcher.push(np.ones(1, np.float32))) == 1  # 256 context + 47 872 track samples = one patch
    assert len(patcher.push(np.ones(COVERED, np.float32))) == 1


@pytest.mark.parametrize("count", [1, 4, 12, 24])
def test_spread_patches_are_the_complete_analysis_own_patches_from_first_to_last(count):
    """The early answer's sample (issue #22): ``count`` of the default-hop patches, evenly spread, so that the
    region at each offset is exactly the complete analysis's patch there."""
    rng = np.random.default_rng(count)
    track = rng.uniform(-1, 1, 4 * 60 * 16_000).astype(np.float32)  # 4 minutes: 80 patches
    patches = patch_track(track, GEOMETRY, GEOMETRY.patch_frames)
    offsets = spread_patch_offsets(track.size, GEOMETRY, count)
    assert len(offsets) == count and offsets == sorted(set(offsets))
    padded = np.concatenate(
        [np.zeros(GEOMETRY.context_samples, np.float32), track, np.zeros(GEOMETRY.patch_samples, np.float32)]
    )
    indices = [(o + GEOMETRY.context_samples) // COVERED for o in offsets]
    for offset, index in zip(offsets, indices):
        assert (offset + GEOMETRY.context_samples) % COVERED == 0
        start = offset + GEOMETRY.context_samples
        assert np.array_equal(padded[start : start + GEOMETRY.patch_samples], patches[index])
    assert indices[0] == 0 and (count == 1 or indices[-1] == len(patches) - 1)
    gaps = np.diff(indices)
    assert count < 3 or gaps.max() - gaps.min() <= 1  # evenly spread


def test_a_track_of_fewer_patches_than_asked_is_sampled_whole():
    track_samples = 5 * COVERED
    offsets = spread_patch_offsets(track_samples, GEOMETRY, 12)
    assert len(offsets) == len(patch_starts(track_samples, GEOMETRY, GEOMETRY.patch_frames))
