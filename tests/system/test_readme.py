"""The README is part of the product: its examples run as written and its tables match the code."""

from __future__ import annotations

import re

from service.config import Settings
from tests.support.live_server import REPO_ROOT, live_server, server_settings
from tests.support.readme import check_try_it_outputs, run_try_it

README = (REPO_ROOT / "README.md").read_text()


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
    with live_server(server_settings(models_dir)) as live:
        outputs = run_try_it(live.url, tmp_path)
    check_try_it_outputs(outputs)
