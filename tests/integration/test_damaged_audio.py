"""Real-world audio: damaged and truncated files say so, files FFmpeg refuses are read by libsndfile, and an
analysis shared by several requests owns its input.

Every file here is made by a real encoder (tests/support/audio_factory.py) and then cut or re-paged the way real files
get damaged: a download that stopped, a copy that ran out of disk. Nothing partial may be served in silence or cached
under the full file's hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import io

import av
import httpx
import numpy as np
import pytest

from service.api.app import create_app
from service.decode import (
    AUDIO_DAMAGED,
    AUDIO_TRUNCATED,
    SAMPLE_RATE,
    DecodeError,
    SourceReadError,
    decode,
    iter_decoded,
    sndfile,
)
from service.decode.facts import DecodeFacts
from service.engine.cache import cache_key
from tests.support.audio_factory import encode_audio, sine
from tests.support.live_server import live_server, server_settings
from tests.support.ogg_pages import ending_on_an_empty_page, split_pages, with_flags, with_padded_vorbis_setup

RATE = 44_100
SECONDS = 12.0
MAX_SECONDS = 60.0
CLEAN_FORMATS = ("wav", "flac", "mp3", "ogg", "opus", "webm", "aiff", "m4a", "aac")
# Cut in half, each of these still decodes (a prefix) and must say it is truncated. m4a is not here: with its
# index at the end, half a file does not open at all (415, tested in test_decode.py).
TRUNCATABLE = ("wav", "flac", "mp3", "ogg", "opus", "webm", "aiff")
AUDIO_ENDPOINTS = ("/taggram", "/embed", "/suggest-subgenres")


def tone(fmt: str, seconds: float = SECONDS) -> bytes:
    rate = 48_000 if fmt in ("opus", "webm") else RATE
    return encode_audio(sine(440, seconds, rate, channels=2), rate, fmt)


def codes(facts: DecodeFacts) -> list[str]:
    return [w.code for w in facts.warnings]


# ---- decode facts -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", CLEAN_FORMATS)
def test_a_complete_file_decodes_without_warnings_and_states_its_length(fmt):
    facts = decode(io.BytesIO(tone(fmt)), max_seconds=MAX_SECONDS).facts
    assert codes(facts) == []
    assert facts.decoder == "ffmpeg" and facts.codec
    assert facts.duration_seconds == pytest.approx(SECONDS, abs=0.1)
    assert facts.declared_duration_seconds == pytest.approx(SECONDS, abs=0.25)  # ADTS states an estimate


@pytest.mark.parametrize("fmt", TRUNCATABLE)
def test_a_file_cut_in_half_is_analysed_with_a_truncation_warning(fmt):
    data = tone(fmt)
    facts = decode(io.BytesIO(data[: len(data) // 2]), max_seconds=MAX_SECONDS).facts
    assert AUDIO_TRUNCATED in codes(facts)
    assert 0 < facts.duration_seconds < 0.8 * SECONDS
    assert all(w.detail for w in facts.warnings)


def test_a_raw_aac_stream_cut_mid_frame_is_damaged():
    data = tone("aac")
    facts = decode(io.BytesIO(data[: len(data) // 2]), max_seconds=MAX_SECONDS).facts
    assert codes(facts) == [AUDIO_DAMAGED]  # ADTS declares no length: the broken last frame is what shows


def test_a_wav_cut_short_declares_the_length_its_header_announces():
    data = tone("wav")
    facts = decode(io.BytesIO(data[: len(data) // 3]), max_seconds=MAX_SECONDS).facts
    assert facts.declared_duration_seconds == pytest.approx(SECONDS)  # FFmpeg alone reports the clamped length
    assert codes(facts) == [AUDIO_TRUNCATED]
    assert "12.0 s" in facts.warnings[0].detail


def test_an_ogg_cut_at_a_page_boundary_is_truncated():
    pages = split_pages(tone("ogg"))
    assert len(pages) > 3
    facts = decode(io.BytesIO(b"".join(pages[:-1])), max_seconds=MAX_SECONDS).facts
    assert codes(facts) == [AUDIO_TRUNCATED]
    assert "end-of-stream" in facts.warnings[0].detail


def test_an_ogg_that_ends_with_its_end_of_stream_page_is_clean_whatever_its_length():
    pages = split_pages(tone("ogg"))
    resealed = b"".join(pages[:-2]) + with_flags(pages[-2], eos=True)  # a valid, shorter file
    assert codes(decode(io.BytesIO(resealed), max_seconds=MAX_SECONDS).facts) == []


def test_a_chained_ogg_decodes_every_link_without_a_warning():
    first, second = tone("ogg", 3.0), tone("ogg", 4.0)  # two logical streams, one after the other (RFC 3533)
    facts = decode(io.BytesIO(first + second), max_seconds=MAX_SECONDS).facts
    assert codes(facts) == []
    assert facts.duration_seconds == pytest.approx(7.0, abs=0.05)


def test_a_chained_ogg_whose_links_change_rate_is_damaged_not_silently_shortened():
    first = tone("ogg", 3.0)
    second = encode_audio(sine(660, 4.0, 22_050), 22_050, "ogg")  # FFmpeg's demuxer stops at the rate change
    facts = decode(io.BytesIO(first + second), max_seconds=MAX_SECONDS).facts
    assert facts.duration_seconds == pytest.approx(3.0, abs=0.05)
    assert codes(facts) == [AUDIO_DAMAGED]  # libsndfile reads the first link only: it cannot vouch for the file
    assert facts.declared_duration_seconds is None  # the last granule counts from the second link's start


def test_a_closed_upload_is_a_server_fault_not_a_short_track():
    source = io.BytesIO(tone("wav", 30.0))
    chunks = iter_decoded(source, max_seconds=MAX_SECONDS, chunk_samples=SAMPLE_RATE)
    next(chunks)
    source.close()  # what the first of several requests sharing an analysis used to do on its way out
    with pytest.raises(SourceReadError):
        for _ in chunks:
            pass


# ---- files FFmpeg gets wrong ----------------------------------------------------------------------------------------


def ffmpeg_packet_errors(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        errors = 0
        for packet in container.demux(container.streams.audio[0]):
            try:
                packet.decode()
            except av.error.FFmpegError:
                errors += 1
        return errors


def test_a_vorbis_file_ffmpeg_refuses_is_read_by_libsndfile():
    original = tone("ogg", 5.0)
    refused_by_ffmpeg = with_padded_vorbis_setup(original)
    with pytest.raises(av.error.FFmpegError):
        av.open(io.BytesIO(refused_by_ffmpeg))  # the condition under test: FFmpeg alone gives up
    audio = decode(io.BytesIO(refused_by_ffmpeg), max_seconds=MAX_SECONDS)
    assert audio.facts.decoder == "libsndfile" and audio.facts.codec == "vorbis"
    assert codes(audio.facts) == []
    reference = decode(io.BytesIO(original), max_seconds=MAX_SECONDS).samples  # FFmpeg on the unpadded file
    assert audio.samples.size == reference.size
    assert np.max(np.abs(audio.samples - reference)) < 1e-3


def test_a_file_neither_decoder_reads_keeps_ffmpegs_reason():
    data = with_padded_vorbis_setup(tone("ogg", 3.0))
    pages = split_pages(data)
    unreadable = pages[0] + b"\x00" * len(pages[1]) + b"".join(pages[2:])  # the setup header is gone as well
    with pytest.raises(DecodeError) as caught:
        decode(io.BytesIO(unreadable), max_seconds=MAX_SECONDS)
    assert caught.value.code == "undecodable_audio" and "libsndfile" not in caught.value.detail


def test_an_ogg_ending_on_an_empty_page_is_not_reported_damaged():
    """FFmpeg rejects the empty last packet (seen in Debian's supertux-data); libsndfile reads the file cleanly to
    the same length, so nothing is missing and no warning is due."""
    data = ending_on_an_empty_page(tone("ogg", 5.0))
    assert ffmpeg_packet_errors(data) == 1
    facts = decode(io.BytesIO(data), max_seconds=MAX_SECONDS).facts
    assert facts.decoder == "ffmpeg" and codes(facts) == []
    assert facts.duration_seconds == pytest.approx(5.0, abs=0.01)


def test_ffmpeg_errors_that_libsndfile_confirms_keep_the_warning():
    data = tone("flac")
    facts = decode(io.BytesIO(data[: len(data) // 2]), max_seconds=MAX_SECONDS).facts
    assert facts.damaged and AUDIO_DAMAGED in codes(facts)  # libsndfile cannot read it cleanly either


# ---- the libsndfile decoder ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_libsndfile_gives_the_same_samples_as_ffmpeg_for_lossless_files(fmt):
    data = tone(fmt, 5.0)
    reference = decode(io.BytesIO(data), max_seconds=MAX_SECONDS).samples
    facts = DecodeFacts()
    fallback = np.concatenate(list(sndfile.decode_chunks(io.BytesIO(data), MAX_SECONDS, SAMPLE_RATE, facts)))
    assert facts.decoder == "libsndfile" and facts.declared_duration_seconds == pytest.approx(5.0)
    np.testing.assert_array_equal(fallback, reference)  # same PCM scaling, mono, resampler: the same bits


def test_libsndfile_agrees_with_ffmpeg_on_lossy_vorbis():
    data = tone("ogg", 5.0)
    reference = decode(io.BytesIO(data), max_seconds=MAX_SECONDS).samples
    fallback = np.concatenate(list(sndfile.decode_chunks(io.BytesIO(data), MAX_SECONDS, SAMPLE_RATE, DecodeFacts())))
    assert fallback.size == reference.size
    assert np.max(np.abs(fallback - reference)) < 1e-3  # two Vorbis decoders: float rounding apart, not samples


def test_libsndfile_enforces_the_duration_cap_while_decoding():
    with pytest.raises(DecodeError) as caught:
        for _ in sndfile.decode_chunks(io.BytesIO(tone("flac", 8.0)), 3.0, SAMPLE_RATE, DecodeFacts()):
            pass
    assert caught.value.code == "audio_too_long"


def test_libsndfile_refuses_formats_that_are_not_music_containers():
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(16_000, np.float32), 16_000, format="VOC")  # Creative Voice: a 1990s format
    with pytest.raises(DecodeError) as caught:
        list(sndfile.decode_chunks(io.BytesIO(buffer.getvalue()), MAX_SECONDS, SAMPLE_RATE, DecodeFacts()))
    assert caught.value.code == "undecodable_audio"


# ---- over HTTP ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(models_dir):
    with live_server(server_settings(models_dir, max_batch_wait_ms=2)) as live:
        yield live


def truncated_flac() -> bytes:
    data = tone("flac", 9.0)
    return data[: len(data) // 2]


@pytest.mark.parametrize("endpoint", AUDIO_ENDPOINTS)
def test_every_endpoint_says_when_it_analysed_a_damaged_file_and_the_cache_keeps_saying_it(server, endpoint):
    data = truncated_flac() + endpoint.encode()  # distinct bytes per endpoint: each starts uncached
    with server.client() as http:
        first = http.post(endpoint, content=data).json()
        again = http.post(endpoint, content=data).json()
    assert first["cached"] is False and again["cached"] is True
    assert [w["code"] for w in first["warnings"]] == [AUDIO_DAMAGED, AUDIO_TRUNCATED]
    assert again["warnings"] == first["warnings"] and again["decode"] == first["decode"]
    assert first["decode"]["decoder"] == "ffmpeg" and first["decode"]["codec"] == "flac"
    assert first["decode"]["declared_duration_seconds"] == pytest.approx(9.0)
    assert first["decode"]["duration_seconds"] < 6.0


def test_a_clean_file_has_an_empty_warnings_list(server):
    with server.client() as http:
        body = http.post("/embed", content=tone("mp3", 4.0)).json()
    assert body["warnings"] == [] and body["decode"]["decoder"] == "ffmpeg"


def test_a_file_only_libsndfile_reads_is_analysed_over_http(server):
    with server.client() as http:
        body = http.post("/taggram", content=with_padded_vorbis_setup(tone("ogg", 7.0))).json()
        exposition = http.get("/metrics").text
    assert body["decode"]["decoder"] == "libsndfile" and body["warnings"] == []
    assert len(body["segments"]) == 2
    assert 'taggram_decodes_total{decoder="libsndfile"}' in exposition


def test_decode_warnings_are_counted_by_code(server):
    with server.client() as http:
        http.post("/embed", content=truncated_flac() + b"metrics")
        exposition = http.get("/metrics").text
    assert 'taggram_decode_warnings_total{code="audio_truncated"}' in exposition
    assert 'taggram_decodes_total{decoder="ffmpeg"}' in exposition


def test_refusing_damaged_audio_answers_422_and_caches_nothing(models_dir):
    data = truncated_flac()
    with live_server(server_settings(models_dir, damaged_audio="refuse")) as live, live.client() as http:
        refused = http.post("/suggest-subgenres", content=data)
        clean = http.post("/suggest-subgenres", content=tone("flac", 4.0))
        model = live.state.models["msd-musicnn"]
        key = cache_key(
            hashlib.sha256(data).hexdigest(),
            model.name,
            model.manifest.onnx.sha256,
            model.manifest.geometry.hop_frames(None) * model.manifest.geometry.frame_hop,
            precision=model.runner.precision,
        )
        assert key not in live.state.cache
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "damaged_audio" and "9.0 s" in refused.json()["detail"]
    assert clean.status_code == 200


# ---- input ownership ----------------------------------------------------------------------------------------------


def test_cancelling_the_first_of_identical_requests_mid_decode_leaves_the_others_the_full_analysis(models_dir):
    """The first request's handler is cancelled (what a server or middleware does on a client disconnect) while
    the analysis it started is still decoding. The other requests share that analysis: they must get all of it,
    and the cache must hold all of it, not the prefix decoded before the first request's file was closed."""
    seconds = 240.0  # 80 patches: the decoder runs ahead of inference until its 64-patch allowance stops it
    data = encode_audio(sine(330, seconds, SAMPLE_RATE), SAMPLE_RATE, "wav")
    app = create_app(server_settings(models_dir, max_batch_wait_ms=2))
    state = app.state.taggram

    async def scenario():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://taggram", timeout=300) as http:

                def post():
                    return asyncio.create_task(http.post("/embed", content=data, headers={"content-type": "audio/wav"}))

                first = post()
                while len(state.flight) == 0:
                    await asyncio.sleep(0.01)
                others = [post(), post()]
                await asyncio.sleep(0.3)
                assert len(state.flight) == 1, "the shared analysis finished before the cancellation: test is void"
                first.cancel()
                responses = await asyncio.gather(*others)
                with pytest.raises(asyncio.CancelledError):
                    await first
                model = state.models["msd-musicnn"]
                geometry = model.manifest.geometry
                key = cache_key(
                    hashlib.sha256(data).hexdigest(),
                    model.name,
                    model.manifest.onnx.sha256,
                    geometry.hop_frames(None) * geometry.frame_hop,
                    precision=model.runner.precision,
                )
                cached = await state.cache.get(key)
                return responses, cached

    responses, cached = asyncio.run(scenario())
    bodies = [r.json() for r in responses]
    assert [r.status_code for r in responses] == [200, 200]
    for body in bodies:
        assert body["duration_seconds"] == pytest.approx(seconds)
        assert body["warnings"] == []
    assert bodies[0]["embedding"] == bodies[1]["embedding"]
    assert cached is not None and cached.duration_seconds == pytest.approx(seconds)
    np.testing.assert_array_equal(
        np.mean(cached.embedding.astype(np.float64), axis=0).astype(np.float32),
        np.asarray(bodies[0]["embedding"], np.float32),
    )
