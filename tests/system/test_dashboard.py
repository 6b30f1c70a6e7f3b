"""The Grafana dashboard and the alert rules query only metrics the service really exports.

Every PromQL expression in deploy/grafana/dashboards/taggram.json and deploy/alerts/taggram.rules.yml is parsed
with `promql-parser` (Python bindings of the Rust crate GreptimeDB uses, which follows the Prometheus grammar;
on PyPI and maintained; promtool also parses the dashboard's queries, as recording rules), and every metric
name its selectors reference is looked up among the sample names of the real service: `taggram serve` is
started and its /metrics parsed. The HELP/TYPE lines list every family, even labelled ones with no sample yet,
and the family type tells which sample names it exports (a histogram has _bucket/_sum/_count, a counter _total).
A real parser rather than a regex: a regex cannot tell a metric name from a function, an aggregation keyword or
a label name (`sum by (le) (rate(x[5m]))`).

The dashboard's provisioning by docker-compose is checked here too (datasource uid, provider path, mounts).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.promtool_support import run_promtool
from tests.support.serve_process import ServeProcess

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "taggram.json"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
RULES = REPO / "deploy" / "alerts" / "taggram.rules.yml"
COMPOSE = REPO / "docker-compose.yml"

# Series Prometheus writes itself for every scrape target, never exported by the service.
SCRAPE_SERIES = {"up"}
# Grafana's interval variables, replaced by a duration before parsing (what Grafana does before querying).
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
# The sample names each family type exports (prometheus_client's text format; _created is its creation stamp).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}


def grafana_free(expr: str) -> str:
    """The query as Grafana sends it: its interval variables replaced by durations."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def exported_sample_names(metrics_text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(metrics_text):
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


def referenced_metric_names(expr: str) -> set[str]:
    """Metric names of every selector in a PromQL expression (raises ValueError when it does not parse)."""
    names: list[str | None] = []

    def collect(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):  # a matrix selector's vector selector is visited too
            names.append(node.name)

    promql_parser.walk(promql_parser.parse(grafana_free(expr)), pre_visit=collect)
    assert None not in names, f"a selector without a metric name cannot be checked: {expr}"
    return set(names)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict) -> list[dict]:
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found += panel.get("panels", [])  # collapsed rows hold their panels
    return found


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in panels(dashboard()) for target in panel.get("targets", [])]


def rule_exprs() -> list[str]:
    return [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def service_metric_names(models_dir, tmp_path_factory) -> set[str]:
    """Sample names `taggram serve` exports on /metrics (after one request, like any scraped server)."""
    with ServeProcess(models_dir, tmp_path_factory.mktemp("serve")) as proc:
        proc.wait_ready()
        response = httpx.get(proc.url + "/metrics", timeout=10)
    assert response.status_code == 200
    return exported_sample_names(response.text)


# ---- the parser and the name extraction are real ----------------------------------------------------------------


def test_name_extraction_sees_through_functions_aggregations_and_binary_operators():
    expr = (
        'histogram_quantile(0.95, sum by (endpoint, le) (rate(a_bucket{le!="1"}[$__rate_interval])))'
        ' / on() group_left sum(b_total) > 0.9 * 3 and absent(up{job="taggram"}) or time() - max(c)'
    )
    assert referenced_metric_names(expr) == {"a_bucket", "b_total", "up", "c"}


def test_a_broken_expression_fails_to_parse():
    with pytest.raises(ValueError):
        referenced_metric_names('sum(rate(taggram_requests_total{status="500"[5m]))')


def test_exported_names_follow_each_family_type():
    text = (
        "# HELP x_seconds h\n# TYPE x_seconds histogram\n# HELP y_total c\n# TYPE y_total counter\n"
        "# HELP z g\n# TYPE z gauge\nz 1.0\n"
    )
    assert exported_sample_names(text) == {
        "x_seconds_bucket",
        "x_seconds_sum",
        "x_seconds_count",
        "x_seconds_created",
        "y_total",
        "y_created",
        "z",
    }


# ---- the dashboard and the rules against the service --------------------------------------------------------------


def test_every_metric_in_the_dashboard_and_the_rules_is_exported(service_metric_names):
    exprs = dashboard_exprs() + rule_exprs()
    assert len(exprs) >= 30
    referenced = set().union(*(referenced_metric_names(expr) for expr in exprs))
    unknown = sorted(referenced - service_metric_names - SCRAPE_SERIES)
    assert not unknown, f"queried but not exported by taggram serve: {unknown}"


def test_the_check_would_catch_a_misspelt_metric(service_metric_names):
    assert "taggram_request_total" not in service_metric_names  # (the real one is taggram_requests_total)
    assert "taggram_requests_total" in service_metric_names and "process_resident_memory_bytes" in service_metric_names
    assert "taggram_request_duration_seconds_bucket" in service_metric_names  # a histogram with no sample yet


def test_prometheus_itself_parses_every_dashboard_expression(tmp_path):
    """A second, authoritative parser: Prometheus' own (promtool), on the dashboard's queries as recording rules."""
    rules = [{"record": f"dashboard:query_{i}", "expr": grafana_free(expr)} for i, expr in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_dashboard_covers_what_ops_asked_for():
    exprs = "\n".join(dashboard_exprs())
    for needle in (
        "sum by (endpoint, status) (rate(taggram_requests_total",
        "taggram_request_duration_seconds_bucket",
        "taggram_queue_depth_patches",
        "taggram_queue_wait_seconds_bucket",
        "taggram_batch_size_patches",
        "taggram_inference_duration_seconds_bucket",
        "taggram_cache_hits_total",
        "taggram_cache_misses_total",
        "taggram_cache_errors_total",
        "taggram_decode_duration_seconds_bucket",
        "taggram_decode_warnings_total",
        "sum by (reason) (rate(taggram_rejections_total",
        "process_resident_memory_bytes",
        "taggram_heads_loaded",
        "taggram_index_vectors",
        "taggram_index_reloads_total",
    ):
        assert needle in exprs, needle


def test_dashboard_is_well_formed():
    board = dashboard()
    assert board["uid"] == "taggram" and board["title"]
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]


# ---- provisioned by docker-compose -------------------------------------------------------------------------------


def test_compose_provisions_grafana_with_the_datasource_and_the_dashboard():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    grafana = services["grafana"]
    mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in grafana["volumes"]}
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    [datasource] = datasources
    assert datasource["type"] == "prometheus" and datasource["uid"] == "prometheus"
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", datasource["url"]).groups()
    assert host in services and any(p.endswith(f":{port}") for p in services[host]["ports"])
    [provider] = yaml.safe_load((PROVISIONING / "dashboards" / "taggram.yml").read_text())["providers"]
    assert provider["type"] == "file"
    assert mounts[f"./{DASHBOARD.parent.relative_to(REPO)}"] == provider["options"]["path"]
    assert grafana["depends_on"] == {host: {"condition": "service_healthy"}} and "healthcheck" in services[host]
