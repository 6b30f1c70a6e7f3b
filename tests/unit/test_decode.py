"""Specification of service/decode.py: upload bytes → 16 kHz mono float32, exactly as librosa.load would, bounded.

Every fixture is generated here with real encoders (tests/support/audio_factory.py); malformed files are made by cutting
or corrupting those bytes.
"""

from __future__ import annotations

import io
import math
from functools import cache

import av
import librosa
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.decode import (
    DEFAULT_CHUNK_SAMPLES,
    MAX_CHANNELS,
    MAX_SOURCE_RATE_HZ,
    MIN_SOURCE_RATE_HZ,
    SAMPLE_RATE,
    DecodedAudio,
    DecodeError,
    decode,
    frame_planes,
    iter_decoded,
    join_planes,
    mix_to_mono,
    resampled_length,
    to_float_planar,
)
from service.decode.source import GuardedSource
from tests.support.audio_factory import (
    FORMATS,
    LOSSLESS_FORMATS,
    chord,
    encode_audio,
    noise,
    silence,
    sine,
    stereo,
    sweep,
    write_audio,
)
from tests.support.mutations import mutated

# librosa.load imports audioread (its fallback loader), which imports modules Python 3.13 removes: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:audioread")

TONE_HZ = 440.0
TONE_SECONDS = 2.0
LONG_LIMIT_S = 60.0  # max_seconds for tests that are not about the cap

# Lossy codecs add priming and padding; decoders remove part of it. Allowed length error, in codec frames at the
# encoder's rate: mp3 1152-sample frames, AAC 1024, Vorbis blocks up to 2048, Opus 960 at 48 kHz.
CODEC_PADDING_SAMPLES = {
    "mp3": 2 * 1152,
    "m4a": 2 * 1024,
    "aac": 2 * 1024,
    "ogg": 2 * 2048,
    "opus": 2 * 960,
    "webm": 2 * 960,
}
OPUS_RATE_HZ = 48_000  # the Opus decoder always outputs 48 kHz
OPUS_FORMATS = ("opus", "webm")

# (channels, sample rate) of the source files every format is tried with.
LAYOUTS = [(1, 8_000), (2, 44_100), (2, 48_000)]


def decode_bytes(data: bytes, *, max_seconds: float = LONG_LIMIT_S) -> DecodedAudio:
    return decode(io.BytesIO(data), max_seconds=max_seconds)


def peak_frequency(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * sample_rate / x.size)


def rms(x: np.ndarray, edge: int = 2_000) -> float:
    """RMS away from the edges, where codec priming and resampler ramps live."""
    return float(np.sqrt(np.mean(x[edge:-edge].astype(np.float64) ** 2)))


class CountingReader(io.BytesIO):
    """A BytesIO that counts the bytes it hands out."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, n: int | None = -1) -> bytes:
        data = super().read(n)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer) -> int:  # PyAV may use either
        n = super().readinto(buffer)
        self.bytes_read += n
        return n


# ---------------------------------------------------------------------------------------------------------------
# Every format, every layout
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels,rate", LAYOUTS, ids=[f"{c}ch-{r}Hz" for c, r in LAYOUTS])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_decodes_to_16k_mono_float32_with_the_tone_intact(fmt: str, channels: int, rate: int) -> None:
    audio = decode_bytes(encode_audio(sine(TONE_HZ, TONE_SECONDS, rate, channels=channels), rate, fmt))

    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert np.isfinite(audio.samples).all()
    expected = resampled_length(round(TONE_SECONDS * rate), rate)
    if fmt in LOSSLESS_FORMATS:
        assert audio.samples.size == expected
    else:
        encoder_rate = OPUS_RATE_HZ if fmt in OPUS_FORMATS else rate
        tolerance = math.ceil(CODEC_PADDING_SAMPLES[fmt] * SAMPLE_RATE / encoder_rate)
        assert abs(audio.samples.size - expected) <= tolerance
    assert audio.duration_seconds == audio.samples.size / SAMPLE_RATE
    assert abs(peak_frequency(audio.samples) - TONE_HZ) < 2.0
    assert 0.3 < rms(audio.samples) < 0.4  # a 0.5-amplitude sine has RMS 0.354; nothing was remixed to -3 dB
    assert audio.source_sample_rate == (OPUS_RATE_HZ if fmt in OPUS_FORMATS else rate)
    assert audio.source_channels == channels
    assert audio.damaged is False


@pytest.mark.parametrize("fmt", ["wav", "wav_s24", "wav_f32", "flac", "mp3", "m4a", "ogg"])
def test_frame_planes_joined_are_exactly_what_pyav_copies_out_of_the_frames(fmt: str) -> None:
    """Packed (s16, s32, flt) and planar (fltp, s16p/s32p from flac, vorbis) formats: the zero-copy views, joined,
    equal ``AudioFrame.to_ndarray`` concatenated, sample for sample and dtype for dtype."""
    data = encode_audio(stereo(noise(0.5, 44_100, seed=3), noise(0.5, 44_100, seed=4)), 44_100, fmt)
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(container.streams.audio[0]))
    expected = np.concatenate([frame.to_ndarray() for frame in frames], axis=1)
    joined = join_planes([frame_planes(frame) for frame in frames])
    assert joined.dtype == expected.dtype and joined.shape == expected.shape
    assert np.array_equal(joined, expected)


def test_codec_names_are_ffmpeg_canonical_names() -> None:
    x = sine(TONE_HZ, 0.5, 44_100)
    expected = {
        "wav": "pcm_s16le",
        "aiff": "pcm_s16be",
        "flac": "flac",
        "mp3": "mp3",
        "ogg": "vorbis",
        "opus": "opus",
        "webm": "opus",
        "m4a": "aac",
        "aac": "aac",
    }
    assert {fmt: decode_bytes(encode_audio(x, 44_100, fmt)).codec for fmt in expected} == expected


def test_a_source_already_at_16k_passes_through_unresampled() -> None:
    x = noise(1.0, SAMPLE_RATE, seed=3)
    audio = decode_bytes(encode_audio(x, SAMPLE_RATE, "wav_f32"))
    np.testing.assert_array_equal(audio.samples, x[0])


def test_every_source_rate_in_range_gives_the_librosa_length() -> None:
    for rate in (MIN_SOURCE_RATE_HZ, 11_025, 22_050, 96_000, MAX_SOURCE_RATE_HZ):
        n = 4_321
        audio = decode_bytes(encode_audio(noise(n / rate, rate, seed=1), rate, "wav"))
        assert audio.samples.size == math.ceil(n * SAMPLE_RATE / rate) == resampled_length(n, rate)


def test_a_sample_rate_change_mid_stream_is_resampled_segment_by_segment() -> None:
    # Two mp3s back to back (44.1 kHz then 22.05 kHz): one stream whose frames change rate.
    first = encode_audio(sine(TONE_HZ, 1.0, 44_100), 44_100, "mp3")
    audio = decode_bytes(first + encode_audio(sine(TONE_HZ, 1.0, 22_050), 22_050, "mp3"))
    assert abs(audio.duration_seconds - 2.0) < 0.2
    assert abs(peak_frequency(audio.samples) - TONE_HZ) < 2.0


# ---------------------------------------------------------------------------------------------------------------
# Mono is the mean of the channels (librosa), not FFmpeg's power-preserving downmix
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_opposite_channels_cancel(fmt: str) -> None:
    s = sine(TONE_HZ, TONE_SECONDS, 44_100)
    audio = decode_bytes(encode_audio(stereo(s, -s), 44_100, fmt))
    assert rms(audio.samples) < 1e-3 * rms(decode_bytes(encode_audio(stereo(s, s), 44_100, fmt)).samples) + 1e-6


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_silent_channel_halves_the_amplitude(fmt: str) -> None:
    s = sine(TONE_HZ, TONE_SECONDS, 44_100)
    both = rms(decode_bytes(encode_audio(stereo(s, s), 44_100, fmt)).samples)
    left_only = rms(decode_bytes(encode_audio(stereo(s, 0 * s), 44_100, fmt)).samples)
    assert left_only / both == pytest.approx(0.5, abs=0.005)  # FFmpeg's downmix would give 0.707


def test_mean_of_many_channels() -> None:
    channels = noise(0.5, SAMPLE_RATE, seed=7, channels=5)
    audio = decode_bytes(encode_audio(channels, SAMPLE_RATE, "wav_f32"))
    np.testing.assert_array_equal(audio.samples, channels.mean(axis=0, dtype=np.float32))


# ---------------------------------------------------------------------------------------------------------------
# Same numbers as librosa.load(path, sr=16000)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav", "wav_s24", "wav_s32", "wav_f32", "flac"])
@pytest.mark.parametrize("channels,rate", [(2, 44_100), (1, 8_000), (3, 48_000), (2, SAMPLE_RATE)])
def test_lossless_decode_equals_librosa_load(tmp_path, fmt: str, channels: int, rate: int) -> None:
    path = tmp_path / "x.wav"
    signal = noise(1.5, rate, seed=11, channels=channels, amplitude=0.9)
    data = write_audio(path, signal, rate, fmt)

    expected, sr = librosa.load(path, sr=SAMPLE_RATE)  # soundfile + mean mono + soxr_hq
    actual = decode_bytes(data).samples

    assert sr == SAMPLE_RATE and actual.shape == expected.shape
    # Same scaling, same mean, same resampler: identical in practice; allow one float32 ulp at full scale.
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-7)


def test_integer_pcm_is_scaled_like_libsndfile() -> None:
    s16 = np.array([[-32768, -1, 0, 1, 32767]], np.int16)
    np.testing.assert_array_equal(to_float_planar(s16, "s16p", 1)[0], s16[0] / 32768.0)
    s32 = np.array([[-(2**31), 2**31 - 256]], np.int32)  # 24-bit PCM arrives left-justified in s32
    np.testing.assert_array_equal(to_float_planar(s32, "s32p", 1)[0], np.float32(s32[0] / 2**31))
    u8 = np.array([[0, 128, 255]], np.uint8)
    np.testing.assert_array_equal(to_float_planar(u8, "u8p", 1)[0], [-1.0, 0.0, 127 / 128])
    interleaved = np.array([[1, 2, 3, 4, 5, 6]], np.int16)  # packed stereo: L R L R L R
    np.testing.assert_array_equal(to_float_planar(interleaved, "s16", 2) * 32768, [[1, 3, 5], [2, 4, 6]])
    assert to_float_planar(s16, "s16p", 1).dtype == np.float32


def test_mix_to_mono_is_librosa_to_mono() -> None:
    x = noise(0.1, SAMPLE_RATE, seed=2, channels=4)
    np.testing.assert_array_equal(mix_to_mono(x), librosa.to_mono(x))


# ---------------------------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------------------------


def test_chunks_have_the_requested_size_and_concatenate_to_decode() -> None:
    data = encode_audio(sweep(100, 4_000, 3.3, 44_100, channels=2), 44_100, "flac")
    chunks = list(iter_decoded(io.BytesIO(data), max_seconds=LONG_LIMIT_S, chunk_samples=4_000))
    assert all(c.size == 4_000 for c in chunks[:-1]) and 0 < chunks[-1].size <= 4_000
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), decode_bytes(data).samples)


def test_the_default_chunk_is_ten_seconds() -> None:
    data = encode_audio(silence(25.0, 8_000), 8_000, "flac")
    sizes = [c.size for c in iter_decoded(io.BytesIO(data), max_seconds=LONG_LIMIT_S)]
    assert DEFAULT_CHUNK_SAMPLES == 10 * SAMPLE_RATE and sizes == [DEFAULT_CHUNK_SAMPLES] * 2 + [5 * SAMPLE_RATE]


def test_decoding_starts_from_the_beginning_whatever_the_file_position() -> None:
    data = encode_audio(chord((440, 550, 660), 1.0, 22_050), 22_050, "ogg")
    source = io.BytesIO(data)
    source.seek(0, io.SEEK_END)  # as left by the code that spooled the upload
    np.testing.assert_array_equal(decode(source, max_seconds=LONG_LIMIT_S).samples, decode_bytes(data).samples)


def test_a_generator_closed_early_releases_everything() -> None:
    data = encode_audio(silence(30.0, SAMPLE_RATE), SAMPLE_RATE, "flac")
    chunks = iter_decoded(io.BytesIO(data), max_seconds=LONG_LIMIT_S, chunk_samples=SAMPLE_RATE)
    assert next(chunks).size == SAMPLE_RATE
    chunks.close()  # runs the generator's cleanup: the container is closed, no exception


def test_bad_arguments_are_programming_errors() -> None:
    with pytest.raises(ValueError):
        iter_decoded(io.BytesIO(b""), max_seconds=0)
    with pytest.raises(ValueError):
        iter_decoded(io.BytesIO(b""), max_seconds=1, chunk_samples=0)
    with pytest.raises(ValueError):
        decode(io.BytesIO(b""), max_seconds=-1)


# ---------------------------------------------------------------------------------------------------------------
# Duration cap, enforced while decoding
# ---------------------------------------------------------------------------------------------------------------


@cache
def ten_minutes_of_silence() -> bytes:
    return encode_audio(silence(600.0, SAMPLE_RATE), SAMPLE_RATE, "flac")  # ~115 KB


def test_the_duration_cap_stops_decoding_early() -> None:
    data = ten_minutes_of_silence()
    source = CountingReader(data)
    yielded = 0
    with pytest.raises(DecodeError) as caught:
        for _ in iter_decoded(source, max_seconds=5.0, chunk_samples=SAMPLE_RATE):
            yielded += 1
    assert (caught.value.code, caught.value.status) == ("audio_too_long", 422)
    assert yielded <= 5  # 1-s chunks: nothing past the cap was handed out
    assert 0 < source.bytes_read < len(data) / 2  # and most of the file was never even read


def test_decode_applies_the_cap_too() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_bytes(ten_minutes_of_silence(), max_seconds=60.0)
    assert caught.value.code == "audio_too_long"


def test_the_cap_is_inclusive() -> None:
    data = encode_audio(silence(2.0, 8_000), 8_000, "wav")
    assert decode_bytes(data, max_seconds=2.0).duration_seconds == 2.0
    with pytest.raises(DecodeError, match=r"1\.99 s"):
        decode_bytes(data, max_seconds=1.99)


def test_the_cap_ignores_what_the_header_claims() -> None:
    # A WAV header announcing ~4 GB of data but holding 100 samples decodes the 100 samples.
    assert decode_bytes(wav_bytes(44_100, 1, data=bytes(200), claimed_data_bytes=0xFFFF_FFF0)).samples.size == 37


# ---------------------------------------------------------------------------------------------------------------
# Hostile and broken input → DecodeError with a stable code
# ---------------------------------------------------------------------------------------------------------------


def wav_bytes(
    rate: int, channels: int, *, data: bytes = bytes(200), bits: int = 16, claimed_data_bytes: int | None = None
) -> bytes:
    """A hand-made canonical WAV (PCM) header + data: for headers no encoder would write."""
    block = channels * bits // 8
    fmt = (1).to_bytes(2, "little") + channels.to_bytes(2, "little") + rate.to_bytes(4, "little")
    fmt += (rate * block).to_bytes(4, "little") + block.to_bytes(2, "little") + bits.to_bytes(2, "little")
    size = len(data) if claimed_data_bytes is None else claimed_data_bytes
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" + size.to_bytes(4, "little") + data
    riff_size = min(len(body) if claimed_data_bytes is None else size + 36, 0xFFFF_FFFF)
    return b"RIFF" + riff_size.to_bytes(4, "little") + body


def video_only_mp4() -> bytes:
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def with_nans() -> bytes:
    x = sine(TONE_HZ, 1.0, SAMPLE_RATE)
    x[0, 100:200] = np.nan
    return encode_audio(x, SAMPLE_RATE, "wav_f32")


def with_inf() -> bytes:
    x = sine(TONE_HZ, 1.0, 44_100, channels=2)
    x[1, 5_000] = np.inf
    return encode_audio(x, 44_100, "wav_f32")


HOSTILE = {
    "empty file": (lambda: b"", "undecodable_audio", 415),
    "random bytes": (lambda: np.random.default_rng(0).bytes(4096), "undecodable_audio", 415),
    "text": (lambda: b"this is not audio\n" * 50, "undecodable_audio", 415),
    "png signature": (lambda: b"\x89PNG\r\n\x1a\n" + bytes(1000), "undecodable_audio", 415),
    "video without audio": (video_only_mp4, "undecodable_audio", 415),
    "zero channels": (lambda: wav_bytes(16_000, 0), "undecodable_audio", 415),
    "zero sample rate": (lambda: wav_bytes(0, 1), "undecodable_audio", 415),
    "1 Hz": (lambda: wav_bytes(1, 1), "unsupported_sample_rate", 422),
    "1 MHz": (lambda: wav_bytes(1_000_000, 1), "unsupported_sample_rate", 422),
    "just below the rate range": (lambda: wav_bytes(MIN_SOURCE_RATE_HZ - 1, 1), "unsupported_sample_rate", 422),
    "just above the rate range": (lambda: wav_bytes(MAX_SOURCE_RATE_HZ + 1, 1), "unsupported_sample_rate", 422),
    "65 channels": (
        lambda: encode_audio(noise(0.1, 8_000, seed=0, channels=MAX_CHANNELS + 1), 8_000, "wav"),
        "too_many_channels",
        422,
    ),
    "header without samples": (lambda: wav_bytes(44_100, 2, data=b""), "empty_audio", 422),
    "NaN in float WAV": (with_nans, "non_finite_audio", 422),
    "inf in one channel": (with_inf, "non_finite_audio", 422),
    "floats that overflow when mixed": (
        lambda: encode_audio(np.full((2, 1000), 3e38, np.float32), 44_100, "wav_f32"),
        "non_finite_audio",
        422,
    ),
    "finite floats past 120 dB over full scale (the graph's power spectrum would overflow)": (
        lambda: encode_audio(np.full((2, 44_100), 1e30, np.float32), 44_100, "wav_f32"),
        "audio_out_of_range",
        422,
    ),
    "mp3 cut inside its first frame": (
        lambda: encode_audio(sine(TONE_HZ, 1.0, 44_100), 44_100, "mp3")[:100],
        "undecodable_audio",
        415,
    ),
    "flac cut inside its header": (
        lambda: encode_audio(sine(TONE_HZ, 1.0, 44_100), 44_100, "flac")[:1000],
        "undecodable_audio",
        415,
    ),
    "ogg cut inside its headers": (
        lambda: encode_audio(sine(TONE_HZ, 1.0, 44_100), 44_100, "ogg")[:2000],
        "undecodable_audio",
        415,
    ),
    "m4a cut before its index (moov at the end)": (
        lambda: (lambda d: d[: len(d) // 2])(encode_audio(sine(TONE_HZ, 1.0, 44_100), 44_100, "m4a")),
        "undecodable_audio",
        415,
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input_maps_to_its_error_code(case: str) -> None:
    make, code, status = HOSTILE[case]
    with pytest.raises(DecodeError) as caught:
        decode_bytes(make())
    assert (caught.value.code, caught.value.status) == (code, status)
    assert caught.value.detail and str(caught.value) == caught.value.detail


def test_limits_at_the_edges_are_accepted() -> None:
    assert decode_bytes(wav_bytes(MIN_SOURCE_RATE_HZ, 1)).source_sample_rate == MIN_SOURCE_RATE_HZ
    assert decode_bytes(wav_bytes(MAX_SOURCE_RATE_HZ, 1)).source_sample_rate == MAX_SOURCE_RATE_HZ
    audio = decode_bytes(encode_audio(noise(0.2, 44_100, seed=0, channels=32), 44_100, "wav"))
    assert audio.source_channels == 32 and np.isfinite(audio.samples).all()
    widest = encode_audio(noise(0.1, 8_000, seed=0, channels=MAX_CHANNELS), 8_000, "wav")
    assert decode_bytes(widest).source_channels == MAX_CHANNELS


def test_a_one_sample_file_decodes_to_one_sample() -> None:
    # librosa pads its resampled output to ceil(n * 16000 / sr): one input sample gives one output sample.
    assert decode_bytes(wav_bytes(44_100, 1, data=(1000).to_bytes(2, "little", signed=True))).samples.size == 1
    assert decode_bytes(wav_bytes(SAMPLE_RATE, 1, data=(16384).to_bytes(2, "little"))).samples.tolist() == [0.5]


# Truncated files: the prefix that decodes is returned, as every player does.
@pytest.mark.parametrize("fmt", ["mp3", "ogg", "flac", "opus", "wav"])
def test_a_truncated_file_gives_the_prefix_that_decodes(fmt: str) -> None:
    # Some noise keeps the bitrate up, so an ogg page or flac frame spans a small part of the track.
    signal = sine(TONE_HZ, 6.0, 44_100, channels=2) + noise(6.0, 44_100, seed=0, channels=2, amplitude=0.05)
    data = encode_audio(signal, 44_100, fmt)
    audio = decode_bytes(data[: int(len(data) * 0.6)])
    assert 2.5 < audio.duration_seconds < 4.5  # ~60% of 6 s, give or take page/frame granularity
    assert np.isfinite(audio.samples).all()
    assert abs(peak_frequency(audio.samples) - TONE_HZ) < 2.0


def test_corrupt_packets_are_skipped_and_flagged() -> None:
    data = bytearray(encode_audio(sine(TONE_HZ, 4.0, 44_100), 44_100, "mp3"))
    middle = len(data) // 2
    data[middle : middle + 500] = np.random.default_rng(0).bytes(500)
    audio = decode_bytes(bytes(data))
    assert audio.damaged is True
    assert audio.duration_seconds > 3.5  # decoding went on after the damage
    assert np.isfinite(audio.samples).all()


def test_errors_of_the_source_file_itself_are_not_blamed_on_the_upload() -> None:
    class FailingDisk(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            raise OSError(5, "Input/output error")

    with pytest.raises(OSError) as caught:
        decode(FailingDisk(encode_audio(sine(TONE_HZ, 1.0, 8_000), 8_000, "wav")), max_seconds=LONG_LIMIT_S)
    assert not isinstance(caught.value, DecodeError)


def test_a_decoder_seeking_before_the_start_is_the_contents_fault_not_the_files() -> None:
    # libsndfile asked for position -1 on a mutated header; BytesIO's ValueError was recorded as a failure of the
    # upload's file object, and the damaged upload became a server fault (SourceReadError) instead of a 415.
    source = GuardedSource(io.BytesIO(b"abcdef"))
    source.seek(3)
    for offset, whence in ((-1, io.SEEK_SET), (-4, io.SEEK_CUR)):
        with pytest.raises(OSError):
            source.seek(offset, whence)
    assert source.error is None and source.tell() == 3


# ---------------------------------------------------------------------------------------------------------------
# Property: whatever the bytes, a clean result or a DecodeError — never anything else
# ---------------------------------------------------------------------------------------------------------------


def assert_clean_result_or_decode_error(data: bytes) -> None:
    try:
        audio = decode_bytes(data, max_seconds=30.0)
    except DecodeError as exc:
        assert exc.status in (415, 422) and exc.code and exc.detail
        return
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1 and audio.samples.size > 0
    assert np.isfinite(audio.samples).all()
    assert audio.duration_seconds <= 30.0 + 1e-3


@cache
def seed_files() -> tuple[bytes, ...]:
    signal = chord((440, 660), 0.3, 22_050, channels=2)
    return tuple(encode_audio(signal, 22_050, fmt) for fmt in ("wav", "wav_f32", "flac", "mp3", "ogg", "opus", "m4a"))


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_escape(data: bytes) -> None:
    assert_clean_result_or_decode_error(data)


@PROPERTY_SETTINGS
@given(mutated(seed_files()))
def test_mutated_real_files_never_escape(data: bytes) -> None:
    assert_clean_result_or_decode_error(data)


# ---------------------------------------------------------------------------------------------------------------
# Property, extended: header fields chosen by hypothesis, and seeds in the other allowed containers
# ---------------------------------------------------------------------------------------------------------------

_U16, _U32 = 0xFFFF, 0xFFFF_FFFF


@st.composite
def wav_with_arbitrary_header_fields(draw) -> bytes:
    """A RIFF/WAVE file whose format tag, channel count, rate, bit depth and sizes are anything at all.

    Mutating real files rarely produces e.g. 40 000 channels with a plausible layout around them; building the
    header field by field reaches every check of rate, channels and sample format, and every overflow in between.
    """
    format_tag = draw(st.sampled_from([0, 1, 2, 3, 6, 7, 0x11, 0x55, 0xFFFE, 0xFFFF]))
    channels = draw(st.one_of(st.integers(0, 70), st.integers(0, _U16)))
    rate = draw(
        st.one_of(
            st.sampled_from(
                [0, 1, MIN_SOURCE_RATE_HZ - 1, MIN_SOURCE_RATE_HZ, 44_100, MAX_SOURCE_RATE_HZ, MAX_SOURCE_RATE_HZ + 1]
            ),
            st.integers(0, _U32),
        )
    )
    bits = draw(st.sampled_from([0, 1, 4, 8, 12, 16, 20, 24, 32, 64, 128, _U16]))
    block = draw(st.one_of(st.just(channels * bits // 8 & _U16), st.integers(0, _U16)))
    byte_rate = draw(st.one_of(st.just(rate * block & _U32), st.integers(0, _U32)))
    data = draw(st.binary(max_size=4096))
    data_size = draw(st.one_of(st.just(len(data)), st.integers(0, _U32)))
    fmt = b"".join(
        v.to_bytes(n, "little")
        for v, n in ((format_tag, 2), (channels, 2), (rate, 4), (byte_rate, 4), (block, 2), (bits, 2))
    )
    if format_tag == 0xFFFE:  # WAVE_FORMAT_EXTENSIBLE: cbSize, valid bits, channel mask, sub-format GUID
        fmt += (22).to_bytes(2, "little") + draw(st.binary(min_size=22, max_size=22))
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" + data_size.to_bytes(4, "little") + data
    riff_size = draw(st.one_of(st.just(len(body)), st.integers(0, _U32)))
    return b"RIFF" + riff_size.to_bytes(4, "little") + body


@PROPERTY_SETTINGS
@given(wav_with_arbitrary_header_fields())
def test_wav_headers_with_arbitrary_fields_never_escape(data: bytes) -> None:
    assert_clean_result_or_decode_error(data)


@cache
def other_container_seeds() -> tuple[bytes, ...]:
    """The allowed demuxers the seeds above do not exercise: aiff, caf, w64, matroska, aac (ADTS)."""
    signal = chord((440, 660), 0.3, 22_050, channels=2)
    return tuple(encode_audio(signal, 22_050, fmt) for fmt in ("aiff", "caf", "w64", "mka", "aac"))


def test_the_other_container_seeds_decode_when_intact() -> None:
    assert [decode_bytes(data).codec for data in other_container_seeds()] == [
        "pcm_s16be",
        "pcm_s16le",
        "pcm_s16le",
        "flac",
        "aac",
    ]


@pytest.mark.slow
@PROPERTY_SETTINGS
@given(mutated(other_container_seeds(), header_bytes=96))
def test_mutated_files_in_the_other_allowed_containers_never_escape(data: bytes) -> None:
    assert_clean_result_or_decode_error(data)
