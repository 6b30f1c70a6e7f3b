"""Test helper: a real container engine, the project's images and containers run the way docker-compose.yml runs them.

    require_engine()                       # an engine answers, or is installed and started (deploy/container-engine.sh)
    build_image("cpu", IMAGE)              # deploy/build-image.sh: the public base, or Debian's stand-in offline
    with running(IMAGE, "taggram-test") as box:   # compose's hardening + a memory limit, published on 127.0.0.1
        box.wait_ready()
        httpx.get(box.url + "/readyz")

No engine and no way to start one: the tests skip locally and FAIL under ``CI=true`` (tests/system/test_image.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINE_SCRIPT = REPO_ROOT / "deploy" / "container-engine.sh"
BUILD_SCRIPT = REPO_ROOT / "deploy" / "build-image.sh"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
BUILD_LOG = REPO_ROOT / ".cache" / "image-build.log"
CPU_IMAGE = os.environ.get("IMAGE_TEST_TAG", "taggram:image-test")
# The documented peak of the CPU image under 16 concurrent long uploads on four models is 771 MiB (docs/operations.md,
# "Memory"): 1 GiB leaves room without hiding a leak.
MEMORY_LIMIT = "1g"
CONTAINER_PORT = 8000
ENGINE_TIMEOUT_SECONDS = 600  # a bare machine: apt, dockerd, debootstrap (about 70 s measured, slower when shared)
BUILD_TIMEOUT_SECONDS = 1800  # a cold build on 2 shared CPUs; a warm BuildKit cache makes it seconds
READY_TIMEOUT_SECONDS = 180.0
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")  # Debian's folder for locally added CA certificates
CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory/docker")  # dockerd's cgroupfs driver on cgroup v1
CGROUP_V1_CPUACCT = Path("/sys/fs/cgroup/cpuacct/docker")


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {shlex.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def engine_answers() -> bool:
    try:
        return docker("info", "--format", "{{.ServerVersion}}", timeout=30, check=False).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


def missing(reason: str) -> None:
    """Skip locally; fail under CI=true, where a container test must never be skipped."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the container tests must run)")
    pytest.skip(reason)


def require_engine() -> None:
    """An engine that answers: the one running, or one installed and started by deploy/container-engine.sh (root)."""
    if engine_answers():
        return
    if os.geteuid() != 0:
        missing("no container engine answers and starting one needs root (deploy/container-engine.sh ready)")
    result = subprocess.run(
        ["bash", str(ENGINE_SCRIPT), "ready"], capture_output=True, text=True, timeout=ENGINE_TIMEOUT_SECONDS
    )
    if result.returncode != 0 or not engine_answers():
        missing(f"deploy/container-engine.sh ready failed: {result.stderr[-2000:]}")


def build_image(target: str, tag: str) -> None:
    """Build ``target`` with deploy/build-image.sh (BuildKit cache: a rebuild of unchanged sources takes seconds)."""
    BUILD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with BUILD_LOG.open("w") as log:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT), target, tag, "--progress=plain"],
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT_SECONDS,
            cwd=REPO_ROOT,
        )
    if result.returncode != 0:
        pytest.fail(f"building {target} failed; the end of {BUILD_LOG}:\n{BUILD_LOG.read_text()[-4000:]}")


def compose_service(name: str = "taggram") -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"][name]


def compose_healthcheck_command(service: dict) -> str:
    """The compose healthcheck's command as the shell string ``docker run --health-cmd`` takes."""
    test = service["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL"), test
    return test[1] if test[0] == "CMD-SHELL" else shlex.join(test[1:])


def hardening_flags(service: dict) -> list[str]:
    """docker run flags for what compose's ``taggram`` service sets: user, read-only root, tmpfs, capabilities,
    security options, stop grace. Read from docker-compose.yml, so the test runs what operators run."""
    flags = ["--user", service["user"]]
    if service.get("read_only"):
        flags.append("--read-only")
    for mount in service.get("tmpfs", []):
        flags += ["--tmpfs", mount]
    for capability in service.get("cap_drop", []):
        flags += ["--cap-drop", capability]
    for option in service.get("security_opt", []):
        flags += ["--security-opt", option]
    return flags


def grace_seconds(service: dict) -> float:
    """compose's stop_grace_period ("45s") in seconds."""
    text = str(service["stop_grace_period"])
    assert text.endswith("s") and text[:-1].isdigit(), f"stop_grace_period as whole seconds, got {text}"
    return float(text[:-1])


@dataclass
class Container:
    name: str
    url: str = ""

    def inspect(self) -> dict:
        return json.loads(docker("inspect", self.name).stdout)[0]

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def diff(self) -> list[str]:
        return [line for line in docker("diff", self.name).stdout.splitlines() if line.strip()]

    def peak_memory_bytes(self) -> int | None:
        """The container's peak memory (cgroup v1 with the cgroupfs driver, as here); None where it cannot be read."""
        path = CGROUP_V1_MEMORY / self.inspect()["Id"] / "memory.max_usage_in_bytes"
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            return None

    def cpu_seconds(self) -> float:
        """CPU time the container's processes used so far (cgroup v1 cpuacct, as here)."""
        return int((CGROUP_V1_CPUACCT / self.inspect()["Id"] / "cpuacct.usage").read_text()) / 1e9

    def running(self) -> bool:
        return self.inspect()["State"]["Running"]

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> float:
        """Seconds until /readyz answers 200 (from this call); the container's log on failure."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if not self.running():
                pytest.fail(f"{self.name} exited before ready:\n{self.logs()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return time.perf_counter() - started
            time.sleep(0.1)
        pytest.fail(f"{self.name} not ready after {timeout} s:\n{self.logs()[-4000:]}")

    def wait_healthy(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.inspect()["State"].get("Health", {}).get("Status")
            if health == "healthy":
                return
            time.sleep(0.5)
        pytest.fail(f"{self.name} not healthy after {timeout} s: {self.inspect()['State']}")


def start(
    image: str,
    name: str,
    env: dict[str, str] | None = None,
    memory: str = MEMORY_LIMIT,
    command: list[str] | None = None,
) -> Container:
    """``docker run -d`` with compose's hardening, a memory limit and compose's healthcheck (probed every second, so
    healthy comes as soon as ready), published on a free loopback port."""
    service = compose_service()
    docker("rm", "-f", name, check=False)
    flags = [
        "--name",
        name,
        "--detach",
        "--publish",
        f"127.0.0.1::{CONTAINER_PORT}",
        "--memory",
        memory,
        "--memory-swap",
        memory,
        *hardening_flags(service),
        "--health-cmd",
        compose_healthcheck_command(service),
        "--health-interval",
        "1s",
        "--health-timeout",
        "5s",
        "--health-retries",
        "3",
    ]
    for key, value in (env or {}).items():
        flags += ["--env", f"{key}={value}"]
    docker("run", *flags, image, *(command or []))
    container = Container(name)
    port = docker("port", name, f"{CONTAINER_PORT}/tcp").stdout.splitlines()[0].rsplit(":", 1)[1]
    container.url = f"http://127.0.0.1:{port}"
    return container


@contextlib.contextmanager
def running(image: str, name: str, **options) -> Iterator[Container]:
    container = start(image, name, **options)
    try:
        yield container
    finally:
        docker("rm", "-f", name, check=False)


def extra_ca_markers(folder: Path = EXTRA_CA_DIR) -> list[bytes]:
    """One base64 line from the middle of each extra CA certificate this host trusts (Debian's local CA folder):
    found in a file, it means the certificate was copied there."""
    markers = []
    for path in sorted(folder.glob("*.crt")):
        lines = [line for line in path.read_bytes().splitlines() if line and not line.startswith(b"-----")]
        if lines:
            markers.append(lines[len(lines) // 2])
    return markers


def files_matching(image: str, markers: list[bytes], names: re.Pattern) -> list[str]:
    """Files of ``image`` (its exported filesystem) holding any of ``markers`` or named like ``names``."""
    created = docker("create", image).stdout.strip()
    found = []
    try:
        with (
            subprocess.Popen(["docker", "export", created], stdout=subprocess.PIPE) as export,
            tarfile.open(fileobj=export.stdout, mode="r|") as tar,
        ):
            for member in tar:
                if names.search(Path(member.name).name):
                    found.append(member.name)
                if member.isfile() and markers:
                    data = tar.extractfile(member).read()
                    found += [member.name for marker in markers if marker in data]
    finally:
        docker("rm", created, check=False)
    return found


def image_size_bytes(image: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
