"""Files that appear whole or not at all: write to a temporary beside the target, fsync, rename, fsync the folder.

Readers (a serving replica swapping an index, a resumed backfill, the service loading a head) see the old file or
the new one, never a partial write, and a crash leaves at most a hidden ``.NAME.*.tmp`` behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(temporary_path)`` (a hidden ``.NAME.*.tmp`` beside ``path``), then fsync and rename onto ``path``."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(temporary))
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
