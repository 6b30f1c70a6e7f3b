"""Whether an MPEG audio file (mp3, mp2) was cut short, from its frame headers: FFmpeg does not say.

Measured (docs/decode.md, "Damage and truncation"): a CBR mp3 without a Xing/Info header, cut at 30 % of its bytes,
decodes as a shorter, clean file; FFmpeg only logs ``invalid new backstep -1`` and states no length to compare with.
The bytes say it, because every MPEG audio frame header gives the frame's length:

* **the last frame is shorter than its header says** (the file ends inside a frame, or inside a frame header): a
  download or copy that stopped at an arbitrary byte lands inside a frame all but once per frame length;
* **a tag cut in the middle**: the file ends inside an ID3v1 tag (``TAG`` and fewer than its 128 bytes);
* **the Xing/Info header's byte count** (LAME, FFmpeg) is more than the file holds: this catches the cut that lands
  exactly on a frame boundary, for the files that carry one.

Tags after the audio (ID3v1, APEv2, Lyrics3v2, an appended ID3v2 with its footer) are stepped over first. Anything
else after the last whole frame (junk, zero padding) makes no claim: only what a frame header or a tag states counts.
The check reads the head (``HEAD_BYTES``) and the tail (``TAIL_BYTES`` before the tags); never the whole file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

# Longest MPEG audio frame: Layer II at 384 kbit/s and 32 kHz is 1728 bytes, Layer I/II/III under 3000 bytes.
TAIL_BYTES = 16 * 1024  # several frames of any kind: enough to anchor a chain of frames before the end
HEAD_BYTES = 16 * 1024  # the first frames after an ID3v2 tag, with the Xing/Info header in the first one
WALK_BLOCK_BYTES = 1 << 20  # read per block when walking every frame header (constant_bit_rate)
CHAIN_FRAMES = 4  # consecutive, consistent headers before a sync word counts as a frame (not bytes that look like one)
ID3V1_BYTES = 128
ID3V1_EXTENDED_BYTES = 227  # "TAG+" block before an ID3v1 tag
APE_FOOTER_BYTES = 32
APE_HAS_HEADER = 1 << 31
LYRICS3V2_END = b"LYRICS200"
LYRICS3V2_SIZE_DIGITS = 6
ID3V2_HEADER_BYTES = 10
ID3V2_FOOTER_FLAG = 0x10
MAX_TRAILING_TAGS = 4  # tags stacked after the audio (ID3v1 + APE + Lyrics3 + ID3v2 footer)

_VERSIONS = {0: 2.5, 2: 2, 3: 1}  # header bits → MPEG version (1 is reserved)
_LAYERS = {1: 3, 2: 2, 3: 1}  # header bits → layer (0 is reserved)
_RATES_HZ = {1: (44_100, 48_000, 32_000), 2: (22_050, 24_000, 16_000), 2.5: (11_025, 12_000, 8_000)}
_KBPS = {
    (1, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (1, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (1, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_KBPS[(2, 3)] = _KBPS[(2, 2)]


@dataclass(frozen=True)
class Frame:
    version: float
    layer: int
    sample_rate: int
    length: int  # bytes, header included
    mono: bool

    def same_stream(self, other: Frame) -> bool:
        return (self.version, self.layer, self.sample_rate) == (other.version, other.layer, other.sample_rate)


def parse_header(data: bytes, at: int) -> Frame | None:
    """The frame whose header starts at ``data[at]``, or None when those 4 bytes are no valid header (free-format
    frames, whose length the header does not give, count as invalid)."""
    if at + 4 > len(data) or data[at] != 0xFF or data[at + 1] & 0xE0 != 0xE0:
        return None
    b1, b2, b3 = data[at + 1], data[at + 2], data[at + 3]
    version, layer = _VERSIONS.get((b1 >> 3) & 3), _LAYERS.get((b1 >> 1) & 3)
    bitrate_index, rate_index = b2 >> 4, (b2 >> 2) & 3
    if version is None or layer is None or bitrate_index in (0, 15) or rate_index == 3:
        return None
    kbps = _KBPS[(1 if version == 1 else 2, layer)][bitrate_index]
    rate = _RATES_HZ[version][rate_index]
    padding = (b2 >> 1) & 1
    if layer == 1:
        length = (12 * kbps * 1000 // rate + padding) * 4
    else:
        slots = 72 if layer == 3 and version != 1 else 144
        length = slots * kbps * 1000 // rate + padding
    return Frame(version, layer, rate, length, mono=(b3 >> 6) == 3)


def chain_at(data: bytes, at: int, frames: int = CHAIN_FRAMES) -> bool:
    """Whether ``frames`` consistent frames follow one another from ``at`` (the last may run past ``data``)."""
    first = parse_header(data, at)
    position = at
    for _ in range(frames):
        frame = parse_header(data, position)
        if frame is None or not frame.same_stream(first):
            return False
        position += frame.length
        if position >= len(data):
            return True
    return True


def id3v2_size(head: bytes) -> int:
    """Bytes taken by an ID3v2 tag at the start of ``head`` (0 if none)."""
    if len(head) < ID3V2_HEADER_BYTES or not head.startswith(b"ID3"):
        return 0
    size = _syncsafe(head[6:10])
    return ID3V2_HEADER_BYTES + size + (ID3V2_HEADER_BYTES if head[5] & ID3V2_FOOTER_FLAG else 0)


def audio_end(tail: bytes, tail_offset: int) -> int:
    """File offset where the audio ends: before the tags stacked at the end (``tail`` = the file's last bytes,
    starting at file offset ``tail_offset``)."""
    end = len(tail)
    for _ in range(MAX_TRAILING_TAGS):
        size = _trailing_tag_size(tail[:end])
        if not size:
            break
        end -= size
    return tail_offset + max(end, 0)


def _trailing_tag_size(data: bytes) -> int:
    if data[-ID3V1_BYTES : -ID3V1_BYTES + 3] == b"TAG":
        return ID3V1_BYTES + (
            ID3V1_EXTENDED_BYTES if data[-ID3V1_BYTES - ID3V1_EXTENDED_BYTES :].startswith(b"TAG+") else 0
        )
    footer = data[-APE_FOOTER_BYTES:]
    if footer.startswith(b"APETAGEX") and len(footer) == APE_FOOTER_BYTES:
        size, _items, flags = struct.unpack_from("<III", footer, 12)
        return size + (APE_FOOTER_BYTES if flags & APE_HAS_HEADER else 0)
    if data.endswith(LYRICS3V2_END):
        digits = data[-len(LYRICS3V2_END) - LYRICS3V2_SIZE_DIGITS : -len(LYRICS3V2_END)]
        return int(digits) + len(digits) + len(LYRICS3V2_END) if digits.isdigit() else 0
    if data[-ID3V2_HEADER_BYTES : -ID3V2_HEADER_BYTES + 3] == b"3DI":
        return 2 * ID3V2_HEADER_BYTES + _syncsafe(data[-4:])
    return 0


def tail_cut_reason(tail: bytes, audio_end_at: int) -> str | None:
    """Why the frames at the end of ``tail`` show a cut, or None. ``audio_end_at``: index in ``tail`` where the
    audio ends (the tags after it stepped over); ``tail`` may go on past it with those tags."""
    audio = tail[:audio_end_at]
    anchor = next((i for i in range(len(audio)) if chain_at(audio, i)), None)
    if anchor is None:
        return None  # no frames to follow: make no claim
    first, position = parse_header(tail, anchor), anchor
    while position < audio_end_at:
        frame = parse_header(tail, position)
        if frame is None or not frame.same_stream(first):
            break
        if position + frame.length > len(tail):
            return (
                f"the last MPEG frame has {len(tail) - position} of the {frame.length} bytes its header states: "
                "the file ends inside it"
            )
        position += frame.length
    rest = tail[position:audio_end_at]
    if position == audio_end_at or not rest:
        return None
    if audio_end_at == len(tail) and len(rest) < 4 and rest[0] == 0xFF:
        return "the file ends inside an MPEG frame header: it was cut"
    if audio_end_at == len(tail) and rest.startswith(b"TAG") and len(rest) < ID3V1_BYTES:
        return f"the file ends inside its ID3v1 tag ({len(rest)} of {ID3V1_BYTES} bytes)"
    return None  # something else after the last whole frame: no claim


def _xing_at(head: bytes, start: int) -> int | None:
    """Offset of the Xing/Info header in the frame at ``head[start]``, or None when that frame carries none."""
    frame = parse_header(head, start)
    if frame is None or frame.layer != 3:
        return None
    side_info = (32 if not frame.mono else 17) if frame.version == 1 else (17 if not frame.mono else 9)
    at = start + 4 + side_info
    return at if head[at : at + 4] in (b"Xing", b"Info") and at + 8 <= len(head) else None


def has_xing(head: bytes, start: int) -> bool:
    """Whether the first frame carries a Xing/Info header (LAME, FFmpeg: frame count and seek table)."""
    return _xing_at(head, start) is not None


def constant_bit_rate(source: BinaryIO, start: int) -> bool:
    """Whether every frame from ``start`` on has the first one's bit rate, following the headers to the end (a tag
    or anything else that is no frame ends the walk). Reads the file in ``WALK_BLOCK_BYTES`` blocks."""
    source.seek(start)
    buffer, offset, position, rate_bits = b"", start, start, None
    while True:
        if position + 4 > offset + len(buffer):
            buffer, offset = buffer[position - offset :] + source.read(WALK_BLOCK_BYTES), position
            if position + 4 > offset + len(buffer):
                return rate_bits is not None
        frame = parse_header(buffer, position - offset)
        if frame is None:
            return rate_bits is not None
        bits = buffer[position - offset + 2] >> 4
        if rate_bits is not None and bits != rate_bits:
            return False
        rate_bits = bits
        position += frame.length


def xing_bytes(head: bytes, start: int) -> int | None:
    """The byte count a Xing/Info header in the frame at ``head[start]`` states (the whole MPEG stream's), or None."""
    at = _xing_at(head, start)
    if at is None:
        return None
    (flags,) = struct.unpack_from(">I", head, at + 4)
    offset = at + 8 + (4 if flags & 1 else 0)  # the frame count comes first when present
    if not flags & 2 or offset + 4 > len(head):
        return None
    (count,) = struct.unpack_from(">I", head, offset)
    return count or None


def _syncsafe(data: bytes) -> int:
    return (data[0] & 0x7F) << 21 | (data[1] & 0x7F) << 14 | (data[2] & 0x7F) << 7 | (data[3] & 0x7F)
