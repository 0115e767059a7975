"""deploy/grafana/slimy.json and deploy/prometheus/alerts.yml: valid, and every metric they query exists."""

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import audit.metrics
import chat.metrics
import queues.metrics
from tests.metrics.conftest import parse_metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\w+", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        name, rest = match.group(0), expr[match.end() :].lstrip()
        if name in KEYWORDS or rest.startswith("(") or re.fullmatch(r"\d.*", name):
            continue
        names.add(name)
    return names


def defined_names() -> set[str]:
    names = set(queues.metrics.SCRAPE_GAUGES)
    objects = [*vars(queues.metrics).values(), *vars(chat.metrics).values(), *vars(audit.metrics).values()]
    for obj in objects:
        if isinstance(obj, MetricWrapperBase):
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(obj._type, [""])
            names.update(obj._name + s for s in suffixes)
    return names


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "slimy.json").read_text())
    assert dashboard["panels"] and dashboard["title"]
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def alert_rules() -> list[dict]:
    document = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert all(rule["alert"] and rule["expr"] and rule["labels"]["severity"] for rule in rules)
    return rules


def test_metric_name_extraction():
    expr = 'sum by (queue) (rate(slimy_jobs_finished_total{outcome=~"a|b"}[5m])) / on (queue) slimy_queue_workers > 0'
    assert metric_names(expr) == {"slimy_jobs_finished_total", "slimy_queue_workers"}


@pytest.mark.django_db
def test_every_queried_metric_exists(staff_client, settings):
    settings.PROMETHEUS_MULTIPROC_DIR = ""
    staff_client.get("/health/live")
    exposed = {name for name, _ in parse_metrics(staff_client.get("/metrics").content.decode())}
    known = exposed | defined_names()
    queried = {}
    for expr in dashboard_exprs():
        for name in metric_names(expr):
            queried.setdefault(name, "dashboard")
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            queried.setdefault(name, rule["alert"])
    missing = {name: where for name, where in queried.items() if name not in known}
    assert not missing
    # what the issue asks the dashboard and the alerts to cover
    dashboard = " ".join(dashboard_exprs())
    for name in (
        "slimy_jobs_finished_total",
        "slimy_job_duration_seconds_bucket",
        "slimy_job_wait_seconds_bucket",
        "slimy_queue_jobs",
        "slimy_workers",
        "slimy_chat_fallbacks_total",
    ):
        assert name in dashboard
    alerts = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    for alert, name in {
        "SlimyQueueBacklogGrowing": "slimy_queue_jobs",
        "SlimyJobFailureRateHigh": "slimy_jobs_finished_total",
        "SlimyNoWorkerForQueue": "slimy_queue_workers",
        "SlimyOldestJobTooOld": "slimy_queue_oldest_job_age_seconds",
        "SlimyAuditChainBroken": "slimy_audit_chain_ok",
        "SlimyLlmBreakerOpen": "slimy_llm_breaker_open",
    }.items():
        assert name in metric_names(alerts[alert])
