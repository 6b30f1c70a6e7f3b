"""The compose stack up: taggram + Redis + Prometheus, built offline (docker-compose.offline.yml) where Docker Hub
cannot be reached, brought up by a real engine with `docker compose`, and checked as an operator would.

Prometheus scrapes taggram and has loaded every alert rule; every dashboard query returns a series once traffic
has flowed (a computed answer, a hit, a refusal, a decode warning, a Redis outage; save the panels whose feature
this stack does not configure, named below); taggram's answers live in Redis:
a restart of the taggram container and `docker compose down` + `up` keep them, with the TTL the settings promise.
Grafana's image cannot be had here (not packaged in Debian): the offline override leaves it out (docs/operations.md).
"""

from __future__ import annotations

import json
import math
import re
import struct
import subprocess
import time
import wave
from pathlib import Path

import httpx
import pytest
import yaml

from service.config import Settings
from tests.support import containers

pytestmark = pytest.mark.slow

PROJECT = "taggram-compose-test"
COMPOSE_FILES = (containers.REPO_ROOT / "docker-compose.yml", containers.REPO_ROOT / "docker-compose.offline.yml")
RULES = containers.REPO_ROOT / "deploy" / "alerts" / "taggram.rules.yml"
DASHBOARD = containers.REPO_ROOT / "deploy" / "grafana" / "dashboards" / "taggram.json"
# Published on free loopback ports instead of 8000/9090: the test must not collide with a `make run` on this host.
PORTS_OVERRIDE = """services:
  taggram:
    ports: !override ["127.0.0.1::8000"]
  prometheus:
    ports: !override ["127.0.0.1::9090"]
"""
SCRAPE_WAIT_SECONDS = 120.0  # prometheus.yml scrapes every 15 s; rate() needs two samples in its window
RATE_WINDOW = "1m"  # what Grafana's $__rate_interval stands for here (>= 4 scrape intervals)
# Dashboard panels for features this stack does not configure: a similar-tracks index (TAGGRAM_INDEX_DIR) and
# classification heads (TAGGRAM_HEADS_DIR) are unset in docker-compose.yml, and nothing outside can make the
# service answer 5xx. Their metrics are checked by the integration tests that load an index and heads.
UNCONFIGURED = re.compile(r"taggram_index_|taggram_heads_loaded|status=~\"5\.\.\"")


def tone(path: Path, freq_hz: float, seconds: float = 10.0, rate: int = 22050) -> bytes:
    """A plain WAV tone: distinct frequencies give distinct bytes, so distinct cache keys."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(rate)
        out.writeframes(
            b"".join(
                struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq_hz * i / rate)))
                for i in range(int(seconds * rate))
            )
        )
    return path.read_bytes()


class Stack:
    def __init__(self, override: Path) -> None:
        self.files = [*COMPOSE_FILES, override]

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        command = ["docker", "compose", "-p", PROJECT]
        for path in self.files:
            command += ["-f", str(path)]
        result = subprocess.run(
            [*command, *args], capture_output=True, text=True, timeout=timeout, cwd=containers.REPO_ROOT
        )
        assert result.returncode == 0, f"docker compose {' '.join(args)}: {result.stderr[-3000:]}"
        return result

    def url(self, service: str, port: int) -> str:
        return "http://" + self.compose("port", service, str(port)).stdout.strip()

    def up(self) -> None:
        self.compose("up", "--detach", "--wait", "--wait-timeout", "300", timeout=400)
        self.taggram, self.prometheus = self.url("taggram", 8000), self.url("prometheus", 9090)

    def query(self, expression: str) -> list:
        answer = httpx.get(self.prometheus + "/api/v1/query", params={"query": expression}, timeout=30).json()
        assert answer["status"] == "success", (expression, answer)
        return answer["data"]["result"]

    def redis(self, *args: str) -> str:
        return self.compose("exec", "-T", "redis", "redis-cli", *args).stdout.strip()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    containers.require_engine()
    subprocess.run(
        ["bash", str(containers.ENGINE_SCRIPT), "standins"],
        check=True,
        capture_output=True,
        timeout=containers.ENGINE_TIMEOUT_SECONDS,
    )
    override = tmp_path_factory.mktemp("compose") / "ports.yml"
    override.write_text(PORTS_OVERRIDE)
    stack = Stack(override)
    stack.compose("down", "--volumes", timeout=120)
    # deploy/build-image.sh first (the image test's build), then compose's own build of every service, which
    # reuses its cache.
    containers.build_image("cpu", containers.compose_service()["image"])
    stack.compose("build", timeout=containers.BUILD_TIMEOUT_SECONDS)
    stack.up()
    try:
        yield stack
    finally:
        stack.compose("down", "--volumes", timeout=120)


def post_tone(stack: Stack, data: bytes) -> dict:
    response = httpx.post(stack.taggram + "/taggram", content=data, headers={"content-type": "audio/wav"}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_stack_runs_without_grafana_whose_image_cannot_be_had_here(stack):
    running = set(stack.compose("ps", "--services", "--status", "running").stdout.split())
    assert running == {"taggram", "redis", "prometheus"}


def test_prometheus_scrapes_taggram(stack):
    deadline = time.monotonic() + SCRAPE_WAIT_SECONDS
    while time.monotonic() < deadline:
        targets = httpx.get(stack.prometheus + "/api/v1/targets").json()["data"]["activeTargets"]
        if any(t["labels"]["job"] == "taggram" and t["health"] == "up" for t in targets):
            return
        time.sleep(2)
    pytest.fail(f"taggram target not up: {json.dumps(targets)[:2000]}")


def test_prometheus_loaded_every_alert_rule(stack):
    expected = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    groups = httpx.get(stack.prometheus + "/api/v1/rules").json()["data"]["groups"]
    assert {rule["name"] for group in groups for rule in group["rules"] if rule["type"] == "alerting"} == expected


def test_every_dashboard_query_returns_a_series_once_traffic_flowed(stack, tmp_path):
    post_tone(stack, tone(tmp_path / "a.wav", 330.0))
    post_tone(stack, tone(tmp_path / "a.wav", 330.0))  # a cache hit
    refused = httpx.post(
        stack.taggram + "/taggram", content=b"not audio at all" * 64, headers={"content-type": "audio/wav"}, timeout=60
    )
    assert refused.status_code == 415  # a rejection, by code
    halved = tone(tmp_path / "d.wav", 660.0)
    warnings = post_tone(stack, halved[: len(halved) // 2])["warnings"]
    assert [w["code"] for w in warnings] == ["audio_truncated"]  # a decode warning, by code
    stack.compose("stop", "redis", timeout=120)  # a Redis outage: answered anyway, the cache error counted
    assert post_tone(stack, tone(tmp_path / "e.wav", 770.0))["cached"] is False
    stack.up()
    expressions = [
        target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel.get("targets", [])
    ]
    checked = [e.replace("$__rate_interval", RATE_WINDOW) for e in expressions if not UNCONFIGURED.search(e)]
    assert len(checked) >= len(expressions) - 6  # the exclusions stay few
    deadline = time.monotonic() + SCRAPE_WAIT_SECONDS
    while True:
        empty = [e for e in checked if not stack.query(e)]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert empty == [], empty
    for expression in expressions:  # the rest evaluate, even if empty here
        stack.query(expression.replace("$__rate_interval", RATE_WINDOW))


def test_a_cached_answer_survives_a_restart_of_the_taggram_container(stack, tmp_path):
    data = tone(tmp_path / "b.wav", 440.0)
    assert post_tone(stack, data)["cached"] is False
    stack.compose("restart", "taggram", timeout=120)
    stack.up()  # waits for healthy (ready) again
    assert post_tone(stack, data)["cached"] is True


def test_compose_down_and_up_lose_nothing_but_what_the_cache_ttl_promises(stack, tmp_path):
    data = tone(tmp_path / "c.wav", 550.0)
    assert post_tone(stack, data)["cached"] is False
    keys = stack.redis("--scan", "--pattern", "taggram:*").split()
    ttl_setting = Settings.model_fields["cache_ttl_seconds"].default
    assert keys and all(0 < int(stack.redis("TTL", key)) <= ttl_setting for key in keys)
    stack.compose("down", timeout=120)  # volumes kept, as an operator's `docker compose down`
    stack.up()
    assert post_tone(stack, data)["cached"] is True
    assert set(stack.redis("--scan", "--pattern", "taggram:*").split()) == set(keys)
