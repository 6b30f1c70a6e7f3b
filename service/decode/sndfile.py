"""The second decoder: libsndfile (python-soundfile, whose wheels bundle it with Vorbis, Opus, FLAC and MP3), for
files FFmpeg refuses.

Why a second decoder: FFmpeg's Ogg demuxer rejects some valid Ogg Vorbis files written by libVorbis 1.3.x at
header parsing ("[ogg] Header processing failed: Invalid data found"), which libsndfile and ``librosa.load`` read
(how often: docs/decode.md, "Two decoders: FFmpeg first, libsndfile when FFmpeg refuses").

Same contract as the FFmpeg path: it reads the same file object (never a path or URL), hands mono blocks to the
shared :class:`~service.decode.samples.ModelRateStream` (mean of channels, soxr HQ, duration cap enforced while
decoding, finiteness checks), and yields the same fixed-size chunks. libsndfile converts integer PCM with the
scaling the FFmpeg path copies from it, so both paths give the same samples for the same PCM.

Only the formats in ``FALLBACK_FORMATS`` are accepted: music containers. libsndfile also reads research and
tracker-era formats (PAF, IRCAM, MAT5, XI, ...) that no upload of a song needs; refusing them keeps the attack
surface to what the fallback is for.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import soundfile

from service.decode import errors
from service.decode.facts import LIBSNDFILE, DecodeFacts
from service.decode.limits import GROUP_SAMPLES
from service.decode.samples import ModelRateStream, check_channels, check_sample_rate, mix_to_mono, rechunk

log = logging.getLogger(__name__)

FALLBACK_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "CAF", "FLAC", "OGG", "MP3"})

# What soundfile raises for content it cannot read: LibsndfileError (a RuntimeError) for libsndfile's own errors;
# TypeError/ValueError from its Python-side checks on odd headers.
_CONTENT_ERRORS = (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError)


def _open(source: BinaryIO) -> soundfile.SoundFile:
    try:
        audio = soundfile.SoundFile(source)
    except _CONTENT_ERRORS as exc:
        raise errors.undecodable(f"libsndfile cannot read the file either ({type(exc).__name__}).") from exc
    if audio.format not in FALLBACK_FORMATS:
        audio.close()
        raise errors.undecodable(
            f"libsndfile reads the file as {audio.format}, which is not a music format accepted here."
        )
    return audio


def _mono_pieces(audio: soundfile.SoundFile, facts: DecodeFacts, max_seconds: float) -> Iterator[np.ndarray]:
    stream = ModelRateStream(max_seconds)
    while True:
        try:
            block = audio.read(GROUP_SAMPLES, dtype="float32", always_2d=True)
        except _CONTENT_ERRORS as exc:
            facts.damaged = True
            log.info("libsndfile stopped early: %s", exc)
            break
        if block.shape[0] == 0:
            break
        stream.admit(audio.samplerate, block.shape[0])  # one rate per file: never a tail here
        yield stream.push(mix_to_mono(block.T))
    yield stream.finish()


def decode_chunks(source: BinaryIO, max_seconds: float, chunk_samples: int, facts: DecodeFacts) -> Iterator[np.ndarray]:
    """Decode ``source`` from its start with libsndfile into ``chunk_samples`` chunks, filling ``facts``."""
    source.seek(0)
    with _open(source) as audio:
        check_sample_rate(audio.samplerate)
        check_channels(audio.channels)
        facts.decoder = LIBSNDFILE
        facts.codec = audio.subtype.lower()
        facts.source_sample_rate, facts.source_channels = audio.samplerate, audio.channels
        facts.declared_duration_seconds = audio.frames / audio.samplerate if audio.frames > 0 else None
        n_out = 0
        for chunk in rechunk(_mono_pieces(audio, facts, max_seconds), chunk_samples):
            n_out += chunk.size
            yield chunk
    if n_out == 0:
        raise errors.undecodable("No audio could be decoded from the file.") if facts.damaged else errors.empty()


def clean_read_seconds(source: BinaryIO) -> float | None:
    """Seconds of audio libsndfile reads from ``source`` without any error, or None when it cannot read all of it
    (or not at all). A second opinion on files where FFmpeg met errors; reads blocks and keeps nothing."""
    source.seek(0)
    try:
        with _open(source) as audio:
            frames = 0
            while (read := audio.read(GROUP_SAMPLES, dtype="float32", always_2d=True).shape[0]) > 0:
                frames += read
            return frames / audio.samplerate
    except (errors.DecodeError, *_CONTENT_ERRORS):
        return None
