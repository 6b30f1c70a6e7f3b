"""Test helper: the real CLI, ``taggram serve``, as a child process on a free loopback port.

Unlike ``live_server`` (the app in a thread of the test process), this is exactly what an operator or an
orchestrator runs: its own process, signals, exit code and stderr.

    with ServeProcess(models_dir, TAGGRAM_API_KEY="k") as proc:
        proc.wait_ready()
        httpx.get(proc.url + "/readyz")
        proc.process.send_signal(signal.SIGTERM)
        assert proc.wait() == 0
        proc.stderr()
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.redis_support import free_port

TAGGRAM = Path(sys.executable).with_name("taggram")  # the console script `pip install -e .` puts next to python
READY_TIMEOUT_SECONDS = 90.0  # loading + warming one model takes ~2 s; the machine may be busy


def taggram_executable() -> Path:
    if not TAGGRAM.is_file():
        pytest.fail(f"{TAGGRAM} is missing: install the project into the venv (`pip install -e .`, as `make` does)")
    return TAGGRAM


# The suite's expected numbers are fp32's; under the default (auto) a bf16-capable CPU could pick bf16 by a measured
# speed near the threshold. tests/integration/test_precision.py and tests/system/test_startup.py set it themselves.
TEST_PRECISION = {"TAGGRAM_PRECISION": "fp32"}


def clean_env(**taggram_settings: str) -> dict[str, str]:
    """The current environment without any TAGGRAM_* variable, plus fp32 (TEST_PRECISION) and the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGRAM_")}
    return env | TEST_PRECISION | {k: str(v) for k, v in taggram_settings.items()}


class ServeProcess:
    """``taggram serve`` with the given TAGGRAM_* settings; stderr goes to a file (never a pipe that can fill)."""

    def __init__(self, models_dir: Path, log_dir: Path, **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        defaults = {
            "TAGGRAM_MODELS_DIR": str(models_dir),
            "TAGGRAM_MODELS": "msd-musicnn",
            "TAGGRAM_HOST": "127.0.0.1",
            "TAGGRAM_PORT": str(self.port),
            "TAGGRAM_LOG_LEVEL": "info",
        }
        self.env = clean_env(**(defaults | settings))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = log_dir / f"taggram-{self.port}.stderr"
        self.stdout_path = log_dir / f"taggram-{self.port}.stdout"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ServeProcess:
        with self.stderr_path.open("wb") as err, self.stdout_path.open("wb") as out:
            self.process = subprocess.Popen(
                [str(taggram_executable()), "serve"], env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    pytest.fail(f"taggram serve exited with {self.process.returncode}:\n{self.stderr()}")
                try:
                    if http.get("/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        pytest.fail(f"taggram serve was not ready within {timeout} s:\n{self.stderr()}")

    def wait(self, timeout: float = 90.0) -> int:
        return self.process.wait(timeout=timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        """stdout and stderr: everything the process wrote."""
        return self.stdout_path.read_text(errors="replace") + self.stderr()
