"""Why an upload cannot be turned into audio to tag: :class:`DecodeError` with a stable ``code`` per reason.

One constructor per code, so the code ↔ status pairing lives in one place. :class:`SourceReadError` is different
in kind: the *file object* holding the upload failed (closed under the decoder, a disk error). That says nothing
about the audio, so it is a server fault, never an answer about the content and never cached.
"""

from __future__ import annotations

from service.decode.limits import MAX_CHANNELS, MAX_SAMPLE_MAGNITUDE, MAX_SOURCE_RATE_HZ, MIN_SOURCE_RATE_HZ


class DecodeError(Exception):
    """The upload cannot be turned into audio to tag; ``code`` is stable, ``status`` is the HTTP status."""

    def __init__(self, code: str, status: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.status = status
        self.detail = detail

    def __repr__(self) -> str:
        return f"DecodeError(code={self.code!r}, status={self.status}, detail={self.detail!r})"


class SourceReadError(OSError):
    """Reading the upload's own file object failed mid-decode: a server fault, not damage in the audio. An ``OSError``,
    like the disk errors it often wraps, so callers that treat unreadable files as such keep doing so."""


def undecodable(detail: str) -> DecodeError:
    return DecodeError("undecodable_audio", 415, detail)


def unsupported_rate(rate: int) -> DecodeError:
    return DecodeError(
        "unsupported_sample_rate",
        422,
        f"Sample rate {rate} Hz is outside the accepted range {MIN_SOURCE_RATE_HZ}–{MAX_SOURCE_RATE_HZ} Hz.",
    )


def too_many_channels(channels: int) -> DecodeError:
    return DecodeError(
        "too_many_channels", 422, f"The audio has {channels} channels; at most {MAX_CHANNELS} are accepted."
    )


def too_long(max_seconds: float) -> DecodeError:
    return DecodeError("audio_too_long", 422, f"The audio is longer than the {max_seconds:g} s limit.")


def empty() -> DecodeError:
    return DecodeError("empty_audio", 422, "The file holds an audio stream but it decodes to no samples.")


def non_finite() -> DecodeError:
    return DecodeError("non_finite_audio", 422, "The audio contains NaN or infinite sample values.")


def out_of_range() -> DecodeError:
    return DecodeError(
        "audio_out_of_range",
        422,
        f"The audio has sample values beyond ±{MAX_SAMPLE_MAGNITUDE:g} (120 dB above full scale); it is not audio.",
    )


def damaged(detail: str) -> DecodeError:
    """Damaged or truncated audio, refused because the service is set to refuse it (TAGGRAM_DAMAGED_AUDIO=refuse)."""
    return DecodeError("damaged_audio", 422, detail)
