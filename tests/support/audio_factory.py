"""Test helper: real audio files made by real encoders, and the signals to put in them.

Signals are float32 arrays shaped ``[channels, samples]`` in [-1, 1]. Files are produced in memory and returned as
bytes (``encode_audio``), or also written to a path / binary file (``write_audio``). pytest puts ``tests/`` on
``sys.path`` (no ``__init__.py``), so test modules import it as ``audio_factory``::

    from tests.support.audio_factory import encode_audio, sine, stereo, write_audio

    data = encode_audio(sine(440, 2.0, 44_100, channels=2), 44_100, "mp3")   # bytes of an .mp3
    write_audio(tmp_path / "a.flac", stereo(sine(440, 1, 8_000), sine(660, 1, 8_000)), 8_000, "flac")

Formats (``FORMATS``; the name is a sensible file extension, minus the ``wav_*`` suffixes). ``LOSSLESS_FORMATS``
decode back to exactly the samples given, after 16/24/32-bit quantisation.

* ``wav``, ``wav_s24``, ``wav_s32``, ``wav_f32``: WAV with PyAV's pcm_s16le / pcm_s24le / pcm_s32le / pcm_f32le; any
  rate, any channel count. ``wav_f32`` writes values as given (NaN and inf included).
* ``aiff``: AIFF, pcm_s16be.
* ``flac``: PyAV's flac, 16-bit, 1–8 channels. FFmpeg's muxer puts 8 KB of padding after the header.
* ``mp3``: PyAV's libmp3lame, 1–2 channels, MPEG-1/2/2.5 rates (8–48 kHz); writes a LAME gapless header.
* ``ogg``: Ogg Vorbis from soundfile (libsndfile's libvorbis). PyAV's bundled FFmpeg has no libvorbis, and its native
  "vorbis" encoder is experimental and stereo-only.
* ``opus`` (Ogg) and ``webm`` (Matroska/WebM, what browsers record): PyAV's libopus, 1–2 channels. Opus runs at
  8/12/16/24/48 kHz: other rates are resampled to 48 kHz with soxr first (the decoder outputs 48 kHz anyway).
* ``m4a``: PyAV's aac (FFmpeg's native AAC encoder) in an iPod/MP4 container, 1–2 channels, index (moov) at the end;
  the edit list makes decoders drop the encoder priming.
* ``aac``: the same encoder as a raw ADTS stream (.aac): no gapless info, so the 1024-sample priming is decoded too.
* ``caf``, ``w64`` (pcm_s16le) and ``mka`` (Matroska, flac): the remaining containers the decoder allows, in
  ``CONTAINER_FORMATS`` rather than ``FORMATS``: seeds for malformed-input tests.

Lossy encoders add priming/padding samples (mp3 ≈ one 1152-sample frame, aac 1024 + a partial frame); decoders
remove part of it, so decoded lengths differ from the input by up to ~2 codec frames.

For malformed files, start from one of these and cut or corrupt its bytes in the test itself.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import soundfile
import soxr

BLOCK_SAMPLES = 8192  # samples per frame handed to an encoder: bounds memory for long signals
OPUS_RATES_HZ = (8_000, 12_000, 16_000, 24_000, 48_000)  # input rates libopus accepts
OPUS_FALLBACK_RATE_HZ = 48_000
MP3_RATES_HZ = (8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000)


@dataclass(frozen=True)
class _PyAVSpec:
    container: str  # FFmpeg muxer
    codec: str  # FFmpeg encoder
    sample_format: str  # what the encoder is fed
    max_channels: int | None = None
    rates: tuple[int, ...] | None = None  # None: any rate


_PYAV_FORMATS = {
    "wav": _PyAVSpec("wav", "pcm_s16le", "s16"),
    "wav_s24": _PyAVSpec("wav", "pcm_s24le", "s32"),  # FFmpeg takes 24-bit PCM left-justified in s32
    "wav_s32": _PyAVSpec("wav", "pcm_s32le", "s32"),
    "wav_f32": _PyAVSpec("wav", "pcm_f32le", "flt"),
    "flac": _PyAVSpec("flac", "flac", "s16", max_channels=8),
    "mp3": _PyAVSpec("mp3", "libmp3lame", "fltp", max_channels=2, rates=MP3_RATES_HZ),
    "opus": _PyAVSpec("ogg", "libopus", "flt", max_channels=2, rates=OPUS_RATES_HZ),
    "m4a": _PyAVSpec("ipod", "aac", "fltp", max_channels=2),
    "aac": _PyAVSpec("adts", "aac", "fltp", max_channels=2),
    "aiff": _PyAVSpec("aiff", "pcm_s16be", "s16"),
    "webm": _PyAVSpec("webm", "libopus", "flt", max_channels=2, rates=OPUS_RATES_HZ),
}
FORMATS = (*_PYAV_FORMATS, "ogg")
# Further containers the decoder allows, for malformed-input seeds; not in FORMATS (no format-matrix test uses them).
CONTAINER_FORMATS = {
    "caf": _PyAVSpec("caf", "pcm_s16le", "s16"),
    "w64": _PyAVSpec("w64", "pcm_s16le", "s16"),
    "mka": _PyAVSpec("matroska", "flac", "s16", max_channels=8),
}
LOSSLESS_FORMATS = ("wav", "wav_s24", "wav_s32", "wav_f32", "flac", "aiff")


# ---------------------------------------------------------------------------------------------------------------
# Signals: float32 [channels, samples]
# ---------------------------------------------------------------------------------------------------------------


def _times(seconds: float, sample_rate: int) -> np.ndarray:
    return np.arange(round(seconds * sample_rate)) / sample_rate


def _as_channels(mono: np.ndarray, channels: int) -> np.ndarray:
    return np.repeat(mono[None, :].astype(np.float32), channels, axis=0)


def sine(freq_hz: float, seconds: float, sample_rate: int, *, amplitude: float = 0.5, channels: int = 1) -> np.ndarray:
    """A sine, identical in every channel."""
    return _as_channels(amplitude * np.sin(2 * np.pi * freq_hz * _times(seconds, sample_rate)), channels)


def chord(
    freqs_hz: tuple[float, ...], seconds: float, sample_rate: int, *, amplitude: float = 0.5, channels: int = 1
) -> np.ndarray:
    """Equal-level sum of sines whose peak never exceeds ``amplitude``."""
    t = _times(seconds, sample_rate)
    mix = sum(np.sin(2 * np.pi * f * t) for f in freqs_hz) / len(freqs_hz)
    return _as_channels(amplitude * mix, channels)


def noise(seconds: float, sample_rate: int, *, seed: int, amplitude: float = 0.25, channels: int = 1) -> np.ndarray:
    """Uniform white noise in [-amplitude, amplitude), independent per channel, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    return rng.uniform(-amplitude, amplitude, size=(channels, n)).astype(np.float32)


def sweep(
    f0_hz: float, f1_hz: float, seconds: float, sample_rate: int, *, amplitude: float = 0.5, channels: int = 1
) -> np.ndarray:
    """Linear chirp from ``f0_hz`` to ``f1_hz``."""
    t = _times(seconds, sample_rate)
    phase = 2 * np.pi * (f0_hz * t + (f1_hz - f0_hz) * t**2 / (2 * max(seconds, 1e-12)))
    return _as_channels(amplitude * np.sin(phase), channels)


def silence(seconds: float, sample_rate: int, *, channels: int = 1) -> np.ndarray:
    return np.zeros((channels, round(seconds * sample_rate)), np.float32)


def stereo(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two mono signals (``[1, n]`` or ``[n]``) as one ``[2, n]`` signal."""
    return np.stack([np.ravel(left), np.ravel(right)]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------------------------


def _layout(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels} channels")


def _to_sample_format(block: np.ndarray, sample_format: str) -> np.ndarray:
    """float [channels, n] → the array ``AudioFrame.from_ndarray`` wants for ``sample_format``."""
    if sample_format == "s16":
        data = np.clip(np.round(block * 2**15), -(2**15), 2**15 - 1).astype(np.int16)
    elif sample_format == "s32":
        data = np.clip(np.round(block.astype(np.float64) * 2**31), -(2**31), 2**31 - 1).astype(np.int32)
    else:  # flt / fltp
        data = block.astype(np.float32)
    if sample_format.endswith("p"):
        return np.ascontiguousarray(data)
    return np.ascontiguousarray(data.T).reshape(1, -1)  # packed: interleaved in one plane


def _encode_pyav(
    samples: np.ndarray,
    sample_rate: int,
    spec: _PyAVSpec,
    bit_rate: int | None,
    quality: int | None = None,
    muxer_options: dict[str, str] | None = None,
) -> bytes:
    if spec.rates is not None and sample_rate not in spec.rates:
        if spec.codec != "libopus":  # only Opus gets resampled: other codecs have no such excuse
            raise ValueError(f"{spec.codec} cannot encode at {sample_rate} Hz (supported: {spec.rates})")
        samples = soxr.resample(samples.T, sample_rate, OPUS_FALLBACK_RATE_HZ, quality="HQ").T.astype(np.float32)
        sample_rate = OPUS_FALLBACK_RATE_HZ
    channels = samples.shape[0]
    layout = _layout(channels)
    out = io.BytesIO()
    with av.open(out, mode="w", format=spec.container, options=muxer_options or {}) as container:
        stream = container.add_stream(spec.codec, rate=sample_rate, layout=layout)
        stream.codec_context.format = spec.sample_format
        if bit_rate is not None:
            stream.codec_context.bit_rate = bit_rate
        if quality is not None:  # variable bit rate at this quality (libmp3lame: 0 best … 9 smallest, LAME's -V)
            stream.codec_context.qscale = quality
            stream.codec_context.flags |= av.codec.context.Flags.qscale
        for start in range(0, samples.shape[1], BLOCK_SAMPLES):
            block = samples[:, start : start + BLOCK_SAMPLES]
            frame = av.AudioFrame.from_ndarray(_to_sample_format(block, spec.sample_format), spec.sample_format, layout)
            frame.sample_rate = sample_rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def _encode_vorbis(samples: np.ndarray, sample_rate: int) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, samples.T, sample_rate, format="OGG", subtype="VORBIS")
    return out.getvalue()


def encode_audio(
    samples: np.ndarray,
    sample_rate: int,
    fmt: str,
    *,
    bit_rate: int | None = None,
    quality: int | None = None,
    muxer_options: dict[str, str] | None = None,
) -> bytes:
    """Encode ``samples`` (float ``[channels, n]``, or ``[n]`` for mono) as a complete file of format ``fmt``.

    ``bit_rate`` (bit/s) is passed to the PyAV encoders (lossy ones use it); ``quality`` makes them encode at a
    variable bit rate instead; ``muxer_options`` go to FFmpeg's muxer (mp3: ``write_xing``, ``write_id3v1``).
    ``ogg`` keeps libsndfile's default quality. Raises ``ValueError`` for an unknown format, or a channel count or
    rate the format cannot take.
    """
    samples = np.atleast_2d(np.asarray(samples, dtype=np.float32))
    channels = samples.shape[0]
    if fmt == "ogg":
        return _encode_vorbis(samples, sample_rate)
    try:
        spec = (_PYAV_FORMATS | CONTAINER_FORMATS)[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; known: {(*FORMATS, *CONTAINER_FORMATS)}") from None
    if spec.max_channels is not None and channels > spec.max_channels:
        raise ValueError(f"{fmt} is limited to {spec.max_channels} channels here, got {channels}")
    return _encode_pyav(samples, sample_rate, spec, bit_rate, quality, muxer_options)


def write_audio(
    dest: str | Path | BinaryIO, samples: np.ndarray, sample_rate: int, fmt: str, *, bit_rate: int | None = None
) -> bytes:
    """Encode like ``encode_audio``, write the file to ``dest`` (a path or a writable binary file), return its bytes."""
    data = encode_audio(samples, sample_rate, fmt, bit_rate=bit_rate)
    if isinstance(dest, (str, Path)):
        Path(dest).write_bytes(data)
    else:
        dest.write(data)
    return data
