"""Alert rules (deploy/alerts/taggram.rules.yml) checked and unit-tested with the real promtool.

- `promtool check rules` accepts the file; `promtool test rules` passes deploy/alerts/taggram.rules.test.yml,
  where every alert has input series that make it fire and series that must not.
- The tests can fail: a changed threshold makes promtool's unit tests fail.
- One source: k8s/monitoring/prometheusrule.yaml is generated from the rule file and equal to it; compose's
  Prometheus loads the rule file itself; docs/operations.md links it (no copy) and has a runbook per alert.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.support.promtool_support import run_promtool

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "alerts"
RULES = ALERTS / "taggram.rules.yml"
RULE_TESTS = ALERTS / "taggram.rules.test.yml"
PROMETHEUS_RULE = REPO / "k8s" / "monitoring" / "prometheusrule.yaml"
OPERATIONS = REPO / "docs" / "operations.md"
COMPOSE = REPO / "docker-compose.yml"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus.yml"
DEPLOYMENT = REPO / "k8s" / "base" / "deployment.yaml"
SEVERITIES = {"page", "ticket", "info"}
RUNBOOK_PARTS = ("**Means**", "**Check**", "**Do**")

_spec = importlib.util.spec_from_file_location("render_prometheusrule", ALERTS / "render_prometheusrule.py")
render_prometheusrule = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_prometheusrule)


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in rules() if "alert" in rule]


def runbook_section(name: str) -> str:
    """The text under `#### <name>` in docs/operations.md, up to the next heading."""
    match = re.search(rf"^#### {re.escape(name)}\n(.*?)(?=^#)", OPERATIONS.read_text() + "\n#", re.S | re.M)
    assert match, f"docs/operations.md has no runbook section '#### {name}'"
    return match.group(1)


# ---- promtool --------------------------------------------------------------------------------------------------


def test_promtool_accepts_the_rule_file():
    result = run_promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = run_promtool("test", "rules", RULE_TESTS.name, cwd=ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("original", "changed"),
    [
        ("max by (model) (taggram_queue_depth_patches) > 1024", "max by (model) (taggram_queue_depth_patches) > 4096"),
        ('status!~"503|504"', 'status!~"504"'),
        ("for: 2m\n", "for: 20m\n"),
    ],
)
def test_promtool_unit_tests_catch_a_changed_rule(tmp_path, original, changed):
    """The unit tests pin each rule's behaviour: a threshold, a matcher or a `for` changed makes them fail."""
    text = RULES.read_text()
    assert text.count(original) == 1, original
    (tmp_path / RULES.name).write_text(text.replace(original, changed))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    assert run_promtool("check", "rules", tmp_path / RULES.name).returncode == 0, "the mutant is still valid"
    result = run_promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr, result.stdout


def test_promtool_rejects_a_broken_expression(tmp_path):
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(RULES.read_text().replace('up{job="taggram"} == 0', 'up{job="taggram" == 0', 1))
    result = run_promtool("check", "rules", broken)
    assert result.returncode != 0


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    cases: dict[str, set[str]] = {name: set() for name in alert_names()}
    suite = yaml.safe_load(RULE_TESTS.read_text())
    assert suite["rule_files"] == [RULES.name]
    for test in suite["tests"]:
        for case in test.get("alert_rule_test", []):
            assert case["alertname"] in cases, f"test for an unknown alert {case['alertname']}"
            cases[case["alertname"]].add("fires" if case["exp_alerts"] else "quiet")
    incomplete = {name: sorted(kinds) for name, kinds in cases.items() if kinds != {"fires", "quiet"}}
    assert not incomplete, f"each alert needs a case where it fires and one where it does not: {incomplete}"


# ---- the rules themselves ----------------------------------------------------------------------------------------


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section():
    names = alert_names()
    assert len(names) == len(set(names)), "alert names are unique"
    for rule in rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["runbook_url"] == f"docs/operations.md#{name.lower()}"
        section = runbook_section(name)
        missing = [part for part in RUNBOOK_PARTS if part not in section]
        assert not missing, f"runbook of {name} lacks {missing}"


def test_the_rules_cover_what_ops_asked_for():
    """Issue #15's list: each area has at least one alert, found by the metric or matcher it must use."""
    exprs = "\n".join(rule["expr"] for rule in rules())
    for needle in (
        'up{job="taggram"}',
        'status=~"5.."',
        'reason="overloaded"',
        'status="504"',
        "taggram_queue_depth_patches",
        "taggram_request_duration_seconds_bucket",
        "by (endpoint, le)",
        "taggram_cache_errors_total",
        "taggram_cache_hits_total",
        "taggram_decode_warnings_total",
        "sum by (reason) (rate(taggram_rejections_total",
        "taggram_index_reloads_total",
        "taggram_heads_loaded",
        "process_resident_memory_bytes",
    ):
        assert needle in exprs, needle


def test_memory_alert_threshold_is_90_percent_of_the_deployment_memory_limit():
    units = {"Mi": 2**20, "Gi": 2**30}
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    limit = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    limit_bytes = int(limit[:-2]) * units[limit[-2:]]
    [memory] = [rule for rule in rules() if rule["alert"] == "TaggramMemoryHigh"]
    assert memory["expr"].strip().endswith(f"> 0.9 * {limit_bytes}"), (memory["expr"], limit)


# ---- one source --------------------------------------------------------------------------------------------------


def test_prometheusrule_is_generated_from_the_rule_file():
    text = RULES.read_text()
    assert PROMETHEUS_RULE.read_text() == render_prometheusrule.render(text), (
        "k8s/monitoring/prometheusrule.yaml is stale: run python deploy/alerts/render_prometheusrule.py"
    )
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert rule["kind"] == "PrometheusRule" and rule["spec"]["groups"] == yaml.safe_load(text)["groups"]


def test_render_check_mode_notices_a_stale_file(tmp_path, monkeypatch):
    stale = tmp_path / "prometheusrule.yaml"
    stale.write_text(PROMETHEUS_RULE.read_text().replace("for: 2m", "for: 3m", 1))
    monkeypatch.setattr(render_prometheusrule, "OUTPUT", stale)
    assert render_prometheusrule.main(["--check"]) == 1
    monkeypatch.setattr(render_prometheusrule, "OUTPUT", PROMETHEUS_RULE)
    assert render_prometheusrule.main(["--check"]) == 0


def test_compose_prometheus_loads_the_rule_file():
    prometheus = yaml.safe_load(COMPOSE.read_text())["services"]["prometheus"]
    mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in prometheus["volumes"]}
    container_path = mounts[f"./{RULES.relative_to(REPO)}"]
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == [container_path]


def test_promtool_accepts_the_compose_prometheus_config(tmp_path):
    """deploy/prometheus.yml with its rule file at the path compose mounts it to, rebased into tmp_path."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    [container_path] = config["rule_files"]
    local = tmp_path / Path(container_path).name
    shutil.copy(RULES, local)
    config["rule_files"] = [str(local)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = run_promtool("check", "config", tmp_path / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_operations_doc_links_the_rule_file_instead_of_copying_it():
    text = OPERATIONS.read_text()
    assert "deploy/alerts/taggram.rules.yml" in text
    blocks = re.findall(r"```ya?ml\n(.*?)```", text, re.S)
    assert not [block for block in blocks if re.search(r"^\s*- alert:", block, re.M)], (
        "alert rules live in deploy/alerts/taggram.rules.yml only"
    )
