"""Why an upload cannot be turned into audio to tag: :class:`~service.errors.DecodeError` with a stable ``code`` per
reason.

One constructor per code (the code ↔ status pairing is ``service.errors.PROBLEM_CODES``, which ``DecodeError``
checks). :class:`SourceReadError` is different in kind: the *file object* holding the upload failed (closed under
the decoder, a disk error). That says nothing about the audio, so it is a server fault, never an answer about the
content and never cached.
"""

from __future__ import annotations

from service.decode.limits import MAX_CHANNELS, MAX_SAMPLE_MAGNITUDE, MAX_SOURCE_RATE_HZ, MIN_SOURCE_RATE_HZ
from service.errors import DecodeError


class SourceReadError(OSError):
    """Reading the upload's own file object failed mid-decode: a server fault, not damage in the audio. An ``OSError``,
    like the disk errors it often wraps, so callers that treat unreadable files as such keep doing so."""


def undecodable(detail: str) -> DecodeError:
    return DecodeError(415, "undecodable_audio", detail)


def unsupported_rate(rate: int) -> DecodeError:
    return DecodeError(
        422,
        "unsupported_sample_rate",
        f"Sample rate {rate} Hz is outside the accepted range {MIN_SOURCE_RATE_HZ}–{MAX_SOURCE_RATE_HZ} Hz.",
    )


def too_many_channels(channels: int) -> DecodeError:
    return DecodeError(
        422, "too_many_channels", f"The audio has {channels} channels; at most {MAX_CHANNELS} are accepted."
    )


def too_long(max_seconds: float) -> DecodeError:
    return DecodeError(422, "audio_too_long", f"The audio is longer than the {max_seconds:g} s limit.")


def empty() -> DecodeError:
    return DecodeError(422, "empty_audio", "The file holds an audio stream but it decodes to no samples.")


def non_finite() -> DecodeError:
    return DecodeError(422, "non_finite_audio", "The audio contains NaN or infinite sample values.")


def out_of_range() -> DecodeError:
    return DecodeError(
        422,
        "audio_out_of_range",
        f"The audio has sample values beyond ±{MAX_SAMPLE_MAGNITUDE:g} (120 dB above full scale); it is not audio.",
    )


def damaged(detail: str) -> DecodeError:
    """Damaged or truncated audio, refused because the service is set to refuse it (TAGGRAM_DAMAGED_AUDIO=refuse)."""
    return DecodeError(422, "damaged_audio", detail)
