"""The README is part of the product: its examples run as written and its tables match the code."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest

from service.config import Settings
from tests.support.live_server import REPO_ROOT, live_server, server_settings

README = (REPO_ROOT / "README.md").read_text()
README_URL = "http://127.0.0.1:8000"


def try_it_commands() -> list[str]:
    section = README.split("## Try it", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_every_setting_is_in_the_readme_configuration_table():
    documented = set(re.findall(r"^\| `(TAGGRAM_[A-Z_]+)` \|", README, re.M))
    declared = {f"TAGGRAM_{name.upper()}" for name in Settings.model_fields}
    assert documented == declared


def test_readme_two_commands_are_the_makefile_targets_and_ci_runs_the_test_one():
    block = re.search(r"## Two commands.*?```sh\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    assert [line for line in ci if line.startswith("make ")] == ["make lint", "make test"]  # the linter, then the tests


def test_readme_examples_work_as_written(models_dir, tmp_path):
    commands = try_it_commands()
    assert any("/suggest-subgenres" in c for c in commands) and any("/embed" in c for c in commands)
    with live_server(server_settings(models_dir)) as live:
        outputs = []
        for command in commands:
            command = command.replace(".venv/bin/python", shlex.quote(sys.executable)).replace(README_URL, live.url)
            result = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, (command, result.stderr)
            outputs.append(result.stdout)
    by_endpoint = dict(zip(commands, outputs))
    suggest = json.loads(next(v for k, v in by_endpoint.items() if "/suggest-subgenres" in k))
    assert len(suggest["suggestions"]) == 3
    embed = json.loads(next(v for k, v in by_endpoint.items() if "/embed" in k))
    assert embed["dim"] == 200 and embed["duration_seconds"] == pytest.approx(10.0)
    taggram = json.loads(next(v for k, v in by_endpoint.items() if "/taggram" in k))
    assert taggram["hop_seconds"] == pytest.approx(1.504) and taggram["cached"] is False
    assert "taggram_requests_total" in outputs[-1]
