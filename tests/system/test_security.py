"""Security properties, each checked against a real server:

* nothing the API takes is a path or a URL, and audio that names other files or URLs (HLS playlists, ffconcat
  scripts, SDP descriptions) is refused without anything being opened or fetched;
* the size limit cuts a slow chunked upload: 413 as soon as the limit is passed, the connection closed after a
  bounded lingering close, memory flat; any answer sent before the body was read (401, 413, 503) does the same;
* with an API key every route needs it except health, readiness, metrics and the API description (decision:
  /openapi.json and /docs stay public; they describe the API and hold nothing secret);
* a Redis URL with a password over TLS (`rediss://`) works end to end through the app;
* logs never contain the API key, the Redis password or any uploaded bytes.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.api.middleware.lingering_close import CloseUnreadBodyMiddleware
from service.engine.cache import SCHEMA_VERSION
from tests.support.audio_factory import chord, encode_audio, noise
from tests.support.live_server import live_server, server_settings
from tests.support.peak_rss import PeakRss
from tests.support.redis_support import private_redis_factory  # noqa: F401 (fixture)
from tests.support.serve_process import ServeProcess

API_KEY = "tg-key-7f3c9a1e5b2d4c6f8a0e"
# "/" is the exploration page: public like the API description, its own API calls need the key (test_page.py).
PUBLIC_PATHS = {
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/docs-assets/{name}",
}
# Public routes with a path parameter, asked for with a real value (service/api/docs.py serves listed files only).
PUBLIC_EXAMPLES = {"/docs-assets/{name}": "/docs-assets/swagger-ui.css"}
# /similar's track_id and artist_id are looked up in the loaded index's in-memory table, never opened or fetched;
# taxonomy and head name a loaded tag taxonomy or head (docs/heads.md), never a file.
ALLOWED_PARAMETERS = {
    "model",
    "hop",
    "k",
    "segments",
    "track_id",
    "artist_id",
    "exclude_artist",
    "taxonomy",
    "head",
    "complete",
}


def wav(seconds: float, seed: int = 0, sample_rate: int = 16_000) -> bytes:
    tone = chord((220.0, 277.2, 329.6), seconds, sample_rate)
    return encode_audio(tone + noise(seconds, sample_rate, seed=seed, amplitude=0.05), sample_rate, "wav")


@pytest.fixture(scope="module")
def server(models_dir):
    with live_server(server_settings(models_dir, max_upload_bytes=1_000_000, api_key=API_KEY)) as live:
        yield live


@pytest.fixture(scope="module")
def http(server):
    with server.client() as client:
        client.headers["authorization"] = f"Bearer {API_KEY}"
        yield client


# ---- no paths, no URLs ---------------------------------------------------------------------------------------------


def test_no_parameter_or_body_field_takes_a_path_or_a_url(http):
    schema = http.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            names = {p["name"] for p in operation.get("parameters", [])}
            assert names <= ALLOWED_PARAMETERS, (method, path, names)
            for content in operation.get("requestBody", {}).get("content", {}).values():
                body = content["schema"]
                fields = body.get("properties", {"": body})
                assert all(f.get("format") == "binary" for f in fields.values()), (path, content)
    # The one free-text parameter is looked up among loaded model names, never used as a path.
    for model in ("../models/msd-musicnn", "/etc/passwd", "file:///etc/passwd", "http://127.0.0.1/x.onnx"):
        response = http.post("/embed", params={"model": model}, content=wav(2.0), headers={"content-type": "audio/wav"})
        assert response.status_code == 422 and response.json()["code"] == "unknown_model"


class Listener:
    """A loopback TCP port that records whether anything connects to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()

    def accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def referencing_bodies(local_wav: Path, port: int) -> dict[str, bytes]:
    url = f"http://127.0.0.1:{port}/track.wav"
    return {
        "HLS playlist naming a local file": (
            f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:4.0,\nfile://{local_wav}\n#EXT-X-ENDLIST\n"
        ).encode(),
        "HLS playlist naming a loopback URL": (
            f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:4.0,\n{url}\n#EXT-X-ENDLIST\n"
        ).encode(),
        "ffconcat script naming a local file": f"ffconcat version 1.0\nfile '{local_wav}'\n".encode(),
        "ffconcat script naming a relative file": f"ffconcat version 1.0\nfile '{local_wav.name}'\n".encode(),
        "ffconcat script naming a loopback URL": f"ffconcat version 1.0\nfile '{url}'\n".encode(),
        "SDP description of an RTP stream to loopback": (
            f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio {port} RTP/AVP 0\n"
        ).encode(),
    }


def test_playlists_and_scripts_naming_other_files_or_urls_are_refused_and_nothing_is_opened(
    http, tmp_path, monkeypatch
):
    local_wav = tmp_path / "track.wav"
    local_wav.write_bytes(wav(4.0))  # a real, decodable file: had FFmpeg followed the reference, this would be 200
    monkeypatch.chdir(tmp_path)  # so that a relative reference would resolve to it
    listener = Listener()
    try:
        for name, body in referencing_bodies(local_wav, listener.port).items():
            for content_type in ("application/octet-stream", "audio/x-mpegurl"):
                response = http.post("/embed", content=body, headers={"content-type": content_type})
                assert response.status_code == 415, (name, response.text)
                assert response.json()["code"] == "undecodable_audio", name
        time.sleep(0.2)
    finally:
        listener.close()
    assert listener.connections == 0


# ---- size limit while streaming, and connections closed on early answers --------------------------------------------


@dataclass
class Cut:
    answer: bytes  # what the server sent back
    sent: int  # body bytes sent before the connection was closed
    answered_after: float | None  # seconds from the first body byte to the first answer byte
    cut_after: float | None  # seconds from the first body byte to the connection being closed by the server


def stream_until_cut(
    port: int,
    head: bytes,
    total_bytes: int,
    *,
    chunk: int = 64 * 1024,
    pause: float = 0.02,
    give_up_after: float = 30.0,
) -> Cut:
    """Send ``head`` then a chunked body slowly (64 KiB every 20 ms: ~3 MB/s) until the server closes the connection,
    ``total_bytes`` went, or ``give_up_after`` seconds passed."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(0.001)
    cut = Cut(b"", 0, None, None)
    started = time.monotonic()
    try:
        sock.sendall(head)
        while cut.sent < total_bytes and time.monotonic() - started < give_up_after:
            try:
                sock.sendall(b"%x\r\n" % chunk + bytes([0x5A]) * chunk + b"\r\n")
                cut.sent += chunk
                data = sock.recv(65536)
            except TimeoutError:
                data = None
            except (BrokenPipeError, ConnectionResetError):
                data = b""
            if data == b"":
                cut.cut_after = time.monotonic() - started
                break
            if data:
                cut.answered_after = cut.answered_after or time.monotonic() - started
                cut.answer += data
            time.sleep(pause)
    finally:
        sock.close()
    return cut


def chunked_head(path: str, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n"
        f"Transfer-Encoding: chunked\r\n{extra}\r\n"
    ).encode()


LINGER = CloseUnreadBodyMiddleware.LINGER_SECONDS


def test_a_slow_chunked_upload_is_answered_413_at_the_limit_then_cut_and_memory_stays_flat(server):
    port = int(server.url.rsplit(":", 1)[1])
    limit = server.state.settings.max_upload_bytes  # 1 MB here; the client would send 64 MB
    with PeakRss() as memory:
        cut = stream_until_cut(port, chunked_head("/embed", f"Authorization: Bearer {API_KEY}\r\n"), 64 * limit)
    growth_mb = memory.growth_mb
    assert cut.answer.startswith(b"HTTP/1.1 413 "), cut.answer[:200]
    assert b"connection: close" in cut.answer.lower()
    assert cut.cut_after is not None, f"never cut: {cut.sent} bytes sent"
    # Cut after the lingering close, not at the end of the 64 MB: bytes sent meanwhile were read and discarded.
    assert cut.cut_after - cut.answered_after < LINGER + 2.0, cut
    assert cut.sent < 32 * limit, cut.sent
    assert growth_mb < 20, growth_mb


def test_an_unauthenticated_upload_is_answered_401_then_cut(server):
    port = int(server.url.rsplit(":", 1)[1])
    cut = stream_until_cut(port, chunked_head("/embed"), 64 * 2**20)
    assert cut.answer.startswith(b"HTTP/1.1 401 "), cut.answer[:200]
    assert b"connection: close" in cut.answer.lower()
    assert cut.cut_after is not None and cut.cut_after - cut.answered_after < LINGER + 2.0, cut


def request_seconds(http, endpoint: str) -> tuple[float, float]:
    """(sum, count) of taggram_request_duration_seconds for ``endpoint``, from /metrics."""
    values = {}
    for line in http.get("/metrics").text.splitlines():
        for name in ("sum", "count"):
            if line.startswith(f'taggram_request_duration_seconds_{name}{{endpoint="{endpoint}"}}'):
                values[name] = float(line.rsplit(" ", 1)[1])
    return values.get("sum", 0.0), values.get("count", 0.0)


def test_a_refusals_latency_is_timed_to_its_answer_not_through_the_lingering_close(server, http):
    port = int(server.url.rsplit(":", 1)[1])
    before_sum, before_count = request_seconds(http, "/taggram")
    cut = stream_until_cut(port, chunked_head("/taggram", f"Authorization: Bearer {API_KEY}\r\n"), 64 * 2**20)
    after_sum, after_count = request_seconds(http, "/taggram")
    assert cut.answer.startswith(b"HTTP/1.1 413 ") and after_count == before_count + 1, cut.answer[:200]
    assert cut.cut_after - cut.answered_after > LINGER / 2, cut  # the drain did happen (the client kept sending)
    # The request is timed from its start to the answer: the reading up to the limit, without the drain after it.
    assert after_sum - before_sum < cut.answered_after + LINGER / 4, (after_sum - before_sum, cut)


# ---- API key ----------------------------------------------------------------------------------------------------


def test_every_route_but_health_readiness_metrics_and_the_api_description_needs_the_key(server):
    routes = {
        (route.path, method)
        for route in server.app.routes
        if hasattr(route, "methods")
        for method in route.methods
        if method != "HEAD"
    }
    assert {path for path, _ in routes} >= PUBLIC_PATHS - {"/docs/oauth2-redirect"}
    with server.client() as anonymous:
        for path, method in sorted(routes):
            response = anonymous.request(method, PUBLIC_EXAMPLES.get(path, path))
            if path in PUBLIC_PATHS:
                assert response.status_code == 200, (method, path, response.status_code)
            else:
                assert response.status_code == 401, (method, path, response.status_code)
                assert response.json()["code"] == "unauthorized"
                assert API_KEY not in response.text


# ---- Redis with a password over TLS, through the app -------------------------------------------------------------


def test_a_rediss_url_with_a_password_caches_through_the_app(models_dir, private_redis_factory):
    redis_server = private_redis_factory(password="p@ss:w/rd", tls=True)
    assert redis_server.url.startswith("rediss://:p%40ss%3Aw%2Frd@")
    settings = server_settings(models_dir, redis_url=redis_server.url, redis_timeout_seconds=2.0)
    data = wav(3.0, seed=5)
    with live_server(settings) as live, live.client() as client:
        first = client.post("/embed", content=data, headers={"content-type": "audio/wav"}).json()
        second = client.post("/embed", content=data, headers={"content-type": "audio/wav"}).json()
    assert (first["cached"], second["cached"]) == (False, True)
    keys = redis_server.client().keys(f"taggram:v{SCHEMA_VERSION}:msd-musicnn:*")
    assert len(keys) == 1


# ---- logs -------------------------------------------------------------------------------------------------------

MARKER = b"QJX-AUDIO-BYTES-7d1e"  # distinctive bytes planted in every upload
REDIS_PASSWORD = "redis-secret-93b1f0"


def marked_wav(seconds: float) -> bytes:
    """A valid WAV with the marker in a LIST chunk, where a tag reader or a debug dump would find it."""
    data = wav(seconds, seed=9)
    info = b"INFO" + b"ICMT" + len(MARKER).to_bytes(4, "little") + MARKER
    chunk = b"LIST" + len(info).to_bytes(4, "little") + info
    body = data[12:] + chunk
    return b"RIFF" + (len(body) + 4).to_bytes(4, "little") + b"WAVE" + body


@pytest.mark.slow
def test_logs_never_contain_the_api_key_the_redis_password_or_uploaded_bytes(
    models_dir, tmp_path, private_redis_factory
):
    redis_server = private_redis_factory(password="the-right-one")
    wrong_password_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_server.port}/0"  # every cache call fails, logged
    settings = {
        "TAGGRAM_API_KEY": API_KEY,
        "TAGGRAM_LOG_LEVEL": "debug",
        "TAGGRAM_REDIS_URL": wrong_password_url,
        "TAGGRAM_MAX_UPLOAD_BYTES": "200000",
    }
    authorised = {"authorization": f"Bearer {API_KEY}"}
    with ServeProcess(models_dir, tmp_path, **settings) as proc:
        proc.wait_ready()
        with httpx.Client(base_url=proc.url, timeout=60.0) as client:
            octet = {"content-type": "application/octet-stream"}
            statuses = [
                client.post("/embed", content=marked_wav(2.0), headers=octet).status_code,  # no key
                client.post(
                    "/embed", content=marked_wav(2.0), headers=octet | {"authorization": "Bearer " + API_KEY[::-1]}
                ).status_code,
                client.post("/embed", content=marked_wav(2.0), headers=octet | authorised).status_code,
                client.post("/embed", content=MARKER * 500, headers=octet | authorised).status_code,  # undecodable
                client.post(
                    "/embed", content=marked_wav(2.0)[:300], headers=octet | authorised
                ).status_code,  # a few samples left
                client.post("/embed", content=MARKER * 20_000, headers=octet | authorised).status_code,  # too large
                client.post(
                    "/embed",
                    files={"file": (MARKER.decode(), MARKER * 100, "audio/wav")},
                    data={"note": MARKER.decode()},
                    headers=authorised,
                ).status_code,
                client.post(
                    "/embed", params={"model": MARKER.decode()}, content=marked_wav(2.0), headers=octet | authorised
                ).status_code,
                client.get("/models", headers={"authorization": API_KEY}).status_code,  # key without the scheme
            ]
        proc.process.send_signal(signal.SIGTERM)
        assert proc.wait() == 0
        output = proc.output()

    assert statuses == [401, 401, 200, 415, 422, 413, 415, 422, 401], statuses
    assert "cache get failed" in output  # the failing Redis was logged, so the password check below means something
    for secret in (API_KEY, API_KEY[::-1], REDIS_PASSWORD, MARKER.decode(), MARKER.hex(), "QJX-AUDIO"):
        assert secret not in output, secret
