"""What every offline command (``taggram backfill``, ``check-catalog``, ``index build``, ``train-head``) shares:
its exit codes, its one usage error, and the per-file error codes the offline commands add to the service's."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # the run itself broke (an inference error, the output became unwritable): restart to resume
EXIT_USAGE = 2  # bad arguments or environment: missing model, unwritable output, mismatching output directory

# Error codes the offline commands add to the service's (the service never sees these situations).
UNREADABLE_FILE = "unreadable_file"  # the path is missing or cannot be read (OSError)
DECODER_CRASHED = "decoder_crashed"  # the worker process died while decoding the file (e.g. a crash in FFmpeg)
INTERNAL_ERROR = "internal_error"  # an unexpected exception in the worker for this file


class UsageError(Exception):
    """A failure of a command's set-up (arguments, model, input, output directory): exit code ``EXIT_USAGE``."""
