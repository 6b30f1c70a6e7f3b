"""Command-line arguments the offline commands share (``taggram backfill``, ``taggram check-catalog``): argparse
types that refuse what the service would, and the audio limits, whose defaults are the service's settings."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from service.config import DamagedAudio, Settings, parse_parameter


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def as_the_api(kind: Any) -> Callable[[str], Any]:
    """An argparse type for an argument the API takes as a query parameter of type ``kind``: the API's check."""

    def parse(text: str) -> Any:
        try:
            return parse_parameter(kind, text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{error} (as the API)") from None

    return parse


def add_audio_limit_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """``--max-seconds``, ``--min-seconds``, ``--max-bytes``, ``--damaged-audio``: what the service would refuse,
    by default its own settings."""
    parser.add_argument(
        "--max-seconds",
        type=positive_float,
        default=settings.max_audio_seconds,
        help="longest track, as TAGGRAM_MAX_AUDIO_SECONDS (default: %(default)s)",
    )
    parser.add_argument(
        "--min-seconds",
        type=non_negative_float,
        default=settings.min_audio_seconds,
        help="shortest track, as TAGGRAM_MIN_AUDIO_SECONDS (default: %(default)s)",
    )
    parser.add_argument(
        "--max-bytes",
        type=positive_int,
        default=settings.max_upload_bytes,
        help="largest file, as TAGGRAM_MAX_UPLOAD_BYTES (default: %(default)s)",
    )
    parser.add_argument(
        "--damaged-audio",
        type=DamagedAudio,
        choices=tuple(DamagedAudio),
        default=settings.damaged_audio,
        help="damaged or truncated audio: analysed with its warnings, or refused (damaged_audio); "
        "as TAGGRAM_DAMAGED_AUDIO (default: %(default)s)",
    )
