"""The HTTP API, over real HTTP through uvicorn, with audio files generated here in every supported format."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest
import redis

from service.engine.cache import cache_key
from tests.support.audio_factory import chord, encode_audio, noise, sine, stereo
from tests.support.live_server import live_server, server_settings
from tests.support.redis_support import private_redis, private_redis_factory, redis_url  # noqa: F401 (fixtures)

PATCH_SECONDS = 187 * 256 / 16_000
FORMATS = ("wav", "flac", "mp3", "ogg", "opus", "m4a")
AUDIO_ENDPOINTS = ("/taggram", "/embed", "/suggest-subgenres")


def music_like(seconds: float, sample_rate: int = 44_100, channels: int = 2, seed: int = 0) -> np.ndarray:
    """A chord over quiet noise: enough structure for the models to produce non-trivial tags."""
    tone = chord((220.0, 277.2, 329.6), seconds, sample_rate, channels=channels)
    return (tone + noise(seconds, sample_rate, seed=seed, amplitude=0.05, channels=channels)).astype(np.float32)


def wav(seconds: float, seed: int = 0, sample_rate: int = 22_050) -> bytes:
    return encode_audio(music_like(seconds, sample_rate, 1, seed), sample_rate, "wav")


@pytest.fixture(scope="module")
def server(models_dir):
    with live_server(server_settings(models_dir, models="msd-musicnn,mtt-vgg", max_batch_wait_ms=2)) as live:
        yield live


@pytest.fixture(scope="module")
def client(server):
    with server.client() as http:
        yield http


def problem(response) -> dict:
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == response.status_code and body["code"] and body["detail"]
    return body


# ---- formats and channels ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("sample_rate", "channels"), [(44_100, 2), (48_000, 2), (8_000, 1)])
def test_every_format_rate_and_channel_count_is_tagged(client, fmt, sample_rate, channels):
    if fmt == "opus" and sample_rate == 44_100:
        sample_rate = 48_000  # libopus encodes 8/12/16/24/48 kHz only
    data = encode_audio(music_like(7.0, sample_rate, channels), sample_rate, fmt)
    response = client.post("/taggram", files={"file": (f"track.{fmt}", data, "application/octet-stream")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duration_seconds"] == pytest.approx(7.0, abs=0.1)  # codec priming/padding stays under 0.1 s
    assert len(body["segments"]) == 2  # 7 s = two full patches + a tail under half a patch (dropped)
    assert len(body["labels"]) == 50 and all(len(s["scores"]) == 50 for s in body["segments"])
    assert all(0.0 <= p <= 1.0 for s in body["segments"] for p in s["scores"])


def test_raw_body_and_multipart_give_the_same_analysis_and_share_the_cache(client):
    data = wav(5.0, seed=11)
    raw = client.post("/embed", content=data, headers={"content-type": "audio/wav"})
    multipart = client.post("/embed", files={"file": ("x.wav", data, "audio/wav")})
    assert raw.status_code == multipart.status_code == 200
    assert raw.json()["cached"] is False and multipart.json()["cached"] is True
    assert raw.json()["embedding"] == multipart.json()["embedding"]


def test_stereo_is_the_mean_of_the_channels(client):
    left = sine(440.0, 6.0, 44_100)[0]
    as_stereo = encode_audio(stereo(left, np.zeros_like(left)), 44_100, "wav")
    as_mono_half = encode_audio(left[None] / 2, 44_100, "wav")
    a = client.post("/taggram", content=as_stereo, headers={"content-type": "audio/wav"}).json()
    b = client.post("/taggram", content=as_mono_half, headers={"content-type": "audio/wav"}).json()
    np.testing.assert_allclose(a["mean"], b["mean"], atol=1e-4)


# ---- response contracts -----------------------------------------------------------------------------------------


def test_taggram_segments_follow_the_hop_and_mean_is_their_average(client):
    body = client.post("/taggram?hop=1.5", content=wav(9.0, seed=2), headers={"content-type": "audio/wav"}).json()
    assert body["hop_seconds"] == pytest.approx(94 * 256 / 16_000)  # 1.5 s rounds to 94 frames
    assert body["patch_seconds"] == pytest.approx(PATCH_SECONDS)
    starts = [s["start"] for s in body["segments"]]
    assert starts == pytest.approx([i * body["hop_seconds"] for i in range(len(starts))])
    assert all(s["end"] <= body["duration_seconds"] for s in body["segments"])
    scores = np.array([s["scores"] for s in body["segments"]], dtype=np.float32)
    np.testing.assert_allclose(body["mean"], scores.astype(np.float64).mean(axis=0), rtol=1e-6)


def test_embed_is_the_mean_of_segment_embeddings(client):
    body = client.post(
        "/embed?segments=true&model=msd-musicnn", content=wav(8.0, seed=3), headers={"content-type": "audio/wav"}
    ).json()
    assert body["dim"] == 200 == len(body["embedding"])
    per_segment = np.array([s["embedding"] for s in body["segments"]])
    np.testing.assert_allclose(body["embedding"], per_segment.mean(axis=0), rtol=1e-5, atol=1e-6)
    without = client.post("/embed", content=wav(8.0, seed=3), headers={"content-type": "audio/wav"}).json()
    assert "segments" not in without and without["embedding"] == body["embedding"]


def test_vgg_model_embeds_its_flattened_pool5(client):
    body = client.post("/embed?model=mtt-vgg", content=wav(4.0, seed=4), headers={"content-type": "audio/wav"}).json()
    assert body["model"] == "mtt-vgg" and body["dim"] == 256


def test_suggestions_are_k_taxonomy_subgenres_best_first(client):
    response = client.post(
        "/suggest-subgenres?k=3&model=msd-musicnn", content=wav(6.0, seed=5), headers={"content-type": "audio/wav"}
    )
    body = response.json()
    taxonomy = json.loads((server_taxonomy_path()).read_text())
    assert body["taxonomy"] == taxonomy["name"]
    assert len(body["suggestions"]) == 3
    assert {s["subgenre"] for s in body["suggestions"]} <= set(taxonomy["subgenres"])
    scores = [s["score"] for s in body["suggestions"]]
    assert scores == sorted(scores, reverse=True)


def test_suggestion_score_is_the_best_mean_score_among_the_subgenres_tags(client):
    data = wav(6.0, seed=6)
    taggram = client.post("/taggram", content=data, headers={"content-type": "audio/wav"}).json()
    suggestions = client.post(
        "/suggest-subgenres?k=50&model=msd-musicnn", content=data, headers={"content-type": "audio/wav"}
    ).json()
    mean = dict(zip(taggram["labels"], taggram["mean"]))
    taxonomy = json.loads(server_taxonomy_path().read_text())["subgenres"]
    for s in suggestions["suggestions"]:
        assert s["score"] == pytest.approx(max(mean[t] for t in taxonomy[s["subgenre"]]), rel=1e-6)
    assert len(suggestions["suggestions"]) == len(taxonomy)  # k is capped by the taxonomy's size


def test_the_default_suggestions_rank_the_platform_vocabulary_each_subgenre_from_its_first_model(client):
    """No ?model= and no ?taxonomy=: the platform taxonomy (docs/signup.md). Each subgenre's score is the best mean
    of its tags in the first loaded model of the platform file's list whose taxonomy names it (this server loads
    msd-musicnn and mtt-vgg: mtt-vgg stands in for mtt-musicnn)."""
    from service.artefacts.taxonomy import SHIPPED_DIR

    platform = client.get("/models").json()["platform_taxonomy"]
    assert platform["default"] is True and platform["models"] == ["msd-musicnn", "mtt-vgg"]
    assert platform["unscored"] == [] and {"Rock", "Jazz", "Classical", "Opera"} <= set(platform["subgenres"])
    data = wav(6.0, seed=6)
    body = client.post("/suggest-subgenres?k=50", content=data, headers={"content-type": "audio/wav"}).json()
    assert (body["taxonomy"], body["model"], body["models"]) == ("platform", "msd-musicnn", platform["models"])
    expected = {}
    for model in reversed(platform["models"]):  # the first model last: it wins the subgenres both name
        taggram = client.post(f"/taggram?model={model}", content=data, headers={"content-type": "audio/wav"}).json()
        mean = dict(zip(taggram["labels"], taggram["mean"]))
        for subgenre, tags in json.loads((SHIPPED_DIR / f"{model}.json").read_text())["subgenres"].items():
            expected[subgenre] = max(mean[t] for t in tags)
    assert {s["subgenre"]: s["score"] for s in body["suggestions"]} == pytest.approx(expected, rel=1e-6)
    assert [s["subgenre"] for s in body["suggestions"]] == sorted(expected, key=lambda s: -expected[s])
    again = client.post("/suggest-subgenres?k=3", content=data, headers={"content-type": "audio/wav"}).json()
    assert again["cached"] is True  # both models' analyses are cached under the track's key


def test_the_platform_taxonomy_by_name_refuses_a_model_it_would_ignore(client):
    response = client.post(
        "/suggest-subgenres?taxonomy=platform&model=mtt-vgg", content=wav(4.0), headers={"content-type": "audio/wav"}
    )
    assert (response.status_code, response.json()["code"]) == (422, "invalid_parameter")
    assert "leave out ?model=" in response.json()["detail"]


def server_taxonomy_path():
    from service.artefacts.taxonomy import SHIPPED_DIR

    return SHIPPED_DIR / "msd-musicnn.json"


def test_models_lists_manifests_and_taxonomies(client):
    body = client.get("/models").json()
    assert body["default"] == "msd-musicnn"
    names = {m["name"] for m in body["models"]}
    assert names == {"msd-musicnn", "mtt-vgg"}
    first = next(m for m in body["models"] if m["name"] == "msd-musicnn")
    assert first["manifest"]["onnx"]["sha256"] and first["taxonomy"]["subgenres"]["House"] == ["House"]
    assert first["provider"] == "CPUExecutionProvider"


def test_health_readiness_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    schema = client.get("/openapi.json").json()
    assert {"/taggram", "/embed", "/suggest-subgenres", "/models"} <= set(schema["paths"])
    body = schema["paths"]["/taggram"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "audio/*", "application/octet-stream"} <= set(body)


# ---- cache ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", AUDIO_ENDPOINTS)
def test_cached_response_equals_uncached_exactly(client, endpoint):
    data = wav(7.0, seed=hash(endpoint) % 1000 + 100)
    first = client.post(endpoint + "?k=7", content=data, headers={"content-type": "audio/wav"}).json()
    second = client.post(endpoint + "?k=7", content=data, headers={"content-type": "audio/wav"}).json()
    assert (first.pop("cached"), second.pop("cached")) == (False, True)
    assert first == second


def test_one_cache_entry_serves_every_endpoint_and_any_k(client):
    data = wav(5.0, seed=21)
    assert client.post("/taggram", content=data, headers={"content-type": "audio/wav"}).json()["cached"] is False
    for endpoint in (
        "/embed",
        "/suggest-subgenres?k=2&model=msd-musicnn",
        "/suggest-subgenres?k=9&taxonomy=platform-genres-msd",
    ):
        assert client.post(endpoint, content=data, headers={"content-type": "audio/wav"}).json()["cached"] is True
    # A different hop or model is a different analysis.
    assert client.post("/taggram?hop=1", content=data, headers={"content-type": "audio/wav"}).json()["cached"] is False
    assert (
        client.post("/taggram?model=mtt-vgg", content=data, headers={"content-type": "audio/wav"}).json()["cached"]
        is False
    )


def test_identical_concurrent_requests_are_computed_once(server):
    data = wav(20.0, seed=31)

    async def burst():
        async with server.async_client() as http:
            return await asyncio.gather(
                *(http.post("/embed", content=data, headers={"content-type": "audio/wav"}) for _ in range(6))
            )

    before = audio_seconds(server)
    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    assert len({json.dumps(r.json()["embedding"]) for r in responses}) == 1
    assert audio_seconds(server) - before == pytest.approx(20.0, abs=0.01)  # analysed once, not six times


def audio_seconds(server) -> float:
    from service import metrics

    return metrics.AUDIO_SECONDS.labels("msd-musicnn")._value.get()


def test_redis_cache_stores_the_entry_under_the_documented_key(models_dir, redis_url):
    data = wav(5.0, seed=41)
    with live_server(server_settings(models_dir, redis_url=redis_url)) as live, live.client() as http:
        first = http.post("/embed", content=data, headers={"content-type": "audio/wav"}).json()
        second = http.post("/embed", content=data, headers={"content-type": "audio/wav"}).json()
        manifest = live.state.models["msd-musicnn"].manifest
    assert (first.pop("cached"), second.pop("cached")) == (False, True) and first == second
    import hashlib

    key = cache_key(
        hashlib.sha256(data).hexdigest(),
        "msd-musicnn",
        manifest.onnx.sha256,
        187 * 256,
        precision=live.state.models["msd-musicnn"].runner.precision,
    )
    plain = redis.Redis.from_url(redis_url)
    assert plain.exists(key) == 1 and plain.ttl(key) > 0


def test_requests_succeed_while_redis_is_down_and_hits_resume_after_restart(models_dir, private_redis):
    data = wav(4.0, seed=51)
    settings = server_settings(models_dir, redis_url=private_redis.url, redis_timeout_seconds=0.2)
    with live_server(settings) as live, live.client() as http:
        assert http.post("/embed", content=data, headers={"content-type": "audio/wav"}).json()["cached"] is False
        private_redis.kill()
        for seed in (52, 53):  # misses and hits both bypass a dead cache
            assert (
                http.post("/embed", content=wav(4.0, seed=seed), headers={"content-type": "audio/wav"}).status_code
                == 200
            )
        down = http.post("/embed", content=data, headers={"content-type": "audio/wav"})
        assert down.status_code == 200 and down.json()["cached"] is False
        errors = metric_value(http, 'taggram_cache_errors_total{backend="redis"')
        assert errors > 0
        private_redis.restart()
        import time

        time.sleep(1.1)  # the cache leaves a failed Redis alone for one second
        assert http.post("/embed", content=data, headers={"content-type": "audio/wav"}).json()["cached"] is False
        assert http.post("/embed", content=data, headers={"content-type": "audio/wav"}).json()["cached"] is True


def metric_value(http, prefix: str) -> float:
    lines = [line for line in http.get("/metrics").text.splitlines() if line.startswith(prefix)]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


# ---- batching and fairness --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_patches_from_concurrent_requests_share_a_batch(models_dir):
    settings = server_settings(models_dir, max_batch_patches=16, max_batch_wait_ms=300)
    with live_server(settings) as live:

        async def two_at_once():
            async with live.async_client() as http:
                return await asyncio.gather(
                    *(
                        http.post("/embed", content=wav(6.0, seed=60 + i), headers={"content-type": "audio/wav"})
                        for i in range(2)
                    )
                )

        assert all(r.status_code == 200 for r in asyncio.run(two_at_once()))
        batches = list(live.state.batchers["msd-musicnn"].recent_batches)
    assert any(len(set(b.job_ids)) == 2 for b in batches), [b.job_ids for b in batches]


@pytest.mark.slow
def test_a_short_clip_is_not_stuck_behind_a_long_track(models_dir):
    settings = server_settings(models_dir, max_batch_patches=4, max_batch_wait_ms=0)
    long_track, short_clip = wav(240.0, seed=70, sample_rate=16_000), wav(6.0, seed=71)
    with live_server(settings) as live:

        async def long_then_short():
            finished = []
            async with live.async_client() as http:

                async def post(name, data, delay):
                    await asyncio.sleep(delay)
                    response = await http.post("/embed", content=data, headers={"content-type": "audio/wav"})
                    finished.append((name, response.status_code))

                await asyncio.gather(post("long", long_track, 0.0), post("short", short_clip, 0.5))
            return finished

        finished = asyncio.run(long_then_short())
    # 80 patches in batches of 4 take ~20 batches; round-robin lets the 2-patch clip through within ~2.
    assert finished == [("short", 200), ("long", 200)]


# ---- errors: every code produced by a real request ---------------------------------------------------------------


def test_413_when_the_body_exceeds_the_limit_while_streaming(models_dir):
    with live_server(server_settings(models_dir, max_upload_bytes=100_000)) as live, live.client() as http:
        big = wav(10.0, seed=80)  # ~441 kB
        declared = http.post("/embed", content=big, headers={"content-type": "audio/wav"})
        assert declared.status_code == 413 and problem(declared)["code"] == "body_too_large"

        def chunks():  # no Content-Length: the limit must trip while reading
            for i in range(0, len(big), 16_384):
                yield big[i : i + 16_384]

        streamed = http.post("/embed", content=chunks(), headers={"content-type": "audio/wav"})
        assert streamed.status_code == 413 and problem(streamed)["code"] == "body_too_large"
        multipart = http.post("/embed", files={"file": ("a.wav", big, "audio/wav")})
        assert multipart.status_code == 413
        assert http.post("/embed", content=wav(1.5), headers={"content-type": "audio/wav"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"", "audio/wav", 422, "empty_body"),
        (b"\x00\x01garbage" * 500, "audio/mpeg", 415, "undecodable_audio"),
        (b"RIFF....WAVEfmt ", "application/octet-stream", 415, "undecodable_audio"),
        (b"{}", "application/json", 415, "unsupported_media_type"),
        (b"a=b", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
def test_bad_bodies_get_problem_json(client, body, content_type, status, code):
    response = client.post("/embed", content=body, headers={"content-type": content_type})
    assert response.status_code == status and problem(response)["code"] == code


def test_422_too_short_below_the_minimum_and_short_clips_above_it_are_repeat_padded(client):
    short = client.post("/taggram", content=wav(0.5, seed=90), headers={"content-type": "audio/wav"})
    assert short.status_code == 422 and problem(short)["code"] == "audio_too_short"
    padded = client.post("/taggram", content=wav(1.2, seed=91), headers={"content-type": "audio/wav"})
    assert padded.status_code == 200 and len(padded.json()["segments"]) == 1
    assert padded.json()["segments"][0]["end"] == pytest.approx(1.2, abs=1e-3)


def test_422_too_long_is_enforced_while_decoding(models_dir):
    with live_server(server_settings(models_dir, max_audio_seconds=10.0)) as live, live.client() as http:
        response = http.post("/embed", content=wav(30.0, seed=92), headers={"content-type": "audio/wav"})
        assert response.status_code == 422 and problem(response)["code"] == "audio_too_long"


def test_multipart_without_a_file_or_with_two_files_is_refused(client):
    none = client.post("/embed", files={"other": ("a.wav", wav(2.0), "audio/wav")})
    assert none.status_code == 422 and problem(none)["code"] == "missing_file"
    two = client.post(
        "/embed", files=[("file", ("a.wav", wav(2.0), "audio/wav")), ("file", ("b.wav", wav(2.0), "audio/wav"))]
    )
    assert two.status_code == 422 and problem(two)["code"] == "multiple_files"


@pytest.mark.parametrize("query", ["model=nope", "hop=0.01", "hop=-1", "k=0", "k=1000", "hop=abc"])
def test_bad_parameters_get_422(client, query):
    response = client.post(f"/suggest-subgenres?{query}", content=wav(2.0), headers={"content-type": "audio/wav"})
    assert response.status_code == 422 and problem(response)["code"] in {"unknown_model", "invalid_parameter"}


@pytest.mark.parametrize("endpoint", ["/taggram", "/embed", "/suggest-subgenres"])
@pytest.mark.parametrize("hop", ["0.49", "30.01", "nan"])
def test_every_audio_endpoint_refuses_a_hop_outside_its_range(client, endpoint, hop):
    response = client.post(f"{endpoint}?hop={hop}", content=wav(2.0), headers={"content-type": "audio/wav"})
    assert response.status_code == 422 and problem(response)["code"] == "invalid_parameter"


def send_in_background(live, data: bytes) -> tuple[threading.Thread, list]:
    """POST /embed from another thread; the response lands in the returned list."""
    responses: list = []

    def post() -> None:
        with live.client() as http:
            responses.append(http.post("/embed", content=data, headers={"content-type": "audio/wav"}))

    thread = threading.Thread(target=post)
    thread.start()
    return thread, responses


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_503_with_retry_after_when_the_queue_is_full(models_dir):
    settings = server_settings(
        models_dir, max_queue_patches=8, max_batch_patches=1, max_batch_wait_ms=0, retry_after_seconds=7
    )
    with live_server(settings) as live, live.client() as http:
        batcher = live.state.batchers["msd-musicnn"]
        thread, first = send_in_background(live, wav(120.0, seed=100, sample_rate=16_000))
        wait_until(lambda: batcher.queued_patches >= 8)
        refused = http.post("/embed", content=wav(5.0, seed=101), headers={"content-type": "audio/wav"})
        thread.join()
    assert refused.status_code == 503 and refused.headers["retry-after"] == "7"
    assert problem(refused)["code"] == "overloaded"
    assert first[0].status_code == 200  # the admitted request is served in full


@pytest.mark.slow
def test_503_when_too_many_uploads_are_being_analysed(models_dir):
    settings = server_settings(models_dir, max_concurrent_analyses=1, max_batch_patches=1, max_batch_wait_ms=0)
    with live_server(settings) as live, live.client() as http:
        thread, first = send_in_background(live, wav(120.0, seed=102, sample_rate=16_000))
        wait_until(lambda: live.state.in_flight == 1)
        refused = http.post("/embed", content=wav(5.0, seed=103), headers={"content-type": "audio/wav"})
        thread.join()
        after = http.post("/embed", content=wav(5.0, seed=103), headers={"content-type": "audio/wav"})
    assert refused.status_code == 503 and problem(refused)["code"] == "overloaded"
    assert "retry-after" in refused.headers
    assert first[0].status_code == 200 and after.status_code == 200  # capacity comes back


def test_504_when_the_deadline_passes(models_dir):
    settings = server_settings(models_dir, request_timeout_seconds=0.3, max_batch_patches=1)
    with live_server(settings) as live, live.client() as http:
        response = http.post(
            "/embed", content=wav(120.0, seed=110, sample_rate=16_000), headers={"content-type": "audio/wav"}
        )
        assert response.status_code == 504 and problem(response)["code"] == "deadline_exceeded"
        # The abandoned work is dropped from the queue, and the server still serves.
        assert live.state.batchers["msd-musicnn"].queued_patches == 0
        assert http.get("/healthz").status_code == 200


def test_unknown_route_and_method_are_problem_json(client):
    assert problem(client.get("/nope"))["code"] == "not_found"
    assert problem(client.get("/taggram"))["code"] == "method_not_allowed"


# ---- auth and metrics -------------------------------------------------------------------------------------------


def test_api_key_protects_everything_but_health_and_metrics(models_dir):
    with live_server(server_settings(models_dir, api_key="s3cret-key")) as live, live.client() as http:
        data = wav(2.0, seed=120)
        assert (
            problem(http.post("/embed", content=data, headers={"content-type": "audio/wav"}))["code"] == "unauthorized"
        )
        wrong = http.post("/embed", content=data, headers={"content-type": "audio/wav", "authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert http.get("/models").status_code == 401
        ok = http.post(
            "/embed", content=data, headers={"content-type": "audio/wav", "authorization": "Bearer s3cret-key"}
        )
        assert ok.status_code == 200
        assert (
            http.get("/healthz").status_code
            == http.get("/readyz").status_code
            == http.get("/metrics").status_code
            == 200
        )


def test_metrics_expose_every_documented_series(client):
    client.post("/embed", content=wav(3.0, seed=130), headers={"content-type": "audio/wav"})
    text = client.get("/metrics").text
    for name in (
        "taggram_requests_total",
        "taggram_request_duration_seconds_bucket",
        "taggram_decode_duration_seconds_bucket",
        "taggram_queue_wait_seconds_bucket",
        "taggram_batch_size_patches_bucket",
        "taggram_inference_duration_seconds_bucket",
        "taggram_audio_processed_seconds_total",
        "taggram_cache_hits_total",
        "taggram_cache_misses_total",
        "taggram_rejections_total",
        "taggram_queue_depth_patches",
        "taggram_model_info",
        "taggram_model_runtime_info",
    ):
        assert name in text, name
    assert 'taggram_requests_total{endpoint="/embed",status="200"}' in text


@pytest.mark.slow
def test_decoding_overlaps_inference_but_stays_a_bounded_number_of_patches_ahead(models_dir):
    from service.engine.pipeline import PATCHES_AHEAD

    settings = server_settings(models_dir, max_batch_patches=1, max_batch_wait_ms=0)
    with live_server(settings) as live:
        batcher = live.state.batchers["msd-musicnn"]
        thread, response = send_in_background(live, wav(400.0, seed=140, sample_rate=16_000))  # 134 patches
        depths = []
        while thread.is_alive():
            depths.append(batcher.queued_patches)
            time.sleep(0.005)
        thread.join()
    assert response[0].status_code == 200 and response[0].json()["duration_seconds"] == pytest.approx(400.0)
    assert 0 < max(depths) <= PATCHES_AHEAD  # inference started before decoding ended; memory stays bounded
