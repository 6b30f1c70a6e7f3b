"""Test helper: the real `promtool` (Debian's `prometheus` package ships it; `.ci/run` installs it).

Missing promtool skips locally and FAILS under CI=true, so CI can never go green by skipping the rule tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PROMTOOL_TIMEOUT_SECONDS = 120


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is not installed (apt-get install -y prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true: the alert rule tests must not be skipped")
        pytest.skip(reason)
    return found


def run_promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=PROMTOOL_TIMEOUT_SECONDS
    )
