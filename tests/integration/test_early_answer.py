"""The sign-up form's early answer (issue #22): /suggest-subgenres answers from spread patches of a long track, the
complete analysis lands in the cache in the background, ?complete=true is today's answer, background work gives way
to interactive requests, and a container that cannot seek is decoded in order and says so. Real music throughout.
"""

from __future__ import annotations

import time

import pytest
import soundfile
from prometheus_client.parser import text_string_to_metric_families

from corpus.music import cut_clip, ensure_music
from tests.support.audio_factory import encode_audio
from tests.support.live_server import live_server, server_settings

PATCHES = 12
PATCH_SECONDS = 47872 / 16000  # one default-hop patch of the musicnn models
BACKGROUND_WAIT_SECONDS = 120.0


@pytest.fixture(scope="module")
def long_track() -> bytes:
    """60 s of a real Ogg Vorbis track (packets copied, no re-encoding): 20 patches, more than the sample's 12."""
    return cut_clip(ensure_music()[1], 30.0, 60.0)


@pytest.fixture(scope="module")
def adts_track() -> bytes:
    with soundfile.SoundFile(ensure_music()[2]) as f:
        samples = f.read(int(50 * f.samplerate), dtype="float32", always_2d=True).T
        return encode_audio(samples, f.samplerate, "aac")


def wait_for_background(live) -> None:
    deadline = time.monotonic() + BACKGROUND_WAIT_SECONDS
    while len(live.state.analysis.background):
        assert time.monotonic() < deadline, "the background analysis did not finish"
        time.sleep(0.05)


def suggest(http, data: bytes, **params) -> dict:
    response = http.post("/suggest-subgenres", files={"file": ("track", data)}, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_an_early_answer_says_what_it_covers_and_the_complete_analysis_then_serves_every_endpoint(
    models_dir, long_track
):
    with live_server(server_settings(models_dir, early_answer_patches=PATCHES)) as live, live.client() as http:
        early = suggest(http, long_track)
        assert early["complete"] is False and early["cached"] is False
        assert early["coverage"] == pytest.approx(PATCHES * PATCH_SECONDS / 60.0, abs=0.01)
        assert early["unsampled_integrity"] == "unknown" and early["sampling"] is None  # Ogg seeks
        assert len(early["suggestions"]) == 5
        wait_for_background(live)
        embedded = http.post("/embed", files={"file": ("track", long_track)})
        assert embedded.status_code == 200 and embedded.json()["cached"] is True
        again = suggest(http, long_track)
        assert again["complete"] is True and again["cached"] is True and again["coverage"] == 1.0
        assert again["unsampled_integrity"] is None


def test_the_platform_default_samples_once_for_both_musicnn_models_and_completes_both_in_the_background(
    models_dir, long_track
):
    settings = server_settings(models_dir, models="msd-musicnn,mtt-musicnn", early_answer_patches=PATCHES)
    with live_server(settings) as live, live.client() as http:
        early = suggest(http, long_track, k=50)
        assert (early["taxonomy"], early["models"]) == ("platform", ["msd-musicnn", "mtt-musicnn"])
        assert early["complete"] is False and early["unsampled_integrity"] == "unknown"
        assert early["coverage"] == pytest.approx(PATCHES * PATCH_SECONDS / 60.0, abs=0.01)
        platform = http.get("/models").json()["platform_taxonomy"]
        assert platform["unscored"] == [] and len(early["suggestions"]) == len(platform["subgenres"])
        wait_for_background(live)
        for model in ("msd-musicnn", "mtt-musicnn"):
            embedded = http.post("/embed", params={"model": model}, files={"file": ("track", long_track)})
            assert embedded.status_code == 200 and embedded.json()["cached"] is True, model
        again = suggest(http, long_track, k=50)
        assert again["complete"] is True and again["cached"] is True
        waited = suggest(http, long_track, k=50, complete="true")
        assert waited["suggestions"] == again["suggestions"]
        early_top = [s["subgenre"] for s in early["suggestions"][:5]]
        assert len(set(early_top) & {s["subgenre"] for s in again["suggestions"][:5]}) >= 3  # a sample of real music


def test_complete_true_is_todays_answer(models_dir, long_track):
    with live_server(server_settings(models_dir, early_answer_patches=0)) as live, live.client() as http:
        today = suggest(http, long_track)
    with live_server(server_settings(models_dir, early_answer_patches=PATCHES)) as live, live.client() as http:
        waited = suggest(http, long_track, complete="true")
    # Scores within float32 rounding: the two servers may batch the track's patches differently, and ONNX Runtime's
    # kernels round differently per batch size (~1e-8 here); everything else is identical.
    waited_suggestions, today_suggestions = waited.pop("suggestions"), today.pop("suggestions")
    assert [s["subgenre"] for s in waited_suggestions] == [s["subgenre"] for s in today_suggestions]
    assert [s["score"] for s in waited_suggestions] == pytest.approx([s["score"] for s in today_suggestions], abs=1e-6)
    assert waited == today
    assert waited["complete"] is True and waited["coverage"] == 1.0


def test_a_container_that_cannot_seek_is_sampled_in_order_and_says_so(models_dir, adts_track):
    with live_server(server_settings(models_dir, early_answer_patches=PATCHES)) as live, live.client() as http:
        early = suggest(http, adts_track)
        assert early["complete"] is False and "cannot seek (aac)" in early["sampling"]
        wait_for_background(live)


def test_overload_drops_background_analyses_before_refusing_a_request(models_dir, long_track):
    """Room for one analysis at a time: the first track's background analysis holds it, and the next request is
    served by dropping that background work, not refused."""
    settings = server_settings(models_dir, early_answer_patches=PATCHES, max_concurrent_analyses=1)
    with live_server(settings) as live, live.client() as http:
        before = background_outcomes(http)
        suggest(http, cut_clip(ensure_music()[0], 0.0, 180.0))  # its complete analysis takes seconds
        assert len(live.state.analysis.background) == 1
        answer = suggest(http, long_track)
        assert answer["complete"] is False
        wait_for_background(live)
        after = background_outcomes(http)
        assert (after["dropped"] - before["dropped"], after["completed"] - before["completed"]) == (1, 1)


def background_outcomes(http) -> dict[str, float]:
    """taggram_background_analyses_total by outcome (the registry is process-wide: tests compare before/after)."""
    found = {"dropped": 0.0, "completed": 0.0, "failed": 0.0}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        if family.name == "taggram_background_analyses":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    found[sample.labels["outcome"]] = sample.value
    return found


def test_a_cut_file_set_to_be_refused_is_refused_from_its_sample(models_dir, long_track):
    """An early answer hides nothing the sample already shows: a cut Ogg file is refused under damaged_audio=refuse."""
    settings = server_settings(models_dir, early_answer_patches=PATCHES, damaged_audio="refuse")
    with live_server(settings) as live, live.client() as http:
        response = http.post("/suggest-subgenres", files={"file": ("track", long_track[: len(long_track) * 9 // 10])})
        assert response.status_code == 422 and response.json()["code"] == "damaged_audio"
        assert len(live.state.analysis.background) == 0
