"""The README's two commands on machines like a user's (#21 item 0b): fresh containers with Python 3.11 and a newer
Python (Debian trixie's 3.13, or the official slim images where they can be pulled), none of this project's
machines' pip set-up, only the public package index; the checkout copied in; `make run` until ready, then the
unit tier of `make test`. deploy/clean-machine.sh does the work (one PASS/FAIL line per machine); about 6 min a
machine here (pip through the proxy, the model export, on shared CPUs).
"""

from __future__ import annotations

import subprocess

import pytest

from tests.support import containers

pytestmark = pytest.mark.slow

SCRIPT = containers.REPO_ROOT / "deploy" / "clean-machine.sh"
TIMEOUT_SECONDS = 3600


def test_make_run_and_the_unit_tier_work_on_fresh_python_311_and_313_machines(tmp_path):
    containers.require_engine()
    result = subprocess.run(
        ["bash", str(SCRIPT), str(containers.REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        env={"CLEAN_MACHINE_LOGS": str(tmp_path), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin"},
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    print("\n" + "\n".join(lines))
    assert result.returncode == 0 and len(lines) == 2 and all(line.startswith("PASS") for line in lines), (
        result.stdout[-3000:] + result.stderr[-2000:]
    )
