"""A cut mp3 says it was cut (issue #22 item 5): real music encoded by LAME (PyAV's libmp3lame), CBR and VBR, with and
without a Xing/Info header and an ID3v1 tag, cut where downloads stop; the whole files never warn.

Without a Xing/Info header FFmpeg states no length for an mp3 and decodes a cut one as a shorter, clean file: only
the frame headers and the tags show the cut (service/decode/mpeg.py).
"""

from __future__ import annotations

import io

import pytest
import soundfile

from corpus.music import ensure_music
from service.decode import AUDIO_TRUNCATED, decode, mpeg
from tests.support.audio_factory import encode_audio

SECONDS = 10.0
OFFSET_SECONDS = 30.0  # into the track: music, not its fade-in
MAX_SECONDS = 60.0
VBR_QUALITY = 4  # LAME -V4
CBR_BIT_RATE = 128_000
VARIANTS = [(bitrate, xing, id3v1) for bitrate in ("cbr", "vbr") for xing in (True, False) for id3v1 in (True, False)]
CUT_FRACTIONS = (0.3, 0.5, 0.9, 0.999)


def variant_id(variant) -> str:
    bitrate, xing, id3v1 = variant
    return f"{bitrate}-{'xing' if xing else 'no_xing'}-{'id3v1' if id3v1 else 'no_id3v1'}"


@pytest.fixture(scope="module")
def real_music():
    track = ensure_music()[1]  # lincity-ng "City Blues": a real recording, not a test tone
    with soundfile.SoundFile(track) as f:
        f.seek(int(OFFSET_SECONDS * f.samplerate))
        return f.read(int(SECONDS * f.samplerate), dtype="float32", always_2d=True).T, f.samplerate


@pytest.fixture(scope="module")
def mp3s(real_music) -> dict:
    samples, rate = real_music
    made = {}
    for variant in VARIANTS:
        bitrate, xing, id3v1 = variant
        options = {"write_xing": str(int(xing)), "write_id3v1": str(int(id3v1))}
        made[variant] = encode_audio(
            samples,
            rate,
            "mp3",
            muxer_options=options,
            **({"bit_rate": CBR_BIT_RATE} if bitrate == "cbr" else {"quality": VBR_QUALITY}),
        )
    return made


def warnings_of(data: bytes) -> list[str]:
    return [w.code for w in decode(io.BytesIO(data), max_seconds=MAX_SECONDS).facts.warnings]


def frame_boundaries(data: bytes) -> list[int]:
    """Offsets where the MPEG frames of a whole file start, following their headers from the first one."""
    position, starts = mpeg.id3v2_size(data), []
    while (frame := mpeg.parse_header(data, position)) is not None:
        starts.append(position)
        position += frame.length
    return starts


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_the_whole_file_decodes_without_a_warning(mp3s, variant):
    assert warnings_of(mp3s[variant]) == []


@pytest.mark.parametrize("fraction", CUT_FRACTIONS)
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_a_file_cut_anywhere_warns_that_it_is_truncated(mp3s, variant, fraction):
    data = mp3s[variant]
    assert AUDIO_TRUNCATED in warnings_of(data[: int(len(data) * fraction)])


def test_a_cbr_file_without_xing_cut_at_30_percent_says_the_last_frame_is_short(mp3s):
    """The issue's case: FFmpeg decodes it as a shorter clean file, and the length it states (bit rate × bytes)
    shrinks with the file, so comparing lengths cannot tell."""
    data = mp3s[("cbr", False, False)]
    facts = decode(io.BytesIO(data[: int(len(data) * 0.3)]), max_seconds=MAX_SECONDS).facts
    assert facts.declared_duration_seconds == pytest.approx(facts.duration_seconds, abs=0.1)
    assert [w.code for w in facts.warnings] == [AUDIO_TRUNCATED]
    assert "last MPEG frame" in facts.warnings[0].detail


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v[1]], ids=variant_id)
def test_a_file_with_xing_cut_exactly_between_frames_warns(mp3s, variant):
    """Every frame whole: the Xing/Info header's byte count is what shows the missing frames."""
    data = mp3s[variant]
    cut = frame_boundaries(data)[-3]  # the last two frames gone: 52 ms, far under the duration check's tolerance
    assert AUDIO_TRUNCATED in warnings_of(data[:cut])


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v[2]], ids=variant_id)
def test_a_file_cut_inside_its_id3v1_tag_warns(mp3s, variant):
    data = mp3s[variant]
    assert AUDIO_TRUNCATED in warnings_of(data[: len(data) - mpeg.ID3V1_BYTES // 2])


def test_a_whole_file_with_an_ape_tag_after_the_audio_does_not_warn(mp3s):
    """Tags after the audio are stepped over by their markers (an APEv2 footer here, as foobar2000/mp3gain write)."""
    item = b"\x05\x00\x00\x00\x00\x00\x00\x00Title\x00hello"
    size = len(item) + mpeg.APE_FOOTER_BYTES
    footer = b"APETAGEX" + (2000).to_bytes(4, "little") + size.to_bytes(4, "little") + (1).to_bytes(4, "little")
    footer += (0).to_bytes(4, "little") + bytes(8)
    assert warnings_of(mp3s[("cbr", False, False)] + item + footer) == []
