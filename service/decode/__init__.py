"""Decode step: an uploaded audio file → 16 kHz mono float32, streaming and bounded, with what decoding learned.

Pipeline, one block at a time (only ``decode``, which returns the whole track, holds it all)::

    FFmpeg (ffmpeg.py), or libsndfile (sndfile.py) when FFmpeg refuses the file
        ─▶ float [channels, n] ─▶ mean of channels ─▶ soxr HQ stream ─▶ fixed-size chunks   (samples.py)
    + container integrity (integrity.py) ─▶ DecodeFacts with warnings (facts.py)

Why this exact chain: the musicnn models were trained on ``librosa.load(path, sr=16000)``, so the frontend copies
librosa, not FFmpeg:

* **Mono is the mean of the channels** (``librosa.to_mono``). FFmpeg/libswresample's default downmix is
  power-preserving (×1/√2 per channel, 3 dB quieter), which would shift every log-mel value.
* **Integer PCM is scaled like libsndfile** (soundfile, librosa's loader): ``s16 / 2**15``, ``s32 / 2**31`` (FFmpeg
  hands 24-bit PCM over left-justified in s32, which makes it ``s24 / 2**23``), ``(u8 - 128) / 2**7``.
* **Resampling is soxr "HQ"**, librosa's default ``soxr_hq``, through ``soxr.ResampleStream``, which is
  bit-identical to the one-shot ``soxr.resample`` librosa calls while keeping memory bounded. Like
  ``librosa.resample(fix=True)`` the output length is ``ceil(n * 16000 / rate)``. A source already at 16 kHz is
  passed through, as librosa does.

Limits (each a :class:`DecodeError` with a stable ``code``; see docs/decode.md): source rate in
[``MIN_SOURCE_RATE_HZ``, ``MAX_SOURCE_RATE_HZ``], at most ``MAX_CHANNELS`` channels, samples finite and within
±``MAX_SAMPLE_MAGNITUDE``, and ``max_seconds`` of decoded audio enforced *while* decoding: a tiny file that decodes
to hours stops as soon as the decoded duration passes the cap, whatever its header says.

Which decoder: FFmpeg first. When it cannot open the file or decodes nothing from it (``undecodable_audio``),
libsndfile tries the same file object; if it cannot either, FFmpeg's error is the answer. A file FFmpeg has
started to yield audio from is never handed over (chunks already went downstream).

When FFmpeg met errors in a file, libsndfile gives a second opinion: if it reads the whole file cleanly to the same
length, nothing is missing and the file is not reported damaged (see ``_read_cleanly_elsewhere``).

Damage is visible, not silent: ``DecodeStream.facts`` says which decoder read the file, the decoded and the
declared duration, and carries ``warnings`` (``audio_damaged``: the decoder met errors; ``audio_truncated``: much
shorter than declared, or the container shows it was cut). Callers decide whether to analyse with the warning or
refuse (``refuse_damaged``).

Errors raised by the *source file object itself* (a closed or failing upload file) are not about the content:
they surface as :class:`SourceReadError` (an ``OSError``), a server fault, never as damage or as a short track.

Decoding is CPU-bound (FFmpeg, soxr, numpy); the service runs it in its decode threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from service.decode import ffmpeg, sndfile
from service.decode.errors import DecodeError, SourceReadError, damaged
from service.decode.facts import (
    AUDIO_DAMAGED,
    AUDIO_TRUNCATED,
    FFMPEG,
    LIBSNDFILE,
    WARNING_CODES,
    DecodeFacts,
    DecodeWarning,
    warnings_for,
)
from service.decode.ffmpeg import ALLOWED_DEMUXERS, frame_planes, join_planes
from service.decode.integrity import check_integrity
from service.decode.limits import (
    DEFAULT_CHUNK_SAMPLES,
    GROUP_SAMPLES,
    MAX_CHANNELS,
    MAX_SAMPLE_MAGNITUDE,
    MAX_SOURCE_RATE_HZ,
    MIN_SOURCE_RATE_HZ,
    SAMPLE_RATE,
)
from service.decode.samples import mix_to_mono, resampled_length, to_float_planar
from service.decode.source import GuardedSource

__all__ = [
    "ALLOWED_DEMUXERS", "AUDIO_DAMAGED", "AUDIO_TRUNCATED", "DEFAULT_CHUNK_SAMPLES", "FFMPEG", "GROUP_SAMPLES",
    "LIBSNDFILE", "MAX_CHANNELS", "MAX_SAMPLE_MAGNITUDE", "MAX_SOURCE_RATE_HZ", "MIN_SOURCE_RATE_HZ", "SAMPLE_RATE",
    "WARNING_CODES", "DecodeError", "DecodeFacts", "DecodeStream", "DecodeWarning", "DecodedAudio",
    "SourceReadError", "decode", "frame_planes", "iter_decoded", "join_planes", "mix_to_mono", "refuse_damaged",
    "resampled_length", "to_float_planar",
]  # fmt: skip


@dataclass(frozen=True)
class DecodedAudio:
    """A whole decoded upload. ``samples``: float32, mono, ``SAMPLE_RATE`` Hz."""

    samples: np.ndarray
    facts: DecodeFacts

    @property
    def duration_seconds(self) -> float:
        return self.samples.size / SAMPLE_RATE

    @property
    def source_sample_rate(self) -> int:
        return self.facts.source_sample_rate

    @property
    def source_channels(self) -> int:
        return self.facts.source_channels

    @property
    def codec(self) -> str:
        return self.facts.codec

    @property
    def damaged(self) -> bool:
        return self.facts.damaged


class DecodeStream(Iterator[np.ndarray]):
    """The chunks of one decode; ``facts`` is complete (warnings included) once the iterator is exhausted.
    ``close()`` stops decoding and releases the decoder."""

    def __init__(self, source: BinaryIO, max_seconds: float, chunk_samples: int) -> None:
        self.facts = DecodeFacts()
        self._chunks = _decode_chunks(GuardedSource(source), max_seconds, chunk_samples, self.facts)

    def __next__(self) -> np.ndarray:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()


def _decode_chunks(
    source: GuardedSource, max_seconds: float, chunk_samples: int, facts: DecodeFacts
) -> Iterator[np.ndarray]:
    try:
        integrity = check_integrity(source)
        samples_out = 0
        try:
            for chunk in ffmpeg.decode_chunks(source, max_seconds, chunk_samples, facts):
                samples_out += chunk.size
                yield chunk
        except DecodeError as refused:
            if refused.code != "undecodable_audio" or samples_out or source.error is not None:
                raise
            facts.__init__()  # what FFmpeg learned before giving up says nothing about libsndfile's reading
            try:
                for chunk in sndfile.decode_chunks(source, max_seconds, chunk_samples, facts):
                    samples_out += chunk.size
                    yield chunk
            except DecodeError as also_refused:
                if also_refused.code == "undecodable_audio" and source.error is None:
                    raise refused from None  # FFmpeg's reason is the more precise one
                raise
    except (DecodeError, OSError, ValueError) as error:
        if source.error is not None:
            raise SourceReadError(f"reading the upload failed: {source.error!r}") from source.error
        raise error
    if source.error is not None:  # a decoder swallowed it and ended "cleanly" on a prefix
        raise SourceReadError(f"reading the upload failed: {source.error!r}") from source.error
    facts.duration_seconds = samples_out / SAMPLE_RATE
    if integrity.chained:  # libsndfile would read the first link only: no second opinion, no declared length
        facts.declared_duration_seconds = None
    elif facts.damaged and facts.decoder == FFMPEG and _read_cleanly_elsewhere(source, facts.duration_seconds):
        facts.damaged = False
    if integrity.declared_seconds is not None:
        facts.declared_duration_seconds = integrity.declared_seconds
    facts.cut_reason = integrity.cut_reason
    facts.warnings = warnings_for(facts)


# How far the two decoders' lengths may differ for the file to count as complete: under one codec frame
# (mp3 1152 samples = 26 ms, AAC 1024 = 23 ms at 44.1 kHz), so a single skipped frame keeps the warning.
SECOND_OPINION_MAX_GAP_SECONDS = 0.01


def _read_cleanly_elsewhere(source: BinaryIO, decoded_seconds: float) -> bool:
    """Whether libsndfile reads the whole file without error to the length FFmpeg decoded.

    FFmpeg rejects packets of some valid files (the empty last packet of some libVorbis 1.3 Ogg files, where both
    decoders still give the same samples). Such a file is not damaged: nothing is missing from the analysis. A file
    libsndfile cannot read cleanly, or reads to another length, keeps its warning: libsndfile's MP3 decoder (mpg123)
    ends or resyncs at corrupt frames without an error, so only an equal length vouches for the file, and the
    tolerance is below one frame (the cases measured: docs/decode.md, "Two decoders: FFmpeg first, libsndfile when
    FFmpeg refuses"). Costs a second read of the file, only for files FFmpeg met errors in."""
    seconds = sndfile.clean_read_seconds(source)
    return seconds is not None and abs(seconds - decoded_seconds) < SECOND_OPINION_MAX_GAP_SECONDS


def _validate_args(max_seconds: float, chunk_samples: int) -> None:
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds!r}")
    if chunk_samples < 1:
        raise ValueError(f"chunk_samples must be >= 1, got {chunk_samples!r}")


def iter_decoded(source: BinaryIO, *, max_seconds: float, chunk_samples: int = DEFAULT_CHUNK_SAMPLES) -> DecodeStream:
    """Decode ``source`` (seekable binary file, read from offset 0) into float32 mono ``SAMPLE_RATE`` chunks.

    Chunks hold exactly ``chunk_samples`` samples but the last. Memory stays bounded whatever the track length.
    Raises :class:`DecodeError` (possibly after some chunks were yielded, e.g. ``audio_too_long``) for bad
    content, :class:`SourceReadError` when the file object fails; ``ValueError`` at call time for bad arguments.
    """
    _validate_args(max_seconds, chunk_samples)
    return DecodeStream(source, max_seconds, chunk_samples)


def decode(source: BinaryIO, *, max_seconds: float) -> DecodedAudio:
    """Decode a whole upload (its duration is capped by ``max_seconds``) into a :class:`DecodedAudio`."""
    stream = iter_decoded(source, max_seconds=max_seconds)
    chunks = list(stream)
    samples = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    return DecodedAudio(samples=samples, facts=stream.facts)


def refuse_damaged(facts: DecodeFacts) -> None:
    """Raise ``damaged_audio`` (422) when the facts carry warnings: for callers set to refuse damaged audio."""
    if facts.warnings:
        raise damaged(" ".join(w.detail for w in facts.warnings))
