"""Sampling a track by seeking (issue #22): the regions are the full decode's samples at the same places, per format,
on real music; where the container cannot seek exactly, the track is decoded in order and the sample says so.

Figures (the differences per format, the time against a full decode): docs/signup.md.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from corpus.music import ensure_music
from service.decode import DecodeError, decode
from service.decode.limits import SAMPLE_RATE
from service.decode.sample import sample_track
from service.engine.patch import PatchGeometry, spread_patch_offsets
from tests.support.audio_factory import encode_audio

SECONDS = 40.0
OFFSET_SECONDS = 20.0
MAX_SECONDS = 60.0
MUSICNN = PatchGeometry(sample_rate=SAMPLE_RATE, patch_samples=48128, patch_frames=187, frame_hop=256)  # manifests'
PATCHES = 5
# Largest difference from the full decode, per sample (full scale 1.0): the decoders are deterministic and the
# resampler starts on the same 16 kHz grid, so what remains is float rounding in soxr (measured ≤ 1.5e-7).
EXACT = 1e-6
# AAC is the exception: its decoder fills noise-substituted bands (PNS) from a random generator that a seek does not
# rewind, so that noise differs from the full decode's (same band energies). Measured: the difference's energy is
# 28–61 dB below the region's; a region misplaced by even one sample would be far above this bound.
AAC_NOISE_DIFFERENCE_DB = -20.0
SEEKABLE = {  # name: (format for encode_audio, its options, the bound: max |difference|, or None for the energy bound)
    "ogg-vorbis": ("ogg", {}, EXACT),
    "mp3-cbr": ("mp3", {"bit_rate": 128_000, "muxer_options": {"write_xing": "0"}}, EXACT),
    "mp3-cbr-info": ("mp3", {"bit_rate": 128_000}, EXACT),
    "mp3-vbr-xing": ("mp3", {"quality": 4}, EXACT),
    "opus": ("opus", {}, EXACT),
    "flac": ("flac", {}, EXACT),
    "wav": ("wav", {}, EXACT),
    "m4a": ("m4a", {}, None),
}
NOT_SEEKABLE = {  # name: (format, options, what the fallback reason names)
    "adts-aac": ("aac", {}, "cannot seek (aac)"),
    "mp3-vbr-no-xing": ("mp3", {"quality": 4, "muxer_options": {"write_xing": "0"}}, "variable-bit-rate mp3"),
}


@pytest.fixture(scope="module")
def real_music():
    track = ensure_music()[2]  # lincity-ng "Architectural Contemplations"
    with soundfile.SoundFile(track) as f:
        f.seek(int(OFFSET_SECONDS * f.samplerate))
        return f.read(int(SECONDS * f.samplerate), dtype="float32", always_2d=True).T, f.samplerate


@pytest.fixture(scope="module")
def encoded(real_music) -> dict[str, bytes]:
    samples, rate = real_music
    return {
        name: encode_audio(samples, rate, fmt, **options)
        for name, (fmt, options, _) in (SEEKABLE | NOT_SEEKABLE).items()
    }


def spread(num_samples: int) -> list[int]:
    return spread_patch_offsets(num_samples, MUSICNN, PATCHES)


def full_decode_at(data: bytes, starts: list[int], length: int) -> list[np.ndarray]:
    track = decode(io.BytesIO(data), max_seconds=MAX_SECONDS).samples
    regions = []
    for start in starts:
        region = np.zeros(length, np.float32)
        lo, hi = max(start, 0), min(start + length, track.size)
        region[lo - start : hi - start] = track[lo:hi]
        regions.append(region)
    return regions


@pytest.mark.parametrize("name", SEEKABLE)
def test_a_seeked_region_is_the_full_decode_at_the_same_place(encoded, name):
    data, tolerance = encoded[name], SEEKABLE[name][2]
    sample = sample_track(io.BytesIO(data), spread, MUSICNN.patch_samples, max_seconds=MAX_SECONDS)
    assert sample.seeked and sample.fallback_reason is None
    assert sample.starts[0] < 0 and len(sample.starts) == PATCHES  # the first patch, with the STFT's left padding
    expected = full_decode_at(data, sample.starts, MUSICNN.patch_samples)
    for got, want in zip(sample.regions, expected):
        if tolerance is None:
            assert difference_db(got, want) <= AAC_NOISE_DIFFERENCE_DB
        else:
            assert np.abs(got - want).max() <= tolerance


def difference_db(got: np.ndarray, want: np.ndarray) -> float:
    """Energy of the difference relative to the region's, in dB."""
    return 10 * np.log10(max(float(((got - want) ** 2).sum()), 1e-30) / float((want**2).sum()))


@pytest.mark.parametrize("name", NOT_SEEKABLE)
def test_a_container_that_cannot_seek_exactly_is_decoded_in_order_and_says_so(encoded, name):
    data, reason = encoded[name], NOT_SEEKABLE[name][2]
    sample = sample_track(io.BytesIO(data), spread, MUSICNN.patch_samples, max_seconds=MAX_SECONDS)
    assert not sample.seeked and reason in sample.fallback_reason
    assert sample.facts.duration_seconds == pytest.approx(SECONDS, abs=0.1)  # the whole track was decoded
    for got, want in zip(sample.regions, full_decode_at(data, sample.starts, MUSICNN.patch_samples)):
        assert np.array_equal(got, want)


def test_coverage_is_the_sampled_seconds_over_the_duration(encoded):
    sample = sample_track(io.BytesIO(encoded["flac"]), spread, MUSICNN.patch_samples, max_seconds=MAX_SECONDS)
    assert sample.duration_seconds == pytest.approx(SECONDS, abs=0.01)
    # 5 regions of 48128 samples, the first starting 256 samples before the track
    assert sample.coverage == pytest.approx((PATCHES * MUSICNN.patch_samples - 256) / (SECONDS * SAMPLE_RATE), rel=1e-3)


def test_a_track_longer_than_the_limit_is_refused_before_any_region_is_decoded(encoded):
    with pytest.raises(DecodeError) as refused:
        sample_track(io.BytesIO(encoded["ogg-vorbis"]), spread, MUSICNN.patch_samples, max_seconds=SECONDS / 2)
    assert refused.value.code == "audio_too_long"


def test_a_short_track_is_sampled_whole():
    """Fewer patches than asked for: every patch, so the early answer is the complete one."""
    assert spread_patch_offsets(3 * MUSICNN.covered_samples, MUSICNN, PATCHES) == [
        i * MUSICNN.covered_samples - MUSICNN.context_samples for i in range(3)
    ]
