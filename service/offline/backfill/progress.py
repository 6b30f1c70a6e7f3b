"""Progress of a run: a tqdm bar on a terminal, a log line at intervals elsewhere."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from service.offline.backfill.options import Summary

log = logging.getLogger("taggram.backfill")


class Progress:
    """A tqdm bar on a terminal, the same line logged every ``interval`` seconds otherwise (Kubernetes logs)."""

    def __init__(self, total: int, mode: str, interval: float) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode = mode
        self.interval = interval
        self._devnull = open(os.devnull, "w") if mode != "bar" else None  # noqa: SIM115 - closed in close()
        self.bar = tqdm(
            total=total,
            unit="track",
            desc="backfill",
            dynamic_ncols=True,
            smoothing=0.05,
            file=sys.stderr if mode == "bar" else self._devnull,
            mininterval=0.5,
        )
        self._redirect = contextlib.ExitStack()
        if mode == "bar":  # log lines (warnings) above the bar instead of through it
            self._redirect.enter_context(logging_redirect_tqdm())
        self._last_log = time.monotonic()

    def update(self, summary: Summary, started: float) -> None:
        elapsed = time.monotonic() - started
        speed = summary.audio_seconds / elapsed if elapsed > 0 else 0.0
        self.bar.set_postfix_str(
            f"{summary.audio_seconds / 3600:.2f} h audio, {speed:.1f} audio h/h, {summary.errors} errors", refresh=False
        )
        self.bar.update(1)
        if self.mode == "log" and time.monotonic() - self._last_log >= self.interval:
            self._last_log = time.monotonic()
            log.info("%s", self.bar)

    def close(self) -> None:
        if self.mode == "log":
            log.info("%s", self.bar)
        self.bar.close()
        self._redirect.close()
        if self._devnull is not None:
            self._devnull.close()
