"""The primary decoder: PyAV/FFmpeg demux + decode, one frame at a time (see ``service.decode`` for the chain).

* Only the demuxers in ``ALLOWED_DEMUXERS`` are used: no playlist/concat demuxer can make FFmpeg open other
  files or URLs, and nothing exotic is probed. FFmpeg's probe reads at most ``PROBE_SIZE_BYTES``.
* swresample is never asked to remix or resample: frames are converted to float here (``frame_planes``,
  ``join_planes``, ``samples.to_float_planar``) and mixed and resampled like librosa (``samples``).
* Damage: decoding keeps going past packets the decoder rejects (as players and the ffmpeg CLI do) and stops at
  the first demuxer error or after ``MAX_CONSECUTIVE_BAD_PACKETS`` rejected packets in a row. What decoded before
  that is kept and ``facts.damaged`` is set. If nothing decoded, the file is ``undecodable_audio`` (and
  ``service.decode`` then tries libsndfile).
* Frames are converted, mixed and resampled in groups of ``GROUP_SAMPLES``: per-frame numpy and soxr calls cost
  more than FFmpeg's decoding itself. Results are bit-identical either way.

Each decode uses one FFmpeg thread: the service bounds decode concurrency itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import BinaryIO

import av
import av.error
import numpy as np

from service.decode import errors
from service.decode.facts import FFMPEG, DecodeFacts
from service.decode.limits import GROUP_SAMPLES
from service.decode.samples import (
    ModelRateStream,
    check_channels,
    check_sample_rate,
    mix_to_mono,
    rechunk,
    to_float_planar,
)

log = logging.getLogger(__name__)

# FFmpeg's defaults, spelled out so the bound is visible: the probe reads at most this many bytes
# (enough to get past large ID3 cover art) and analyses at most this much stream time.
PROBE_SIZE_BYTES = 5_000_000
ANALYZE_DURATION_US = 5_000_000  # microseconds

# Demuxers allowed to parse an upload: wav/w64/aiff/caf (PCM), flac, mp3, ogg (vorbis, opus, flac),
# mov (mp4/m4a/3gp: aac, alac), aac (ADTS), matroska (mka/webm: opus, vorbis). No hls/concat/dash/image2-style
# demuxers, which would open further files or URLs named inside the upload.
ALLOWED_DEMUXERS = ("wav", "w64", "aiff", "caf", "flac", "mp3", "ogg", "mov", "aac", "matroska")
# Of those, the ones whose header states the whole duration (not an estimate from the bit rate).
HEADER_DURATION_DEMUXERS = ("matroska", "mov")

# Give up after this many packets in a row that the decoder rejects: real damage is local (a few frames), a
# stream of rejects means the rest is garbage and decoding it would only burn CPU.
MAX_CONSECUTIVE_BAD_PACKETS = 32

# What PyAV raises for bad content: every av.error.* is an FFmpegError (a ValueError); plain ValueError /
# IndexError / EOFError / OverflowError come from its Python-side checks on odd frames and sizes.
_CONTENT_ERRORS = (av.error.FFmpegError, ValueError, IndexError, EOFError, OverflowError)

# numpy type of one sample, per FFmpeg sample format (planar formats drop their trailing "p").
_SAMPLE_DTYPES = {
    "u8": np.uint8,
    "s16": np.int16,
    "s32": np.int32,
    "s64": np.int64,
    "flt": np.float32,
    "dbl": np.float64,
}

# ---------------------------------------------------------------------------------------------------------------
# Frames as arrays (zero-copy views of FFmpeg's buffers)
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
        raise errors.undecodable(f"The file is not a supported audio format ({_reason(exc)}).") from exc


def _pick_audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        raise errors.undecodable("The file holds no audio stream.")
    stream = container.streams.best("audio") or container.streams.audio[0]
    ctx = stream.codec_context
    if ctx is None:  # PyAV leaves it unset when FFmpeg has no decoder for the stream's codec
        raise errors.undecodable("The audio codec of the file is not supported.")
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
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, facts: DecodeFacts
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
            facts.damaged = True
            log.info("demuxer stopped early: %s", _reason(exc))
            break
        try:
            frames = packet.decode()
        except _CONTENT_ERRORS as exc:
            facts.damaged = True
            consecutive_bad += 1
            if consecutive_bad >= MAX_CONSECUTIVE_BAD_PACKETS:
                log.info("decoder rejected %d packets in a row, stopping: %s", consecutive_bad, _reason(exc))
                break
            continue
        consecutive_bad = 0
        yield from frames
    # Stopped on an error: drain what the decoder still buffers, if it can.
    with contextlib.suppress(*_CONTENT_ERRORS):
        yield from stream.codec_context.decode(None)


def _mono_pieces(frames: Iterator[av.AudioFrame], facts: DecodeFacts, max_seconds: float) -> Iterator[np.ndarray]:
    """Frames → resampled 16 kHz mono pieces, enforcing rate, channel, finiteness and duration limits."""
    stream = ModelRateStream(max_seconds)
    group: list[list[np.ndarray]] = []  # plane views of the frames of one (rate, format, channels) run
    group_key: tuple[int, str, int] | None = None
    group_samples = 0

    def flush() -> np.ndarray:
        nonlocal group, group_samples
        _rate, sample_format, channels = group_key
        data = join_planes(group)
        group, group_samples = [], 0
        return stream.push(mix_to_mono(to_float_planar(data, sample_format, channels)))

    for frame in frames:
        if frame.samples == 0:
            continue
        rate = frame.sample_rate
        channels = frame.layout.nb_channels
        check_sample_rate(rate)
        check_channels(channels)
        if not facts.source_sample_rate:
            facts.source_sample_rate, facts.source_channels = rate, channels
        key = (rate, frame.format.name, channels)
        if group and key != group_key:
            yield flush()
        tail = stream.admit(rate, frame.samples)
        if tail is not None:
            yield tail
        group.append(frame_planes(frame))
        group_key = key
        group_samples += frame.samples
        if group_samples >= GROUP_SAMPLES:
            yield flush()
    if group:
        yield flush()
    yield stream.finish()


def declared_seconds(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    """The duration the file states: the stream's (Xing/Info frame count, FLAC STREAMINFO, Ogg end granule, mp4
    track header) or, for containers that state it in their header (Matroska's Segment Info, mp4), the container's.
    Never FFmpeg's estimate from bit rate × file size, which a cut file shrinks along with the audio."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.format.name.split(",")[0] in HEADER_DURATION_DEMUXERS and container.duration:
        return container.duration / av.time_base
    return None


def decode_chunks(source: BinaryIO, max_seconds: float, chunk_samples: int, facts: DecodeFacts) -> Iterator[np.ndarray]:
    """Decode ``source`` from its start into ``chunk_samples`` chunks, filling ``facts``; raises DecodeError."""
    source.seek(0)  # PyAV's I/O seeks absolute offsets: the file must be read from its start
    with _open_container(source) as container:
        stream = _pick_audio_stream(container)
        facts.decoder = FFMPEG
        facts.codec = stream.codec_context.codec.canonical_name
        facts.declared_duration_seconds = declared_seconds(container, stream)
        n_out = 0
        try:
            frames = _decoded_frames(container, stream, facts)
            for chunk in rechunk(_mono_pieces(frames, facts, max_seconds), chunk_samples):
                n_out += chunk.size
                yield chunk
        except _CONTENT_ERRORS as exc:
            # Anything PyAV/FFmpeg raises outside demux and packet decoding (e.g. an unconvertible frame).
            raise errors.undecodable(f"The audio stream cannot be decoded ({_reason(exc)}).") from exc
    if n_out == 0:
        if facts.damaged:
            raise errors.undecodable("No audio could be decoded from the file.")
        raise errors.empty()
