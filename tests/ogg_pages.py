"""Test helper: Ogg pages (RFC 3533) as bytes: split a file into pages, set flags, recompute the CRC.

Used to make Ogg files that end on a page boundary without the end-of-stream flag (what a cut at a page boundary
looks like), and to shorten real files while keeping them valid.
"""

from __future__ import annotations

import struct

CAPTURE = b"OggS"
HEADER_BYTES = 27
EOS_FLAG = 0x04
CRC_OFFSET = 22


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_TABLE = _crc_table()


def ogg_crc(page: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, not reflected, initial value 0) over a page with its CRC field zeroed."""
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _TABLE[((crc >> 24) & 0xFF) ^ byte]
    return crc


def split_pages(data: bytes) -> list[bytes]:
    pages, offset = [], 0
    while offset < len(data):
        assert data[offset : offset + 4] == CAPTURE, f"no Ogg page at offset {offset}"
        segments = data[offset + 26]
        table_end = offset + HEADER_BYTES + segments
        end = table_end + sum(data[offset + HEADER_BYTES : table_end])
        pages.append(data[offset:end])
        offset = end
    return pages


def with_flags(page: bytes, *, eos: bool) -> bytes:
    """The page with its end-of-stream flag set or cleared and its CRC recomputed."""
    page = bytearray(page)
    page[5] = (page[5] | EOS_FLAG) if eos else (page[5] & ~EOS_FLAG)
    struct.pack_into("<I", page, CRC_OFFSET, 0)
    struct.pack_into("<I", page, CRC_OFFSET, ogg_crc(bytes(page)))
    return bytes(page)


def granule(page: bytes) -> int:
    return struct.unpack_from("<q", page, 6)[0]
