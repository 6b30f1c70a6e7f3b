"""The upload's file object as the decoders see it: every failure of the file object itself is remembered.

FFmpeg (through PyAV) and libsndfile both read through Python callbacks. When the file object fails (closed under
the decoder by whoever owned it, a disk error), PyAV turns its ``ValueError`` into the end of the stream or into
what looks like damaged content, and decoding "succeeds" with a prefix of the track (what happened before this
guard: docs/decode.md, "The analysis owns its input"). The guard lets the decoder tell such a failure (a server
fault, :class:`~service.decode.errors.SourceReadError`) from damage in the audio.
"""

from __future__ import annotations

import errno
import os
from typing import BinaryIO


class GuardedSource:
    """Read-only, seekable view of a binary file object that records the first exception the object raises."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.error: BaseException | None = None

    def _guard(self, op, *args):
        try:
            return op(*args)
        except Exception as exc:
            if self.error is None:
                self.error = exc
            raise

    def read(self, size: int = -1) -> bytes:
        return self._guard(self._inner.read, size)

    def readinto(self, buffer) -> int:
        # Through read(), so a file object without readinto() is not mistaken for a failing one.
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        # A position before the start is the decoder's request, driven by the file's content (a damaged header: a
        # libsndfile seek to -1 was found by the mutation tests), not a failure of the file object.
        if (whence == os.SEEK_SET and offset < 0) or (whence == os.SEEK_CUR and self.tell() + offset < 0):
            raise OSError(errno.EINVAL, f"seek before the start of the file (offset {offset}, whence {whence})")
        return self._guard(self._inner.seek, offset, whence)

    def tell(self) -> int:
        return self._guard(self._inner.tell)

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False
