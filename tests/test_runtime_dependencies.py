"""The runtime dependency set is complete: every third-party module that ``service/`` imports is installed by
``pip install taggram`` without extras.

Before this test, ``soundfile`` was imported by the second decoder but listed by no runtime dependency: every venv the
tests ran in had it only through librosa (an export/test extra), and the image crashed at import. The fast check below
reads ``pyproject.toml`` and the installed distributions' metadata; the slow one installs the runtime set alone into
a fresh venv and starts what the image runs.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICE = REPO_ROOT / "service"


def imported_top_level_modules(package: Path) -> set[str]:
    """Top-level names of every absolute import in the package (relative imports stay inside it)."""
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"service", "__future__"}


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def distribution_closure(requirements: list[Requirement]) -> set[str]:
    """Normalised names of the distributions these requirements install (installed metadata, no extras)."""
    seen: set[str] = set()
    pending = [(req, frozenset(req.extras)) for req in requirements]
    while pending:
        req, extras = pending.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = metadata.distribution(req.name).metadata["Name"].lower().replace("_", "-")
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for text in metadata.requires(req.name) or []:
            child = Requirement(text)
            if child.marker is not None and not any(child.marker.evaluate({"extra": e}) for e in (*extras, "")):
                continue
            pending.append((child, frozenset(child.extras)))
    return {key.split("[")[0] for key in seen}


def test_every_module_the_service_imports_comes_with_the_runtime_dependencies():
    provided_by = metadata.packages_distributions()
    installed = distribution_closure(runtime_requirements())
    missing = {
        module: provided_by.get(module, ["(not installed)"])
        for module in sorted(imported_top_level_modules(SERVICE))
        if not {d.lower().replace("_", "-") for d in provided_by.get(module, [])} & installed
    }
    assert not missing, f"service/ imports modules no runtime dependency installs: {missing}"


@pytest.mark.slow
def test_the_runtime_set_alone_installs_imports_and_starts(tmp_path, models_dir):
    """``pip install .`` (no extras) into a fresh venv, then what the image runs: serve to ready and the offline
    commands' help."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", str(REPO_ROOT / "constraints.txt"), str(REPO_ROOT)],
        capture_output=True, text=True, timeout=900,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    taggram = venv / "bin" / "taggram"
    for command in (["backfill", "--help"], ["index", "build", "--help"], ["check-catalog", "--help"]):
        done = subprocess.run([str(taggram), *command], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, f"taggram {' '.join(command)}: {done.stderr}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("TAGGRAM_")}
    port = free_port()
    env.update(TAGGRAM_MODELS_DIR=str(models_dir), TAGGRAM_MODELS="msd-musicnn", TAGGRAM_PORT=str(port))
    server = subprocess.Popen([str(taggram), "serve"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
