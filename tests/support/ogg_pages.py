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


def lacing(packet_sizes: list[int]) -> bytes:
    """The segment table for whole packets: 255-byte segments, then the remainder (0 after an exact multiple)."""
    table = bytearray()
    for size in packet_sizes:
        table += bytes([255]) * (size // 255) + bytes([size % 255])
    return bytes(table)


def packets(page: bytes) -> list[bytes]:
    """The packets of a page that holds whole packets only (as the header pages libvorbis flushes do)."""
    segments = page[26]
    table = page[HEADER_BYTES : HEADER_BYTES + segments]
    assert table[-1] != 255, "the page ends in a continued packet"
    data, out, current, offset = page[HEADER_BYTES + segments :], [], b"", 0
    for value in table:
        current += data[offset : offset + value]
        offset += value
        if value < 255:
            out.append(current)
            current = b""
    return out


def with_packets(page: bytes, new_packets: list[bytes]) -> bytes:
    """The page (same header fields) holding ``new_packets`` instead, CRC recomputed."""
    table = lacing([len(p) for p in new_packets])
    assert len(table) <= 255, "the packets do not fit in one page"
    header = bytearray(page[:HEADER_BYTES])
    header[26] = len(table)
    rebuilt = bytes(header) + table + b"".join(new_packets)
    return with_flags(rebuilt, eos=bool(page[5] & EOS_FLAG))


def empty_end_of_stream_page(last_page: bytes) -> bytes:
    """A page after ``last_page`` holding one zero-length packet, with the end-of-stream flag: how some encoders
    end a stream (Debian's supertux-data christmas_theme.ogg ends with such a 28-byte page)."""
    header = bytearray(last_page[:HEADER_BYTES])
    header[5] = 0  # not continued, not BOS; EOS is set by with_flags
    struct.pack_into("<I", header, 18, struct.unpack_from("<I", last_page, 18)[0] + 1)  # page sequence number
    header[26] = 1
    return with_flags(bytes(header) + b"\x00", eos=True)


def ending_on_an_empty_page(data: bytes) -> bytes:
    """The Ogg file with its end-of-stream flag moved to an extra, empty last page. FFmpeg rejects the empty packet
    (avcodec_send_packet: EINVAL) though the file is valid and libvorbis reads it cleanly."""
    pages = split_pages(data)
    return b"".join(pages[:-1]) + with_flags(pages[-1], eos=False) + empty_end_of_stream_page(pages[-1])


def with_padded_vorbis_setup(data: bytes, padding: bytes = b"\xff") -> bytes:
    """The Ogg Vorbis file (libvorbis layout: page 0 identification, page 1 comment + setup) with bytes after the
    setup header's framing bit. libvorbis reads headers forward and ignores them; FFmpeg's Vorbis parser reads the
    setup header backwards from its last set bit, finds no valid mode table and refuses the whole file."""
    pages = split_pages(data)
    comment, setup = packets(pages[1])
    return pages[0] + with_packets(pages[1], [comment, setup + padding]) + b"".join(pages[2:])
