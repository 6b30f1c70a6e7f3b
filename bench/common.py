"""Shared pieces of the benchmarks: machine description, the service as a subprocess, /metrics, the report file.

Every benchmark prints one Markdown section and (unless ``--no-write``) puts it into ``docs/benchmarks.md``
between ``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->``, replacing the previous run's section.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from service.config import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
REPORT = REPO_ROOT / "docs" / "benchmarks.md"
MODELS_DIR = REPO_ROOT / "models"
DEFAULT_MODEL = "msd-musicnn"
READY_TIMEOUT_SECONDS = 180.0
STOP_TIMEOUT_SECONDS = 30.0
PACKAGES = ("onnxruntime", "numpy", "av", "soxr", "librosa", "fastapi", "uvicorn", "httpx", "redis")
CONTENT_TYPES = {
    ".ogg": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".opus": "audio/ogg",
}

REPORT_HEADER = """# Benchmarks

Measured with the scripts in `bench/` on real music (Debian's `lincity-ng-data` soundtrack, fetched by
`corpus/music.py` into `.cache/bench-music/`). The machine is small and shared, so absolute figures move from run to
run: compare the **ratios**, which are measured within one run (variants interleaved where possible). Each section
below is rewritten by its script; the command line, date, machine and package versions are in the section.
Recurring benchmarks live in `bench/` (rerun when the code they measure changes); one-off decision studies, kept to
be rerun when their question comes back, in `bench/studies/` (each names the section holding its conclusion).
"""


# ---- machine ----------------------------------------------------------------------------------------------------


def service_default(setting: str) -> object:
    """The service's default for ``setting`` (the benchmarks' service ignores inherited TAGGRAM_* variables)."""
    return Settings.model_fields[setting].default


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark that starts the service shares."""
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--port", type=int, default=0, help="service port (0 = a free one)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions() -> str:
    versions = []
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{name} {importlib.metadata.version(name)}")
    return ", ".join(versions)


def environment_lines(argv: list[str]) -> list[str]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return [
        f"- command: `{shlex.join(['.venv/bin/python', '-m', *argv])}`",
        f"- date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}, load average at start "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min; other work shares the cores)",
        f"- software: Python {platform.python_version()}, {package_versions()}",
    ]


# ---- report ------------------------------------------------------------------------------------------------------


def update_report(name: str, body: str, path: Path = REPORT) -> None:
    """Replace (or append) the section ``name`` of docs/benchmarks.md."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else REPORT_HEADER
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block.rstrip("\n") + after
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")


def markdown_table(header: list[str], rows: list[list[object]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    marks = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# ---- the service as a subprocess ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def taggram_command() -> list[str]:
    script = Path(sys.executable).parent / "taggram"
    return [str(script), "serve"] if script.exists() else [sys.executable, "-m", "service", "serve"]


@contextlib.contextmanager
def running_service(port: int = 0, model: str = DEFAULT_MODEL, **settings: object) -> Iterator[Service]:
    """``taggram serve`` in a subprocess on 127.0.0.1 (port 0: a free one), ready (GET /readyz == 200) on entry.

    Inherited TAGGRAM_* variables are dropped so the run is defined by this call alone; ``settings`` become
    TAGGRAM_<NAME> variables (e.g. ``memory_cache_bytes=0``). Stopped with SIGTERM (then SIGKILL) on exit.
    """
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGRAM_")}
    env.update(
        {
            "TAGGRAM_HOST": "127.0.0.1",
            "TAGGRAM_PORT": str(port),
            "TAGGRAM_MODELS_DIR": str(MODELS_DIR),
            "TAGGRAM_MODELS": model,
            "TAGGRAM_DEFAULT_MODEL": model,
            "TAGGRAM_LOG_LEVEL": "warning",
            # fp32 unless a benchmark asks (bench/precision.py): under auto, a bf16-capable CPU may choose bf16
            # on one start and not the next (docs/precision.md), and the figures here are fp32's.
            "TAGGRAM_PRECISION": "fp32",
        }
    )
    env.update({f"TAGGRAM_{key.upper()}": str(value) for key, value in settings.items() if value is not None})
    # The service writes the log until it stops: closed (and removed) in the finally below, not by a with block.
    log_file = tempfile.NamedTemporaryFile(prefix="taggram-bench-", suffix=".log", delete=False)  # noqa: SIM115 - see above
    process = subprocess.Popen(taggram_command(), cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    service = Service(f"http://127.0.0.1:{port}", process, Path(log_file.name))
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited with {process.returncode}:\n{service.log_tail()}")
            try:
                if httpx.get(f"{service.url}/readyz", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the service was not ready after {READY_TIMEOUT_SECONDS:.0f} s:\n{service.log_tail()}"
                )
            time.sleep(0.2)
        yield service
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log_file.close()
        with contextlib.suppress(OSError):
            os.unlink(log_file.name)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc; 10 ms resolution."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def machine_busy_cpu_seconds() -> float:
    """CPU time every process of the machine has spent (all cores: user, nice, system, irq, softirq, steal), from
    the first line of /proc/stat; minus a process's own ``process_cpu_seconds`` it is what *other* work took."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# ---- /metrics ----------------------------------------------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics as {(sample name, sorted labels): value}."""
    text = httpx.get(f"{url}/metrics", timeout=10.0).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(
        value
        for (sample_name, sample_labels), value in samples.items()
        if sample_name == name and wanted <= set(sample_labels)
    )


def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
