"""Decode step: an uploaded audio file → 16 kHz mono float32, streaming and bounded.

Pipeline, one frame at a time (only ``decode``, which returns the whole track, holds it all)::

    PyAV/FFmpeg demux+decode ─▶ float [channels, n] ─▶ mean of channels ─▶ soxr HQ stream ─▶ fixed-size chunks

Why this exact chain: the musicnn models were trained on ``librosa.load(path, sr=16000)``, so the frontend copies
librosa, not FFmpeg:

* **Mono is the mean of the channels** (``librosa.to_mono``). FFmpeg/libswresample's default downmix is
  power-preserving (×1/√2 per channel, 3 dB quieter), which would shift every log-mel value. So swresample is never
  asked to remix or resample: frames are converted to float here and averaged with numpy.
* **Integer PCM is scaled like libsndfile** (soundfile, librosa's loader): ``s16 / 2**15``, ``s32 / 2**31`` (FFmpeg
  hands 24-bit PCM over left-justified in s32, which makes it ``s24 / 2**23``), ``(u8 - 128) / 2**7``.
* **Resampling is soxr "HQ"**, librosa's default ``soxr_hq``, through ``soxr.ResampleStream``, which is
  bit-identical to the one-shot ``soxr.resample`` librosa calls while keeping memory bounded. Like
  ``librosa.resample(fix=True)`` the output length is ``ceil(n * 16000 / rate)`` (soxr alone rounds; the
  difference is one trailing zero at most). A source already at 16 kHz is passed through, as librosa does.

Limits (each a :class:`DecodeError` with a stable ``code``; see docs/decode.md):

* Source sample rate in [``MIN_SOURCE_RATE_HZ``, ``MAX_SOURCE_RATE_HZ``], at most ``MAX_CHANNELS`` channels.
* Samples finite and within ±``MAX_SAMPLE_MAGNITUDE`` (float sources), checked on every group as it decodes.
* ``max_seconds`` of decoded audio, enforced *while* decoding: a tiny file that decodes to hours stops as soon as
  the decoded duration passes the cap, whatever its header says.
* Only the demuxers in ``ALLOWED_DEMUXERS`` are used: no playlist/concat demuxer can make FFmpeg open other
  files or URLs, and nothing exotic is probed. FFmpeg's probe reads at most ``PROBE_SIZE_BYTES``.

Damage: decoding keeps going past packets the decoder rejects (as players and the ffmpeg CLI do) and stops at
the first demuxer error or after ``MAX_CONSECUTIVE_BAD_PACKETS`` rejected packets in a row. What decoded before
that is kept: a truncated mp3/ogg/flac gives its prefix, and ``DecodedAudio.damaged`` tells that an error was met
(a file cut at a frame boundary may end without one). If nothing decoded, the file is ``undecodable_audio``.

Errors raised by the *source file object itself* (e.g. an ``OSError`` from the disk behind the spooled upload)
are not about the content and propagate unchanged: they are server faults, not 4xx answers.

Decoding is CPU-bound (FFmpeg, soxr, numpy); the service runs it in its decode thread pool. Each decode uses one
FFmpeg thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import av
import av.error
import numpy as np
import soxr

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # Hz: what every model consumes
MIN_SOURCE_RATE_HZ = 4_000  # Hz: below this there is no music left to tag (8 kHz telephony still passes)
MAX_SOURCE_RATE_HZ = 384_000  # Hz: highest rate of real PCM/FLAC masters (8× 48 kHz)
MAX_CHANNELS = 64  # channels: beyond ambisonics/22.2 layouts; bounds per-frame memory (64 ch × frame × 8 B)
# Largest sample magnitude accepted (only float sources can exceed full scale, 1.0): 120 dB above full scale, far
# beyond any real mix and far below where the graph's power spectrum overflows float32 (tags finite at ±1e16, NaN
# from ±1e17: the API would answer with nulls).
MAX_SAMPLE_MAGNITUDE = 1e6
DEFAULT_CHUNK_SAMPLES = 10 * SAMPLE_RATE  # samples at 16 kHz per yielded chunk: 10 s = 640 KB of float32

GROUP_SAMPLES = 65_536  # source samples converted and resampled per call (≈1.5 s at 44.1 kHz)
RESAMPLE_QUALITY = "HQ"  # soxr quality recipe; librosa.load's default res_type "soxr_hq" is the same recipe

# FFmpeg's defaults, spelled out so the bound is visible: the probe reads at most this many bytes
# (enough to get past large ID3 cover art) and analyses at most this much stream time.
PROBE_SIZE_BYTES = 5_000_000
ANALYZE_DURATION_US = 5_000_000  # microseconds

# Demuxers allowed to parse an upload: wav/w64/aiff/caf (PCM), flac, mp3, ogg (vorbis, opus, flac),
# mov (mp4/m4a/3gp: aac, alac), aac (ADTS), matroska (mka/webm: opus, vorbis). No hls/concat/dash/image2-style
# demuxers, which would open further files or URLs named inside the upload.
ALLOWED_DEMUXERS = ("wav", "w64", "aiff", "caf", "flac", "mp3", "ogg", "mov", "aac", "matroska")

# Give up after this many packets in a row that the decoder rejects: real damage is local (a few frames), a
# stream of rejects means the rest is garbage and decoding it would only burn CPU.
MAX_CONSECUTIVE_BAD_PACKETS = 32

# What PyAV raises for bad content: every av.error.* is an FFmpegError (a ValueError); plain ValueError /
# IndexError / EOFError / OverflowError come from its Python-side checks on odd frames and sizes.
_CONTENT_ERRORS = (av.error.FFmpegError, ValueError, IndexError, EOFError, OverflowError)

# numpy type of one sample, per FFmpeg sample format (planar formats drop their trailing "p").
_SAMPLE_DTYPES = {"u8": np.uint8, "s16": np.int16, "s32": np.int32, "s64": np.int64, "flt": np.float32, "dbl": np.float64}

# libsndfile's int → float normalisation (what soundfile and so librosa.load return), per FFmpeg sample format.
_INT_FULL_SCALE = {"s16": 2.0**15, "s32": 2.0**31, "s64": 2.0**63}
_U8_OFFSET = 128.0
_U8_FULL_SCALE = 2.0**7


class DecodeError(Exception):
    """The upload cannot be turned into audio to tag; ``code`` is stable, ``status`` is the HTTP status."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        # (status, code, detail): the order of service.errors.Problem, which the HTTP edge maps this to. Checked,
        # because a call in the other order would otherwise only fail when the error is rendered.
        if not isinstance(status, int) or not isinstance(code, str):
            raise TypeError(f"DecodeError(status: int, code: str, detail), got ({status!r}, {code!r}, ...)")
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail

    def __repr__(self) -> str:
        return f"DecodeError(status={self.status}, code={self.code!r}, detail={self.detail!r})"


# One constructor per code, so the code ↔ status pairing lives in one place.
def _undecodable(detail: str) -> DecodeError:
    return DecodeError(415, "undecodable_audio", detail)


def _unsupported_rate(rate: int) -> DecodeError:
    return DecodeError(
        422,
        "unsupported_sample_rate",
        f"Sample rate {rate} Hz is outside the accepted range {MIN_SOURCE_RATE_HZ}–{MAX_SOURCE_RATE_HZ} Hz.",
    )


def _too_many_channels(channels: int) -> DecodeError:
    return DecodeError(
        422, "too_many_channels", f"The audio has {channels} channels; at most {MAX_CHANNELS} are accepted."
    )


def _too_long(max_seconds: float) -> DecodeError:
    return DecodeError(422, "audio_too_long", f"The audio is longer than the {max_seconds:g} s limit.")


def _empty() -> DecodeError:
    return DecodeError(422, "empty_audio", "The file holds an audio stream but it decodes to no samples.")


def _non_finite() -> DecodeError:
    return DecodeError(422, "non_finite_audio", "The audio contains NaN or infinite sample values.")


def _out_of_range() -> DecodeError:
    return DecodeError(
        422,
        "audio_out_of_range",
        f"The audio has sample values beyond ±{MAX_SAMPLE_MAGNITUDE:g} (120 dB above full scale); it is not audio.",
    )


@dataclass(frozen=True)
class DecodedAudio:
    """A whole decoded upload. ``samples``: float32, mono, ``SAMPLE_RATE`` Hz."""

    samples: np.ndarray
    duration_seconds: float  # len(samples) / SAMPLE_RATE
    source_sample_rate: int  # Hz, of the first decoded frame
    source_channels: int  # of the first decoded frame
    codec: str  # FFmpeg codec name: "mp3", "vorbis", "opus", "aac", "flac", "pcm_s16le", ...
    damaged: bool = False  # decoding stopped early or skipped packets on errors; samples hold what decoded


@dataclass
class _SourceInfo:
    """Filled in by ``_decode_chunks`` as it learns things; ``decode`` turns it into a ``DecodedAudio``."""

    sample_rate: int = 0
    channels: int = 0
    codec: str = ""
    damaged: bool = False


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers: sample conversion, mixing, checks
# ---------------------------------------------------------------------------------------------------------------


def frame_planes(frame: av.AudioFrame) -> list[np.ndarray]:
    """A frame's samples as views of FFmpeg's buffers, no copy: one array per channel for a planar format, one
    interleaved array otherwise (what ``AudioFrame.to_ndarray`` stacks into a new array)."""
    sample_format = frame.format.name
    planar = frame.format.is_planar
    dtype = _SAMPLE_DTYPES.get(sample_format[:-1] if planar else sample_format)
    if dtype is None:
        raise ValueError(f"unsupported sample format {sample_format!r}")
    count = frame.samples if planar else frame.samples * frame.layout.nb_channels
    return [np.frombuffer(plane, dtype, count) for plane in frame.planes]


def join_planes(frames: list[list[np.ndarray]]) -> np.ndarray:
    """Consecutive frames' planes (``frame_planes``) → one ``[planes, samples]`` array, copying each sample once."""
    total = sum(planes[0].size for planes in frames)
    joined = np.empty((len(frames[0]), total), frames[0][0].dtype)
    offset = 0
    for planes in frames:
        n = planes[0].size
        for row, plane in zip(joined, planes):
            row[offset : offset + n] = plane
        offset += n
    return joined


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
        raise _unsupported_rate(rate)


def check_channels(channels: int) -> None:
    if channels <= 0:
        raise _undecodable("The audio stream has no channels.")
    if channels > MAX_CHANNELS:
        raise _too_many_channels(channels)


def _check_finite(samples: np.ndarray) -> None:
    if not np.isfinite(samples).all():
        raise _non_finite()


def _check_range(samples: np.ndarray) -> None:
    """NaN or ±inf: non_finite_audio; finite beyond ±MAX_SAMPLE_MAGNITUDE: audio_out_of_range."""
    with np.errstate(invalid="ignore"):
        if (np.abs(samples) <= MAX_SAMPLE_MAGNITUDE).all():  # NaN compares False: one pass checks both
            return
    _check_finite(samples)
    raise _out_of_range()


def _checked_finite(samples: np.ndarray) -> np.ndarray:
    _check_finite(samples)
    return samples


# ---------------------------------------------------------------------------------------------------------------
# Resampling and rechunking (streaming, bounded)
# ---------------------------------------------------------------------------------------------------------------


class _Resampler:
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
        tail = np.zeros(0, np.float32) if self._stream is None else self._stream.resample_chunk(
            np.zeros(0, np.float32), last=True
        )
        # soxr emits round(n * ratio) samples; librosa pads to ceil(n * ratio) (fix_length). Match it.
        missing = resampled_length(self._n_in, self.rate) - (self._n_out + tail.size)
        if missing > 0:
            tail = np.concatenate([tail, np.zeros(missing, np.float32)])
        elif missing < 0:
            tail = tail[: max(tail.size + missing, 0)]
        self._n_out += tail.size
        return tail


def _rechunk(pieces: Iterator[np.ndarray], chunk_samples: int) -> Iterator[np.ndarray]:
    """Regroup arbitrary-sized pieces into chunks of exactly ``chunk_samples`` (the last one may be shorter)."""
    pending: list[np.ndarray] = []
    n_pending = 0
    for piece in pieces:
        if piece.size == 0:
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


# ---------------------------------------------------------------------------------------------------------------
# FFmpeg side
# ---------------------------------------------------------------------------------------------------------------


def _open_container(source: BinaryIO) -> av.container.InputContainer:
    try:
        return av.open(
            source,
            mode="r",
            format=None,
            container_options={
                "format_whitelist": ",".join(ALLOWED_DEMUXERS),
                # Nested opens (none of the allowed demuxers does any) may use no protocol at all.
                "protocol_whitelist": "none",
                "probesize": str(PROBE_SIZE_BYTES),
                "analyzeduration": str(ANALYZE_DURATION_US),
            },
            metadata_errors="ignore",
        )
    except _CONTENT_ERRORS as exc:
        raise _undecodable(f"The file is not a supported audio format ({_reason(exc)}).") from exc


def _pick_audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        raise _undecodable("The file holds no audio stream.")
    stream = container.streams.best("audio") or container.streams.audio[0]
    ctx = stream.codec_context
    if ctx is None:  # PyAV leaves it unset when FFmpeg has no decoder for the stream's codec
        raise _undecodable("The audio codec of the file is not supported.")
    # Header checks refuse the obvious cases before any decoding; frames are checked again (headers can lie).
    if ctx.sample_rate:
        check_sample_rate(ctx.sample_rate)
    check_channels(ctx.channels)
    # One decoding thread: the service bounds concurrency itself (decode_threads), and frame threading
    # (e.g. FFmpeg's flac decoder) would add threads and latency per upload for no gain on 2 cores.
    ctx.thread_count = 1
    return stream


def _reason(exc: BaseException) -> str:
    """Short, non-leaky reason for a detail message: FFmpeg's error string without the file name."""
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _decoded_frames(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, info: _SourceInfo
) -> Iterator[av.AudioFrame]:
    """Every decodable frame of ``stream``; skips rejected packets and stops at demuxer errors (see module doc)."""
    packets = container.demux(stream)
    consecutive_bad = 0
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return  # demux ends with an empty packet that already flushed the decoder
        except _CONTENT_ERRORS as exc:
            info.damaged = True
            log.info("demuxer stopped early: %s", _reason(exc))
            break
        try:
            frames = packet.decode()
        except _CONTENT_ERRORS as exc:
            info.damaged = True
            consecutive_bad += 1
            if consecutive_bad >= MAX_CONSECUTIVE_BAD_PACKETS:
                log.info("decoder rejected %d packets in a row, stopping: %s", consecutive_bad, _reason(exc))
                break
            continue
        consecutive_bad = 0
        yield from frames
    # Stopped on an error: drain what the decoder still buffers, if it can.
    try:
        yield from stream.codec_context.decode(None)
    except _CONTENT_ERRORS:
        pass


def _mono_pieces(
    frames: Iterator[av.AudioFrame], info: _SourceInfo, max_seconds: float
) -> Iterator[np.ndarray]:
    """Frames → resampled 16 kHz mono pieces, enforcing rate, channel, finiteness and duration limits.

    Frames (~1 000 samples each) are converted, mixed and resampled in groups of ``GROUP_SAMPLES``: per-frame
    numpy and soxr calls cost more than FFmpeg's decoding itself. Results are bit-identical either way.
    """
    resampler: _Resampler | None = None
    group: list[list[np.ndarray]] = []  # plane views of the frames of one (rate, format, channels) run
    group_key: tuple[int, str, int] | None = None
    group_samples = 0
    # Decoded duration = whole earlier segments + samples of the current one / its rate: counting samples (not
    # adding up per-frame float seconds) keeps the cap exact, so a 2.0 s file passes max_seconds=2.0.
    earlier_segments_seconds = 0.0
    segment_samples = 0

    def flush() -> np.ndarray:
        nonlocal group, group_samples
        rate, sample_format, channels = group_key
        data = join_planes(group)
        group, group_samples = [], 0
        mono = mix_to_mono(to_float_planar(data, sample_format, channels))
        _check_range(mono)
        return _checked_finite(resampler.push(mono))

    for frame in frames:
        if frame.samples == 0:
            continue
        rate = frame.sample_rate
        channels = frame.layout.nb_channels
        check_sample_rate(rate)
        check_channels(channels)
        if not info.sample_rate:
            info.sample_rate, info.channels = rate, channels
        key = (rate, frame.format.name, channels)
        if group and key != group_key:
            yield flush()
        if resampler is None or resampler.rate != rate:
            # A rate change mid-stream (e.g. concatenated mp3s): finish the old segment, start a new one.
            if resampler is not None:
                earlier_segments_seconds += segment_samples / resampler.rate
                yield _checked_finite(resampler.finish())
            resampler = _Resampler(rate)
            segment_samples = 0
        segment_samples += frame.samples
        if earlier_segments_seconds + segment_samples / rate > max_seconds:
            raise _too_long(max_seconds)
        group.append(frame_planes(frame))
        group_key = key
        group_samples += frame.samples
        if group_samples >= GROUP_SAMPLES:
            yield flush()
    if group:
        yield flush()
    if resampler is not None:
        yield _checked_finite(resampler.finish())


def _decode_chunks(
    source: BinaryIO, max_seconds: float, chunk_samples: int, info: _SourceInfo
) -> Iterator[np.ndarray]:
    source.seek(0)  # PyAV's I/O seeks absolute offsets: the file must be read from its start
    with _open_container(source) as container:
        stream = _pick_audio_stream(container)
        info.codec = stream.codec_context.codec.canonical_name
        n_out = 0
        try:
            frames = _decoded_frames(container, stream, info)
            for chunk in _rechunk(_mono_pieces(frames, info, max_seconds), chunk_samples):
                n_out += chunk.size
                yield chunk
        except _CONTENT_ERRORS as exc:
            # Anything PyAV/FFmpeg raises outside demux and packet decoding (e.g. an unconvertible frame).
            raise _undecodable(f"The audio stream cannot be decoded ({_reason(exc)}).") from exc
    if n_out == 0:
        if info.damaged:
            raise _undecodable("No audio could be decoded from the file.")
        raise _empty()


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------


def _validate_args(max_seconds: float, chunk_samples: int) -> None:
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds!r}")
    if chunk_samples < 1:
        raise ValueError(f"chunk_samples must be >= 1, got {chunk_samples!r}")


def iter_decoded(
    source: BinaryIO, *, max_seconds: float, chunk_samples: int = DEFAULT_CHUNK_SAMPLES
) -> Iterator[np.ndarray]:
    """Decode ``source`` (seekable binary file, read from offset 0) into float32 mono ``SAMPLE_RATE`` chunks.

    Chunks hold exactly ``chunk_samples`` samples but the last. Memory stays bounded whatever the track length.
    Raises :class:`DecodeError` (possibly after some chunks were yielded, e.g. ``audio_too_long``) for bad
    content; ``ValueError`` at call time for bad arguments. Closing the generator closes the container.
    """
    _validate_args(max_seconds, chunk_samples)
    return _decode_chunks(source, max_seconds, chunk_samples, _SourceInfo())


def decode(source: BinaryIO, *, max_seconds: float) -> DecodedAudio:
    """Decode a whole upload (its duration is capped by ``max_seconds``) into a :class:`DecodedAudio`."""
    _validate_args(max_seconds, DEFAULT_CHUNK_SAMPLES)
    info = _SourceInfo()
    chunks = list(_decode_chunks(source, max_seconds, DEFAULT_CHUNK_SAMPLES, info))
    samples = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    return DecodedAudio(
        samples=samples,
        duration_seconds=samples.size / SAMPLE_RATE,
        source_sample_rate=info.sample_rate,
        source_channels=info.channels,
        codec=info.codec,
        damaged=info.damaged,
    )
