"""The monitoring kit (deploy/monitoring) loads and speaks only real metric names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from workers.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parent.parent
KIT = ROOT / "deploy" / "monitoring"

#: The documented exporters' metrics the kit may use: redis_exporter (memory, the
#: dead-letter list's size via --check-single-keys) and Prometheus' own ``up``.
EXPORTER_METRICS = {"redis_memory_used_bytes", "redis_memory_max_bytes", "redis_key_size",
                    "redis_up", "up"}

_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                               "_created"),
             "gauge": ("",), "info": ("_info",), "summary": ("", "_sum", "_count", "_created")}
_FUNCTIONS_AND_WORDS = {
    "abs", "absent", "avg", "bool", "by", "count", "delta", "deriv", "group_left",
    "group_right", "histogram_quantile", "ignoring", "increase", "irate", "max",
    "max_over_time", "min", "min_over_time", "offset", "on", "or", "and", "unless", "rate",
    "sum", "time", "topk", "vector", "without", "clamp_min", "avg_over_time", "label_replace",
}


def worker_metric_names() -> set[str]:
    """Every sample name a worker can export (workers.metrics, all suffixes)."""
    names: set[str] = set()
    for family in WorkerMetrics().registry.collect():
        names.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label
    matchers, grouping labels, durations and template variables removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", " ", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = m.group(0)
        if word in _FUNCTIONS_AND_WORDS or text[m.end():].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def test_metric_name_parser_sees_selectors_only() -> None:
    expr = ('sum by (field) (rate(tiqu_review_fields_total{field="name"}[5m])) '
            '/ on() max(redis_memory_used_bytes) > 0.2 and absent(up)')
    assert metric_names(expr) == {"tiqu_review_fields_total", "redis_memory_used_bytes", "up"}


def _alert_rules() -> list[dict]:
    doc = yaml.safe_load((KIT / "alerts.yaml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alert_rules_load_with_the_expected_groups_and_alerts() -> None:
    doc = yaml.safe_load((KIT / "alerts.yaml").read_text())
    assert [g["name"] for g in doc["groups"]] == ["tiqu-workers", "tiqu-redis"]
    rules = _alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    assert {"TiquBreakerOpen", "TiquNoWorkers", "TiquBacklogGrowing", "TiquReviewRateHigh",
            "TiquRedisMemoryHigh", "TiquDeadLetterGrowing"} <= set(names)
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"])


def test_alert_rules_and_dashboard_use_only_defined_metrics() -> None:
    known = worker_metric_names() | EXPORTER_METRICS
    assert {"tiqu_breaker_open", "tiqu_review_fields_total", "tiqu_field_confidence_count",
            "tiqu_queue_length", "tiqu_task_latency_seconds_bucket"} <= known
    exprs = {r["alert"]: r["expr"] for r in _alert_rules()}
    dashboard = json.loads((KIT / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            exprs[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for where, expr in exprs.items():
        used = metric_names(expr)
        assert used, f"{where}: no metric in {expr!r}"
        assert used <= known, f"{where}: unknown metrics {sorted(used - known)}"


def test_dashboard_covers_the_operating_questions() -> None:
    dashboard = json.loads((KIT / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    text = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for needle in ("tiqu_queue_length", "rate(tiqu_tasks_total", "histogram_quantile(0.95",
                   "tiqu_field_confidence_bucket", "tiqu_review_fields_total",
                   "tiqu_adapter_info", "tiqu_breaker_open", "redis_memory_used_bytes"):
        assert needle in text, needle


def test_podmonitor_selects_the_worker_pods_metrics_port() -> None:
    (monitor,) = list(yaml.safe_load_all((KIT / "podmonitor.yaml").read_text()))
    assert monitor["kind"] == "PodMonitor"
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    (expr,) = monitor["spec"]["selector"]["matchExpressions"]
    assert expr["operator"] == "In"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    for name in ("worker.yaml", "train.yaml"):  # the extract workers and the trainer
        docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / name).read_text())
                if d and d["kind"] == "Deployment"]
        (deployment,) = docs
        template = deployment["spec"]["template"]
        assert template["metadata"]["labels"][expr["key"]] in expr["values"], name
        assert monitor["metadata"]["namespace"] == deployment["metadata"]["namespace"]
        ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics", name


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_rules_and_panel_queries(
    tmp_path: Path,
) -> None:  # pragma: no cover - optional tool
    out = subprocess.run(["promtool", "check", "rules", str(KIT / "alerts.yaml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # The panels' queries, as recording rules, go through the same parser.
    dashboard = json.loads((KIT / "grafana-dashboard.json").read_text())
    rules = [{"record": f"panel:{p['id']}:{t['refId']}",
              "expr": t["expr"].replace("$__rate_interval", "5m")}
             for p in dashboard["panels"] for t in p["targets"]]
    path = tmp_path / "panels.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    out = subprocess.run(["promtool", "check", "rules", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
