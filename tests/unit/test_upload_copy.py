"""Several models analyse one upload at once, each from its own copy (``Upload.copy``): the same bytes, hash and
size, an independent position, and closing one leaves the other readable, in memory and once spilled to disk."""

from __future__ import annotations

import hashlib
import os
import tempfile

import pytest

from service.engine.analysis_service import SPOOL_MEMORY_BYTES, Upload


def upload_of(data: bytes) -> Upload:
    file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115 - the Upload closes it
    file.write(data)
    file.seek(0)
    return Upload(file, len(data), hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize("size", [1_000, SPOOL_MEMORY_BYTES + 1], ids=["in memory", "spilled to disk"])
def test_a_copy_has_the_same_bytes_and_its_own_position_and_life(size: int):
    data = os.urandom(size)
    original = upload_of(data)
    original.file.read(10)  # wherever the original stands, the copy starts at 0 and the original is rewound
    copy = original.copy()
    assert (copy.size, copy.sha256) == (original.size, original.sha256)
    assert copy.file.read(5) == data[:5]
    assert original.file.tell() == 0
    original.close()
    assert copy.file.read() == data[5:]
    copy.close()
