"""The CPU image, built and run by a real engine the way docker-compose.yml runs it: the container contract.

`make image-test` runs this file (and `make test` / CI run it with everything else; under CI=true a missing engine
fails). The engine is started when none answers (deploy/container-engine.sh), the `cpu` target is built with
deploy/build-image.sh (the public base, or Debian's stand-in where Docker Hub cannot be reached), and one container
runs with compose's hardening (uid 10001, read-only root, tmpfs /tmp, every capability dropped,
no-new-privileges) under a 1 GiB memory limit. Figures (sizes, start time, speed against bare): docs/operations.md.
"""

from __future__ import annotations

import asyncio
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from corpus.music import cut_clip, duration_seconds, music_files
from tests.support import containers
from tests.support.audio_factory import write_audio
from tests.support.live_server import live_server, server_settings
from tests.support.readme import check_try_it_outputs, run_try_it

pytestmark = pytest.mark.slow

NAME = "taggram-image-test"
MODELS = ("msd-musicnn", "mtt-musicnn", "msd-vgg", "mtt-vgg")
TAG_TOLERANCE = 1e-5
BURST_UPLOADS = 16  # the burst: 16 concurrent long uploads over the four models
BURST_CLIP_SECONDS = 90.0
LONG_UPLOAD_SECONDS = 600.0  # > 8 MiB as 16-bit WAV: the upload spills to TMPDIR (the tmpfs)
LONG_UPLOAD_RATE = 16_000
# What a write outside /tmp looks like in the log; the last is ONNX Runtime's telemetry without ORT_DISABLE_TELEMETRY.
READ_ONLY_COMPLAINTS = re.compile(r"read-only file system|permission denied|failed to persist", re.I)


@pytest.fixture(scope="module")
def image() -> str:
    containers.require_engine()
    containers.build_image("cpu", containers.CPU_IMAGE)
    print(f"\n[image-test] {containers.CPU_IMAGE}: {containers.image_size_bytes(containers.CPU_IMAGE) / 1e6:.0f} MB")
    return containers.CPU_IMAGE


@pytest.fixture(scope="module")
def box(image):
    with containers.running(image, NAME) as container:
        seconds = container.wait_ready()
        print(f"\n[image-test] docker run -> /readyz 200: {seconds:.1f} s")
        container.wait_healthy()
        yield container


@pytest.fixture(scope="module")
def tracks() -> list[Path]:
    return music_files(("ogg",))


def post(url: str, endpoint: str, data: bytes, timeout: float = 300, **params) -> httpx.Response:
    return httpx.post(
        url + endpoint,
        params=params,
        content=data,
        timeout=timeout,
        headers={"content-type": "application/octet-stream"},
    )


class Assets(HTMLParser):
    """Every script src and stylesheet/icon href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.urls.append(values["src"])
        if tag == "link" and values.get("href"):
            self.urls.append(values["href"])


def page_assets(html: str) -> list[str]:
    """The URLs a page loads (``data:`` URLs load nothing)."""
    parser = Assets()
    parser.feed(html)
    return [url for url in parser.urls if not url.startswith("data:")]


# ---- how it was built ----------------------------------------------------------------------------------------------


def test_the_build_secrets_and_wheelhouse_are_nowhere_in_the_image(image):
    """The CA bundle and index URL were BuildKit secrets, deploy/wheels/ a bind mount: not in a layer, not in the
    history. The host's extra CA certificates (the ones this machine's proxy needs) are searched for in every file."""
    history = containers.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert not re.search(r"secret|PIP_INDEX_URL|PIP_CERT|wheels|build-env", history), history
    markers = containers.extra_ca_markers()
    host_bundle = Path("/etc/ssl/certs/ca-certificates.crt")  # what the build got as the secret: the markers are in it
    assert not host_bundle.exists() or all(marker in host_bundle.read_bytes() for marker in markers)
    found = containers.files_matching(image, markers, names=re.compile(r"^build-env$|^pip-index-url$"))
    assert found == [], found


# ---- how it runs -------------------------------------------------------------------------------------------------


def test_it_runs_hardened_as_compose_runs_it(box):
    config, host = box.inspect()["Config"], box.inspect()["HostConfig"]
    assert config["User"] == "10001:10001" and host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges:true" in host["SecurityOpt"]
    assert "/tmp" in host["Tmpfs"] and host["Memory"] == 1024**3
    assert containers.docker("exec", NAME, "id", "-u").stdout.strip() == "10001"


def test_the_readme_examples_work_against_the_container(box, tmp_path):
    check_try_it_outputs(run_try_it(box.url, tmp_path))


def test_real_tracks_get_the_same_tags_as_from_the_bare_service(box, tracks, models_dir):
    with live_server(server_settings(models_dir)) as bare:
        for track in tracks:
            data = track.read_bytes()
            ours, theirs = (post(url, "/taggram", data).json() for url in (box.url, bare.url))
            assert ours["labels"] == theirs["labels"] and len(ours["segments"]) == len(theirs["segments"])
            np.testing.assert_allclose(
                [s["scores"] for s in ours["segments"]],
                [s["scores"] for s in theirs["segments"]],
                atol=TAG_TOLERANCE,
                rtol=0,
            )


def test_the_page_and_the_api_docs_load_with_every_asset_from_the_container(box):
    for page in ("/", "/docs", "/redoc"):
        response = httpx.get(box.url + page)
        assert response.status_code == 200 and "default-src 'none'" in response.headers["content-security-policy"]
        assets = page_assets(response.text)
        assert assets and all(url.startswith("/") for url in assets), f"{page} loads only from this origin: {assets}"
        for url in assets:
            assert httpx.get(box.url + url).status_code == 200, url
    assert httpx.get(box.url + "/openapi.json").json()["info"]["title"] == "taggram"


def test_metrics_scrape(box):
    text = httpx.get(box.url + "/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    requests = families["taggram_requests"].samples
    assert any(s.labels["endpoint"] == "/taggram" and s.labels["status"] == "200" and s.value >= 1 for s in requests)
    assert {s.labels["model"] for s in families["taggram_model_info"].samples} == set(MODELS)


def test_a_long_upload_spills_to_tmp_and_nothing_is_written_elsewhere(box, tmp_path):
    path = tmp_path / "long.wav"
    samples = np.tile(np.sin(np.linspace(0, 2000 * np.pi, LONG_UPLOAD_RATE)), int(LONG_UPLOAD_SECONDS))[None, :]
    data = write_audio(path, (0.3 * samples).astype(np.float32), LONG_UPLOAD_RATE, "wav")
    assert len(data) > 8 * 2**20
    assert post(box.url, "/embed", data).status_code == 200
    assert box.diff() == []
    assert not READ_ONLY_COMPLAINTS.findall(box.logs()), box.logs()[-3000:]


def test_a_burst_of_long_uploads_under_the_memory_limit_is_answered_or_shed_never_oom_killed(box, tracks):
    def clip(i: int) -> bytes:  # a distinct window of a real track for each upload
        track = tracks[i % len(tracks)]
        seconds = min(BURST_CLIP_SECONDS, duration_seconds(track) - i - 1)
        return cut_clip(track, offset_seconds=float(i), seconds=seconds)

    clips = [(MODELS[i % len(MODELS)], clip(i)) for i in range(BURST_UPLOADS)]
    assert len({data for _, data in clips}) == BURST_UPLOADS  # distinct bytes: the cache answers none of them

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=box.url, timeout=600) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/taggram",
                        params={"model": model},
                        content=data,
                        headers={"content-type": "application/octet-stream"},
                    )
                    for model, data in clips
                )
            )
        return [r.status_code for r in responses]

    statuses = asyncio.run(burst())
    state = box.inspect()["State"]
    assert state["OOMKilled"] is False and state["Running"] is True, state
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    peak = box.peak_memory_bytes()
    print(
        f"\n[image-test] burst of {BURST_UPLOADS}: {statuses.count(200)} answered, {statuses.count(503)} shed (503); "
        f"container peak memory {peak / 2**20 if peak else float('nan'):.0f} MiB of {containers.MEMORY_LIMIT}"
    )


def test_docker_stop_answers_the_upload_in_flight_and_exits_0_within_its_grace(box, tracks, tmp_path):
    """Last: it stops the module's container."""
    grace = containers.grace_seconds(containers.compose_service())
    data = cut_clip(tracks[0], 0.0, duration_seconds(tracks[0]) - 1)

    async def upload_then_stop() -> tuple[httpx.Response, float]:
        async with httpx.AsyncClient(base_url=box.url, timeout=120) as client:
            request = asyncio.create_task(
                client.post(
                    "/taggram",
                    params={"model": "msd-vgg"},
                    content=data,
                    headers={"content-type": "application/octet-stream"},
                )
            )
            while True:  # the upload is in flight when the gauge counts it besides this scrape
                text = (await client.get("/metrics")).text
                if float(re.search(r"^taggram_requests_in_flight (\S+)$", text, re.M).group(1)) >= 2:
                    break
                await asyncio.sleep(0.05)
            started = time.perf_counter()
            stopping = asyncio.create_task(
                asyncio.to_thread(containers.docker, "stop", "--time", str(int(grace)), NAME, timeout=grace + 30)
            )
            response = await request
            await stopping
            return response, time.perf_counter() - started

    response, stop_seconds = asyncio.run(upload_then_stop())
    assert response.status_code == 200 and response.json()["segments"]
    state = box.inspect()["State"]
    assert state["ExitCode"] == 0 and state["OOMKilled"] is False and stop_seconds < grace, (state, stop_seconds)
    print(
        f"\n[image-test] docker stop with an upload in flight: answered 200, exit 0 after {stop_seconds:.1f} s "
        f"(grace {grace:.0f} s)"
    )
