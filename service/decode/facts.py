"""What decoding learned about a file, and the warnings a caller must see: ``DecodeFacts``.

Every analysis carries its decode facts, so a response says which decoder read the file, how much audio there
was and what the container declared, and warns when the analysis covers damaged or truncated audio instead of
answering from a fragment in silence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

AUDIO_DAMAGED = "audio_damaged"  # the decoder met errors and skipped packets or stopped early
AUDIO_TRUNCATED = "audio_truncated"  # decoded much shorter than declared, or the container says it was cut
WARNING_CODES = (AUDIO_DAMAGED, AUDIO_TRUNCATED)

FFMPEG = "ffmpeg"
LIBSNDFILE = "libsndfile"

# Decoded shorter than declared by more than this is truncation, not codec priming/padding or an estimated ADTS
# duration, both far below it (docs/decode.md, "Damage and truncation").
TRUNCATION_MIN_GAP_SECONDS = 0.5
TRUNCATION_MIN_GAP_FRACTION = 0.01  # of the declared duration: long-file estimates drift proportionally


@dataclass(frozen=True)
class DecodeWarning:
    code: str
    detail: str


@dataclass
class DecodeFacts:
    """Filled in while decoding; complete (with ``warnings``) once the decode iterator is exhausted."""

    decoder: str = ""  # FFMPEG or LIBSNDFILE
    codec: str = ""  # "vorbis", "mp3", "pcm_s16le", ... (libsndfile: its subtype, lower case)
    source_sample_rate: int = 0  # Hz, of the first decoded block
    source_channels: int = 0
    declared_duration_seconds: float | None = None  # what the container states, when it states it
    duration_seconds: float = 0.0  # decoded, at 16 kHz
    damaged: bool = False  # the decoder met errors (skipped packets, stopped at a demuxer error)
    cut_reason: str | None = None  # container-level evidence of truncation (service/decode/integrity.py)
    warnings: list[DecodeWarning] = field(default_factory=list)


def truncation_gap(declared: float | None, decoded: float) -> float | None:
    """Seconds missing when ``decoded`` falls short of ``declared`` by more than the tolerance, else None."""
    if declared is None:
        return None
    gap = declared - decoded
    tolerance = max(TRUNCATION_MIN_GAP_SECONDS, TRUNCATION_MIN_GAP_FRACTION * declared)
    return gap if gap > tolerance else None


def warnings_for(facts: DecodeFacts) -> list[DecodeWarning]:
    """The warnings the facts call for, in a stable order (damage first)."""
    found = []
    if facts.damaged:
        found.append(
            DecodeWarning(
                AUDIO_DAMAGED,
                "The decoder met errors in the audio stream and skipped or "
                "stopped at them: parts of the audio are missing from the analysis.",
            )
        )
    gap = truncation_gap(facts.declared_duration_seconds, facts.duration_seconds)
    if gap is not None:
        found.append(
            DecodeWarning(
                AUDIO_TRUNCATED,
                f"The file declares {facts.declared_duration_seconds:.1f} s of "
                f"audio but only {facts.duration_seconds:.1f} s decoded: the "
                "analysis covers the part that is there.",
            )
        )
    elif facts.cut_reason is not None:
        found.append(
            DecodeWarning(
                AUDIO_TRUNCATED,
                f"The file looks cut short ({facts.cut_reason}): the analysis covers the part that is there.",
            )
        )
    return found


def facts_to_json(facts: DecodeFacts) -> dict:
    """A plain-JSON form of the facts (the cache value's trailer, the backfill's columns)."""
    return asdict(facts)


def facts_from_json(document: dict) -> DecodeFacts:
    """Inverse of :func:`facts_to_json`; raises KeyError/TypeError/ValueError for anything it did not write."""
    fields = dict(document)
    fields["warnings"] = [DecodeWarning(str(w["code"]), str(w["detail"])) for w in fields["warnings"]]
    return DecodeFacts(**fields)
