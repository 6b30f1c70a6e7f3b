"""The one log set-up of every command: ``taggram`` and each subcommand run alone
(``python -m service.offline.backfill``, ``taggram train-head``) log the same lines to stderr."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Log to stderr at ``level`` ("info", "DEBUG", ...). Does nothing when logging is already set up: a subcommand
    run by ``taggram`` keeps the level ``taggram`` chose (TAGGRAM_LOG_LEVEL)."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr)
