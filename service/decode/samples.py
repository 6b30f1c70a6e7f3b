"""Decoder-independent sample handling: float conversion, mono, checks, resampling to 16 kHz, rechunking.

Both decoders (FFmpeg in ``ffmpeg.py``, libsndfile in ``sndfile.py``) hand float mono pieces at their source rate to
:class:`ModelRateStream`, so the frontend the models were trained on (``librosa.load``: mean of channels, soxr HQ,
``ceil`` output length) and every limit is the same whichever decoder read the file.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import soxr

from service.decode import errors
from service.decode.limits import (
    MAX_CHANNELS,
    MAX_SAMPLE_MAGNITUDE,
    MAX_SOURCE_RATE_HZ,
    MIN_SOURCE_RATE_HZ,
    RESAMPLE_QUALITY,
    SAMPLE_RATE,
)

# libsndfile's int → float normalisation (what soundfile and so librosa.load return), per FFmpeg sample format.
_INT_FULL_SCALE = {"s16": 2.0**15, "s32": 2.0**31, "s64": 2.0**63}
_U8_OFFSET = 128.0
_U8_FULL_SCALE = 2.0**7


def to_float_planar(data: np.ndarray, sample_format: str, channels: int) -> np.ndarray:
    """FFmpeg frame data (``join_planes`` of ``frame_planes``) → float32 ``[channels, samples]`` scaled like libsndfile.

    ``sample_format`` is FFmpeg's name ("s16", "fltp", ...): a trailing "p" means planar data ``[channels, n]``,
    otherwise it is interleaved ``[1, n * channels]``.
    """
    planar = sample_format.endswith("p")
    base = sample_format[:-1] if planar else sample_format
    data = data if planar else data.reshape(-1, channels).T
    if base in ("flt", "dbl"):
        return data.astype(np.float32, copy=False)
    if base in _INT_FULL_SCALE:
        # libsndfile's own arithmetic: (float) sample * (1 / full scale). The scale is a power of two, so this is
        # exact for s16 and rounds s32 once, in the int → float32 conversion, as libsndfile does.
        return data.astype(np.float32) * np.float32(1.0 / _INT_FULL_SCALE[base])
    if base == "u8":
        return (data.astype(np.float32) - np.float32(_U8_OFFSET)) * np.float32(1.0 / _U8_FULL_SCALE)
    raise ValueError(f"unsupported sample format {sample_format!r}")


def mix_to_mono(planar: np.ndarray) -> np.ndarray:
    """Mean of the channels, exactly ``librosa.to_mono`` (float32 arithmetic). Input ``[channels, n]``."""
    if planar.shape[0] == 1:
        return planar[0]
    # Huge float samples may overflow to inf here: that is reported as non_finite_audio afterwards, not warned.
    with np.errstate(over="ignore", invalid="ignore"):
        return np.mean(planar, axis=0, dtype=np.float32)


def resampled_length(n_in: int, rate: int) -> int:
    """Output length for ``n_in`` samples at ``rate`` Hz: ``ceil(n_in * SAMPLE_RATE / rate)`` like librosa."""
    return -(-n_in * SAMPLE_RATE // rate)


def check_sample_rate(rate: int) -> None:
    if not MIN_SOURCE_RATE_HZ <= rate <= MAX_SOURCE_RATE_HZ:
        raise errors.unsupported_rate(rate)


def check_channels(channels: int) -> None:
    if channels <= 0:
        raise errors.undecodable("The audio stream has no channels.")
    if channels > MAX_CHANNELS:
        raise errors.too_many_channels(channels)


def _check_finite(samples: np.ndarray) -> None:
    if not np.isfinite(samples).all():
        raise errors.non_finite()


def check_range(samples: np.ndarray) -> None:
    """NaN or ±inf: non_finite_audio; finite beyond ±MAX_SAMPLE_MAGNITUDE: audio_out_of_range."""
    with np.errstate(invalid="ignore"):
        if (np.abs(samples) <= MAX_SAMPLE_MAGNITUDE).all():  # NaN compares False: one pass checks both
            return
    _check_finite(samples)
    raise errors.out_of_range()


def checked_finite(samples: np.ndarray) -> np.ndarray:
    _check_finite(samples)
    return samples


class Resampler:
    """Mono float32 at one source rate → ``SAMPLE_RATE``, streaming; ``finish`` flushes and fixes the length."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        # At 16 kHz already: pass through untouched (librosa.resample returns its input when the rates match).
        self._stream = (
            None
            if rate == SAMPLE_RATE
            else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)
        )
        self._n_in = 0
        self._n_out = 0

    def push(self, mono: np.ndarray) -> np.ndarray:
        self._n_in += mono.size
        out = mono if self._stream is None else self._stream.resample_chunk(mono, last=False)
        self._n_out += out.size
        return out

    def finish(self) -> np.ndarray:
        tail = (
            np.zeros(0, np.float32)
            if self._stream is None
            else self._stream.resample_chunk(np.zeros(0, np.float32), last=True)
        )
        # soxr emits round(n * ratio) samples; librosa pads to ceil(n * ratio) (fix_length). Match it.
        missing = resampled_length(self._n_in, self.rate) - (self._n_out + tail.size)
        if missing > 0:
            tail = np.concatenate([tail, np.zeros(missing, np.float32)])
        elif missing < 0:
            tail = tail[: max(tail.size + missing, 0)]
        self._n_out += tail.size
        return tail


class ModelRateStream:
    """Mono pieces at source rates → ``SAMPLE_RATE`` pieces, with the duration cap and the sample checks.

    A decoder first ``admit``s each block of source samples (the cap is enforced there, before the block is
    converted), then ``push``es the block's mono samples. A rate change mid-stream (e.g. concatenated mp3s) ends
    the old segment's resampler; ``admit`` returns that segment's tail. Decoded duration = whole earlier segments
    + samples of the current one / its rate: counting samples (not adding up per-frame float seconds) keeps the
    cap exact, so a 2.0 s file passes max_seconds=2.0.
    """

    def __init__(self, max_seconds: float) -> None:
        self.max_seconds = max_seconds
        self._resampler: Resampler | None = None
        self._earlier_segments_seconds = 0.0
        self._segment_samples = 0

    def admit(self, rate: int, n_samples: int) -> np.ndarray | None:
        tail = None
        if self._resampler is None or self._resampler.rate != rate:
            if self._resampler is not None:
                self._earlier_segments_seconds += self._segment_samples / self._resampler.rate
                tail = checked_finite(self._resampler.finish())
            self._resampler = Resampler(rate)
            self._segment_samples = 0
        self._segment_samples += n_samples
        if self._earlier_segments_seconds + self._segment_samples / rate > self.max_seconds:
            raise errors.too_long(self.max_seconds)
        return tail

    def push(self, mono: np.ndarray) -> np.ndarray:
        check_range(mono)
        return checked_finite(self._resampler.push(mono))

    def finish(self) -> np.ndarray | None:
        return None if self._resampler is None else checked_finite(self._resampler.finish())


def rechunk(pieces: Iterator[np.ndarray], chunk_samples: int) -> Iterator[np.ndarray]:
    """Regroup arbitrary-sized pieces into chunks of exactly ``chunk_samples`` (the last one may be shorter)."""
    pending: list[np.ndarray] = []
    n_pending = 0
    for piece in pieces:
        if piece is None or piece.size == 0:
            continue
        pending.append(piece)
        n_pending += piece.size
        if n_pending >= chunk_samples:
            joined = np.concatenate(pending)
            n_full = joined.size - joined.size % chunk_samples
            for start in range(0, n_full, chunk_samples):
                yield joined[start : start + chunk_samples]
            pending = [joined[n_full:]] if n_full < joined.size else []
            n_pending = joined.size - n_full
    if n_pending:
        yield np.concatenate(pending)
