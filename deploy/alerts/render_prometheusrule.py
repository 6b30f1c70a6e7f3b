"""Writes k8s/monitoring/prometheusrule.yaml: the alert rules of taggram.rules.yml wrapped in a PrometheusRule.

    python deploy/alerts/render_prometheusrule.py          # rewrite the file
    python deploy/alerts/render_prometheusrule.py --check  # exit 1 if the file is out of date

The rule file is the one source; this only wraps its `groups` unchanged (tests/system/test_alerts.py checks both that
the committed file equals this output and that its spec.groups equal the rule file's groups).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent.parent
RULES = REPO / "deploy" / "alerts" / "taggram.rules.yml"
OUTPUT = REPO / "k8s" / "monitoring" / "prometheusrule.yaml"
HEADER = (
    "# GENERATED from deploy/alerts/taggram.rules.yml by deploy/alerts/render_prometheusrule.py: edit the rule file\n"
    "# and run the script. The Prometheus Operator picks this up when its Prometheus' ruleSelector matches these\n"
    "# labels (add yours, e.g. `release: kube-prometheus-stack`, in an overlay). Runbooks: docs/operations.md.\n"
)


def prometheus_rule(rules_text: str) -> dict:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "taggram", "labels": {"app.kubernetes.io/name": "taggram"}},
        "spec": {"groups": yaml.safe_load(rules_text)["groups"]},
    }


def render(rules_text: str) -> str:
    body = yaml.safe_dump(prometheus_rule(rules_text), sort_keys=False, width=120, allow_unicode=True)
    return HEADER + body


def main(argv: list[str]) -> int:
    text = render(RULES.read_text())
    if "--check" in argv:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT} is out of date: run python {Path(__file__).relative_to(REPO)}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
