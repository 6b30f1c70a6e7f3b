"""Test helper: the README's "Try it" commands, run as written against a server at any URL, and what they must give."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
README_URL = "http://127.0.0.1:8000"


def try_it_commands() -> list[str]:
    section = README.read_text().split("## Try it", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def run_try_it(url: str, cwd: Path) -> dict[str, str]:
    """Each command (the README's URL replaced by ``url``, .venv/bin/python by this Python) -> its stdout."""
    outputs = {}
    for command in try_it_commands():
        runnable = command.replace(".venv/bin/python", shlex.quote(sys.executable)).replace(README_URL, url)
        result = subprocess.run(runnable, shell=True, cwd=cwd, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (runnable, result.stderr)
        outputs[command] = result.stdout
    return outputs


def check_try_it_outputs(outputs: dict[str, str]) -> None:
    """What the README's examples promise: 3 suggestions, a 200-d embedding of the 10-s tone, a taggram at the asked
    hop, the request counter in /metrics."""
    commands = list(outputs)
    assert any("/suggest-subgenres" in c for c in commands) and any("/embed" in c for c in commands)
    suggest = json.loads(next(v for k, v in outputs.items() if "/suggest-subgenres" in k))
    assert len(suggest["suggestions"]) == 3
    embed = json.loads(next(v for k, v in outputs.items() if "/embed" in k))
    assert embed["dim"] == 200 and embed["duration_seconds"] == pytest.approx(10.0)
    taggram = json.loads(next(v for k, v in outputs.items() if "/taggram" in k))
    assert taggram["hop_seconds"] == pytest.approx(1.504) and taggram["cached"] is False
    assert "taggram_requests_total" in outputs[commands[-1]]
