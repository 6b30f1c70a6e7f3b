"""The runtime set alone installs, imports and starts: ``pip install .`` (no extras) into a fresh venv, then what the
image runs. The fast, static half of this check is tests/unit/test_runtime_dependencies.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_PARTS = (
    "pyproject.toml",
    "README.md",
    "service",
    "model_export",
    "head_training",
)  # what `pip install .` reads


@pytest.mark.slow
@pytest.mark.slow
def test_the_runtime_set_alone_installs_imports_and_starts(tmp_path, models_dir):
    """``pip install .`` (no extras) into a fresh venv, then what the image runs: serve to ready and the offline
    commands' help."""
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ and *.egg-info behind
    source.mkdir()
    for part in PACKAGE_PARTS:
        copy = shutil.copytree if (REPO_ROOT / part).is_dir() else shutil.copy2
        copy(
            REPO_ROOT / part,
            source / part,
            **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}),
        )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(REPO_ROOT / "constraints.txt"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    taggram = venv / "bin" / "taggram"
    for command in (["backfill", "--help"], ["index", "build", "--help"], ["check-catalog", "--help"]):
        done = subprocess.run([str(taggram), *command], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, f"taggram {' '.join(command)}: {done.stderr}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("TAGGRAM_")}
    port = free_port()
    env.update(TAGGRAM_MODELS_DIR=str(models_dir), TAGGRAM_MODELS="msd-musicnn", TAGGRAM_PORT=str(port))
    server = subprocess.Popen(
        [str(taggram), "serve"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert wait_ready(f"http://127.0.0.1:{port}/readyz", server, READY_TIMEOUT_SECONDS), "never ready"
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output


READY_TIMEOUT_SECONDS = 120.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(url: str, server: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False
