"""Regions of a track without decoding all of it: seek in the container to each, decode a little, resample.

For the sign-up form's early answer (issue #22): a few patches spread over the whole track, at a cost that does not
grow with the track's length. Each region comes out as the full decode (``service.decode.iter_decoded``) would
produce it at that place (same float scaling, mean of channels, soxr HQ, same 16 kHz sample grid), within the
error measured in docs/signup.md:

* **Where**: the first decoded frame's timestamp is the track's sample 0 (after the decoder's gapless trimming, as the
  full decode counts). After a seek, samples are counted from the first frame whose timestamp follows on from its
  predecessor's samples (FFmpeg stamps a Vorbis long→short transition frame 448 samples late).
* **Exact mp3 seeks only**: FFmpeg seeks an mp3 by its Xing/Info table or by bit rate × bytes; a VBR mp3 without
  a Xing/Info header would land by estimate, so it is decoded in order (``mpeg.constant_bit_rate`` tells).
* **Decoder state**: decoding starts ``PREROLL_SECONDS`` before the region (mp3's bit reservoir, Vorbis/AAC block
  overlap and Opus's pre-roll need earlier packets; their output there is discarded).
* **Resampling**: a fresh soxr stream starts on a source sample that falls exactly on the 16 kHz grid (a multiple of
  ``rate / gcd(rate, 16000)``) ``MARGIN_SECONDS`` before the region, so its output lines up sample for sample with
  the full decode's, and the filter's start-up transient is cut away with the margin.

Where the container cannot seek exactly (a raw ADTS stream has no index; a VBR mp3 without Xing/Info; a seek that
fails or lands without timestamps; a rate or layout change), the track is decoded in order instead and the regions
are cut from it; ``Sample.seeked`` is False and ``fallback_reason`` says why. The limits are today's: rate and
channel count per frame, finite samples, and ``max_seconds`` against the duration the container states (the full
decode enforces it exactly).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import av
import numpy as np

from service.decode import errors, ffmpeg, iter_decoded, mpeg
from service.decode.facts import FFMPEG, DecodeFacts
from service.decode.integrity import check_integrity
from service.decode.limits import SAMPLE_RATE
from service.decode.samples import (
    Resampler,
    check_channels,
    check_range,
    check_sample_rate,
    mix_to_mono,
    to_float_planar,
)
from service.decode.source import GuardedSource

PREROLL_SECONDS = 0.2  # decoded before a region and discarded: covers mp3's reservoir, Opus's 80 ms pre-roll
MARGIN_SECONDS = 0.05  # resampled before/after a region and discarded: soxr HQ's transient is a few ms
# Demuxers that seek by index, page bisection or header arithmetic; the others (ADTS) would read through the file.
SEEKABLE_DEMUXERS = ("wav", "w64", "aiff", "caf", "flac", "mp3", "ogg", "mov", "matroska")
NOT_SEEKABLE = "the container cannot seek ({}): decoded in order"


class _CannotSeek(Exception):
    """This file cannot be sampled by seeking; the reason goes to ``Sample.fallback_reason``."""


@dataclass
class Sample:
    """Regions of one track, mono float32 at ``SAMPLE_RATE``: ``regions[i]`` holds samples ``[starts[i], starts[i] +
    length)`` of the full decode, zeros outside the track."""

    regions: list[np.ndarray]
    starts: list[int]
    duration_seconds: float  # stated by the container (seeked) or decoded (fallback)
    seeked: bool
    fallback_reason: str | None = None
    facts: DecodeFacts = field(default_factory=DecodeFacts)  # complete only when not seeked

    @property
    def coverage(self) -> float:
        """Seconds of distinct audio in the regions ÷ the track's duration (at most 1)."""
        covered = _union_length([(max(s, 0), s + r.size) for s, r in zip(self.starts, self.regions)])
        total = self.duration_seconds * SAMPLE_RATE
        return min(covered / total, 1.0) if total > 0 else 1.0


StartsFor = Callable[[int], list[int]]  # the track's length in 16 kHz samples → region starts


def sample_track(source: BinaryIO, starts_for: StartsFor, length: int, *, max_seconds: float) -> Sample:
    """Regions of ``length`` samples at ``starts_for(track length)``, by seeking where the container allows."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length!r}")
    guarded = GuardedSource(source)
    try:
        return _seeked(guarded, starts_for, length, max_seconds)
    except _CannotSeek as cannot:
        return _in_order(guarded, starts_for, length, max_seconds, str(cannot))


def _seeked(source: GuardedSource, starts_for: StartsFor, length: int, max_seconds: float) -> Sample:
    facts = DecodeFacts(decoder=FFMPEG)
    integrity = check_integrity(source)
    source.seek(0)
    try:
        container = ffmpeg._open_container(source)
    except errors.DecodeError as refused:
        raise _CannotSeek(f"FFmpeg cannot open it: {refused.detail}") from None
    with container:
        demuxer = container.format.name.split(",")[0]
        if demuxer not in SEEKABLE_DEMUXERS:
            raise _CannotSeek(NOT_SEEKABLE.format(demuxer))
        if demuxer == "mp3" and not _mp3_seeks_exactly(source):
            raise _CannotSeek(
                "a variable-bit-rate mp3 without a Xing/Info header: a seek would land by estimate, "
                "so it is decoded in order"
            )
        stream = ffmpeg._pick_audio_stream(container)
        facts.codec = stream.codec_context.codec.canonical_name
        declared = stated = ffmpeg.declared_seconds(container, stream)
        if stated is None and container.duration:
            stated = container.duration / av.time_base  # an estimate (bit rate × size): good enough to spread regions
        if not stated:
            raise _CannotSeek("the container states no duration to spread the regions over: decoded in order")
        if stated > max_seconds:
            raise errors.too_long(max_seconds)
        origin = _first_frame(container, stream, facts)
        starts = starts_for(math.ceil(stated * SAMPLE_RATE))
        regions = [_region(container, stream, origin, start, length, facts) for start in starts]
    facts.declared_duration_seconds = integrity.declared_seconds or declared
    facts.cut_reason = integrity.cut_reason
    return Sample(regions, starts, stated, seeked=True, facts=facts)


def _mp3_seeks_exactly(source: GuardedSource) -> bool:
    """FFmpeg seeks an mp3 by its Xing/Info seek table, or by bit rate × bytes: exact only at a constant bit rate.
    Restores the file's position: the open container reads on from there."""
    position = source.tell()
    try:
        source.seek(0)
        start = mpeg.id3v2_size(source.read(mpeg.ID3V2_HEADER_BYTES))
        source.seek(start)
        return mpeg.has_xing(source.read(mpeg.HEAD_BYTES), 0) or mpeg.constant_bit_rate(source, start)
    finally:
        source.seek(position)


def _first_frame(container, stream, facts: DecodeFacts) -> int:
    """The first decoded frame's timestamp (the track's sample 0); records the source rate and channels."""
    for frame in ffmpeg._decoded_frames(container, stream, facts):
        if frame.samples and frame.pts is not None:
            check_sample_rate(frame.sample_rate)
            check_channels(frame.layout.nb_channels)
            facts.source_sample_rate, facts.source_channels = frame.sample_rate, frame.layout.nb_channels
            return frame.pts
        if frame.samples:
            break
    raise _CannotSeek("its frames carry no timestamps: decoded in order")


def _region(container, stream, origin: int, start: int, length: int, facts: DecodeFacts) -> np.ndarray:
    """Samples ``[start, start + length)`` at 16 kHz, decoded from a seek ``PREROLL_SECONDS`` before them."""
    rate = facts.source_sample_rate
    step = rate // math.gcd(rate, SAMPLE_RATE)  # source samples per whole number of 16 kHz samples
    margin = round(MARGIN_SECONDS * SAMPLE_RATE)
    first_src = max(((start - margin) * rate // SAMPLE_RATE) // step * step, 0)  # on both grids
    first_out = first_src * SAMPLE_RATE // rate
    end_src = -(-(start + length + margin) * rate // SAMPLE_RATE)
    seek_seconds = max(first_src / rate - PREROLL_SECONDS, 0.0)
    try:
        container.seek(origin + int(seek_seconds / stream.time_base), stream=stream, backward=True)
        stream.codec_context.flush_buffers()
    except ffmpeg._CONTENT_ERRORS as exc:
        raise _CannotSeek(f"seeking failed ({ffmpeg._reason(exc)}): decoded in order") from None
    positions, pieces, ended = [], [], True  # per decoded frame: where its timestamp puts it, its mono samples
    anchor = None  # index of the first frame whose timestamp follows on from the previous frame's samples
    since_anchor = 0  # samples decoded from the anchor frame on
    to_samples = stream.time_base * rate  # a timestamp tick in source samples (exact: a Fraction)
    whole_ticks = to_samples.denominator == 1  # the usual case (time base 1/rate): integer arithmetic suffices
    for frame in ffmpeg._decoded_frames(container, stream, facts):
        if not frame.samples:
            continue
        if frame.pts is None:
            raise _CannotSeek("a frame after a seek carries no timestamp: decoded in order")
        if (frame.sample_rate, frame.layout.nb_channels) != (rate, facts.source_channels):
            raise _CannotSeek("the rate or channel layout changes within the stream: decoded in order")
        ticks = frame.pts - origin
        positions.append(ticks * to_samples.numerator if whole_ticks else round(ticks * to_samples))
        data = ffmpeg.join_planes([ffmpeg.frame_planes(frame)])
        pieces.append(mix_to_mono(to_float_planar(data, frame.format.name, facts.source_channels)))
        if anchor is not None:
            since_anchor += pieces[-1].size
        elif len(pieces) > 1 and positions[-2] + pieces[-2].size == positions[-1]:
            anchor, since_anchor = len(pieces) - 1, pieces[-1].size
        if anchor is not None and positions[anchor] + since_anchor >= end_src:
            ended = False
            break
    if not pieces:
        return np.zeros(length, np.float32)
    # Timestamps are not always sample counts: FFmpeg stamps a Vorbis long→short transition frame 448 samples
    # late (measured), so positions count samples from a frame whose timestamp agrees with its predecessor's.
    anchor = anchor if anchor is not None else 0
    first_position = positions[anchor] - sum(p.size for p in pieces[:anchor])
    if first_position > first_src:
        raise _CannotSeek("a seek landed after the region: decoded in order")
    mono = np.concatenate(pieces)[first_src - first_position :]
    return _resampled_window(mono, rate, start - first_out, length, ended)


def _resampled_window(mono: np.ndarray, rate: int, skip: int, length: int, ended: bool) -> np.ndarray:
    """The source samples resampled from a grid-aligned first sample; ``length`` of them after ``skip``, zeros past
    the track's end (``ended``: the stream ended, so the resampler is flushed as the full decode's is)."""
    resampler = Resampler(rate)
    check_range(mono)
    out = [resampler.push(mono)]
    if ended:
        out.append(resampler.finish())
    joined = np.concatenate(out)
    window = np.zeros(length, np.float32)
    lo = max(skip, 0)
    taken = joined[lo : skip + length]
    window[lo - skip : lo - skip + taken.size] = taken
    return window


def _in_order(source: GuardedSource, starts_for: StartsFor, length: int, max_seconds: float, reason: str) -> Sample:
    """The fallback: decode the whole track in order and cut the regions from it."""
    stream = iter_decoded(source, max_seconds=max_seconds)
    track = np.concatenate(list(stream) or [np.zeros(0, np.float32)])
    starts = starts_for(track.size)
    regions = [_cut(track, start, length) for start in starts]
    return Sample(regions, starts, track.size / SAMPLE_RATE, seeked=False, fallback_reason=reason, facts=stream.facts)


def _cut(track: np.ndarray, start: int, length: int) -> np.ndarray:
    window = np.zeros(length, np.float32)
    lo, hi = max(start, 0), min(start + length, track.size)
    if hi > lo:
        window[lo - start : hi - start] = track[lo:hi]
    return window


def _union_length(spans: list[tuple[int, int]]) -> int:
    total, reach = 0, None
    for lo, hi in sorted(spans):
        if reach is None or lo >= reach:
            total += hi - lo
            reach = hi
        elif hi > reach:
            total += hi - reach
            reach = hi
    return total
