"""Container-level evidence that a file was cut short, which the decoders themselves do not report.

Measured on files cut in half (docs/decode.md, "Damage and truncation"): FFmpeg decodes a truncated Ogg Vorbis or
Opus file to its last complete page without any error, and clamps a WAV file's ``data`` chunk to the bytes present,
so neither looks damaged nor shorter than declared. The containers do say it, in bytes the decoders skip:

* **Ogg** (RFC 3533): the last page of a complete logical stream carries the end-of-stream flag. A file that ends
  inside a page, or on a page without that flag, was cut. A last page from another logical stream than the first
  page's marks a chained file (several streams one after the other).
* **MPEG audio** (mp3): frame headers state each frame's length, tags after the audio have fixed markers, and a
  Xing/Info header states the stream's bytes; ``service/decode/mpeg.py`` reads what they say about a cut.
* **RIFF/WAVE**: the ``data`` chunk header states its size; a file shorter than the chunk it declares was cut, and
  the declared size gives the track's real duration. (Size fields of 0 or 0xFFFFFFFF are what streaming writers
  leave behind: no claim is made then.)

The Ogg check reads the last page (at most ``MAX_OGG_PAGE_BYTES``), the MPEG check its head and tail
(``mpeg.HEAD_BYTES``, ``mpeg.TAIL_BYTES`` and the tags), the RIFF check only chunk headers; all restore the file's
position.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from service.decode import mpeg

OGG_CAPTURE = b"OggS"
OGG_HEADER_BYTES = 27  # fixed part of an Ogg page header, before the segment table
OGG_EOS_FLAG = 0x04
# Largest Ogg page: header + 255 lacing values + 255 segments of 255 bytes.
MAX_OGG_PAGE_BYTES = OGG_HEADER_BYTES + 255 + 255 * 255
MAX_RIFF_CHUNKS = 64  # chunk headers walked before the data chunk; real files have a handful (fmt, LIST, fact)
RIFF_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # placeholders of writers that could not seek back to fill the size in
# Tags after MPEG audio read with its tail: ID3v1, APEv2 and Lyrics3 are small; larger ones (APE cover art) make the
# tail check find no frames, so it makes no claim.
MPEG_TAGS_PROBE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Integrity:
    """What the container's own bytes say about the file's completeness."""

    cut_reason: str | None = None  # why the file looks cut short; None when nothing says so
    declared_seconds: float | None = None  # duration the container declares, when the decoders would not tell it
    # An Ogg file of several logical streams one after the other (a chained file): its last granule position counts
    # from the last link's start, so it declares nothing about the whole, and libsndfile reads the first link only.
    chained: bool = False


def ogg_cut_reason(tail: bytes) -> str | None:
    """Given the last bytes of an Ogg file (at least one whole page), why it looks cut; None if it ends cleanly."""
    position = tail.rfind(OGG_CAPTURE)
    while position >= 0:
        page_end = _ogg_page_end(tail, position)
        if page_end == len(tail):
            if tail[position + 5] & OGG_EOS_FLAG:
                return None
            return "the Ogg stream ends on a page without the end-of-stream flag: the file was cut"
        position = tail.rfind(OGG_CAPTURE, 0, position)
    return "the file ends inside an Ogg page: it was cut mid-page"


def ogg_serial(page_start: bytes) -> bytes:
    """The logical stream's serial number, from the start of a page."""
    return page_start[14:18]


def ogg_integrity(head: bytes, tail: bytes) -> Integrity:
    """Cut or not (``ogg_cut_reason``), and chained or not: the first and the last page belong to different
    logical streams."""
    last = tail.rfind(OGG_CAPTURE)
    chained = last >= 0 and len(tail) >= last + OGG_HEADER_BYTES and ogg_serial(tail[last:]) != ogg_serial(head)
    return Integrity(ogg_cut_reason(tail), chained=chained)


def _ogg_page_end(data: bytes, start: int) -> int | None:
    """Offset just past the page starting at ``start``, or None if its header does not fit in ``data``."""
    if start + OGG_HEADER_BYTES > len(data):
        return None
    segments = data[start + 26]
    table_end = start + OGG_HEADER_BYTES + segments
    if table_end > len(data):
        return None
    return table_end + sum(data[start + OGG_HEADER_BYTES : table_end])


def riff_wave_declared(source: BinaryIO, file_size: int) -> Integrity:
    """The ``data`` chunk's declared duration and whether the file holds all of it (RIFF/WAVE only).

    Walks the chunk headers by seeking past chunk bodies, so a large LIST or ID3 chunk costs no reading."""
    source.seek(0)
    if source.read(12)[8:12] != b"WAVE":
        return Integrity()
    offset, block_align, rate = 12, 0, 0
    for _ in range(MAX_RIFF_CHUNKS):
        source.seek(offset)
        header = source.read(8)
        if len(header) < 8:
            break
        chunk_id, size = header[:4], struct.unpack_from("<I", header, 4)[0]
        body = offset + 8
        if chunk_id == b"fmt ":
            fmt = source.read(16)
            if len(fmt) == 16:
                _format, _channels, rate, _byte_rate, block_align = struct.unpack_from("<HHIIH", fmt)
        elif chunk_id == b"data":
            if size in RIFF_UNKNOWN_SIZES or not (block_align and rate):
                break
            declared = size / block_align / rate
            if body + size > file_size:
                present = max(file_size - body, 0) / block_align / rate
                return Integrity(
                    f"the WAV data chunk declares {declared:.2f} s but the file holds {present:.2f} s", declared
                )
            return Integrity(None, declared)
        offset = body + size + (size & 1)  # chunks are padded to an even size
    return Integrity()


def check_integrity(source: BinaryIO) -> Integrity:
    """Apply the check the file's type calls for (Ogg, RIFF/WAVE, MPEG audio; others: none), restoring
    ``source``'s position."""
    position = source.tell()
    try:
        size = source.seek(0, 2)
        source.seek(0)
        head = source.read(OGG_HEADER_BYTES)
        if head.startswith(OGG_CAPTURE):
            source.seek(max(size - MAX_OGG_PAGE_BYTES, 0))
            return ogg_integrity(head, source.read())
        if head.startswith(b"RIFF"):
            return riff_wave_declared(source, size)
        return mpeg_integrity(source, size)
    finally:
        source.seek(position)


def mpeg_integrity(source: BinaryIO, file_size: int) -> Integrity:
    """Cut or not, for a file that starts with MPEG audio frames (after an ID3v2 tag); no claim for anything else."""
    source.seek(0)
    audio_start = mpeg.id3v2_size(source.read(mpeg.ID3V2_HEADER_BYTES))
    source.seek(audio_start)
    head = source.read(mpeg.HEAD_BYTES)
    if not mpeg.chain_at(head, 0):
        return Integrity()
    tail_offset = max(file_size - mpeg.TAIL_BYTES - MPEG_TAGS_PROBE_BYTES, audio_start)
    source.seek(tail_offset)
    tail = source.read()
    end = mpeg.audio_end(tail, tail_offset)
    reason = mpeg.tail_cut_reason(tail, end - tail_offset)
    stated = mpeg.xing_bytes(head, 0)
    # LAME and FFmpeg count the MPEG frames only (measured: exactly the bytes between the tags); some writers are
    # said to count the whole file. A file smaller than the stated stream is cut whichever they counted.
    if reason is None and stated is not None and file_size < stated:
        reason = f"the Xing/Info header states {stated} bytes of MPEG audio but the whole file has {file_size}"
    return Integrity(reason)
