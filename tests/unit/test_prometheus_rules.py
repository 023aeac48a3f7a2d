"""The alerts of manifests/monitoring: every rule is complete, every expression parses as PromQL,
and every series and label it names is one the service exports (or one Prometheus or
kube-state-metrics makes), so renaming a metric in digitops.serving.metrics fails here."""

import shutil
import subprocess
from pathlib import Path

import promql_parser
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from digitops.serving import metrics

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "manifests" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
# Labels Prometheus adds to every series it scrapes through the ServiceMonitor.
TARGET_LABELS = {"job", "namespace", "service", "pod", "container", "endpoint", "instance"}
# Series the rules may name that the service does not export, with their labels.
EXTERNAL = {
    "up": TARGET_LABELS,  # Prometheus: did the scrape answer
    "kube_cronjob_status_last_successful_time": {"namespace", "cronjob"},  # kube-state-metrics
}
SEVERITIES = {"warning", "critical"}

kubectl = pytest.mark.skipif(not shutil.which("kubectl"), reason="kustomize comes with kubectl")


def kustomize(directory: Path) -> list[dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def exported() -> dict[str, set[str]]:
    """Every series name the service's /metrics can show, with its label names."""
    series: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        family = metric.describe()[0]
        labels = set(metric._labelnames)  # prometheus_client keeps no public accessor
        suffixes = {
            "counter": ["_total", "_created"],
            "gauge": [""],
            "histogram": ["_bucket", "_sum", "_count", "_created"],
            "summary": ["", "_sum", "_count", "_created"],
        }[family.type]
        for suffix in suffixes:
            series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def problems(rules_doc: dict, known: dict[str, set[str]]) -> list[str]:
    """What is wrong with the PrometheusRule `rules_doc`, given the series `known` (name ->
    label names): missing fields, bad durations, expressions that do not parse, unknown series,
    labels no series in the expression has."""
    found = []
    for group in rules_doc["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}, group["name"]
        for rule in group["rules"]:
            name = rule.get("alert", "?")
            unknown = set(rule) - {"alert", "expr", "for", "labels", "annotations"}
            if unknown or not name.startswith("Digitops"):
                found.append(f"{name}: fields {sorted(unknown)}, or not a digitops alert")
            try:
                promql_parser.parse_duration(rule.get("for", ""))
            except ValueError as exc:
                found.append(f"{name}: for: {exc}")
            if rule.get("labels", {}).get("severity") not in SEVERITIES:
                found.append(f"{name}: severity is not one of {sorted(SEVERITIES)}")
            annotations = rule.get("annotations", {})
            if not all(isinstance(annotations.get(k), str) for k in ("summary", "description")):
                found.append(f"{name}: no summary and description")
            try:
                expr = promql_parser.parse(rule["expr"])
            except ValueError as exc:
                found.append(f"{name}: {exc}")
                continue
            found += [f"{name}: {p}" for p in expression_problems(expr, known)]
    return found


def parts(expr: promql_parser.Expr) -> tuple[list[promql_parser.VectorSelector], set[str]]:
    """The series selectors of `expr`, and the labels it groups or matches by."""
    selectors: list[promql_parser.VectorSelector] = []
    grouping: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            selectors.append(node)
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            grouping.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                grouping.update(node.modifier.matching.labels)
            grouping.update(node.modifier.group_labels or [])

    promql_parser.walk(expr, visit)
    return selectors, grouping


def expression_problems(expr: promql_parser.Expr, known: dict[str, set[str]]) -> list[str]:
    selectors, grouping = parts(expr)
    found = []
    in_expression: set[str] = set()
    for selector in selectors:
        if selector.name not in known:
            found.append(f"{selector.name!r} is not a series the service exports")
            continue
        labels = known[selector.name] | TARGET_LABELS
        in_expression |= labels
        for matcher in selector.matchers.matchers:
            if matcher.name not in labels:
                found.append(f"{selector.name} has no label {matcher.name!r}")
    if selectors and not grouping <= in_expression:
        found.append(f"grouping by {sorted(grouping - in_expression)}: no such label")
    return found


def rules() -> dict:
    return yaml.safe_load(RULES.read_text())


def test_every_alert_is_complete_and_parses_and_names_exported_series():
    known = exported() | EXTERNAL
    assert problems(rules(), known) == []
    alerts = [rule["alert"] for group in rules()["spec"]["groups"] for rule in group["rules"]]
    assert len(alerts) == len(set(alerts)) >= 6


def test_the_exported_series_are_read_from_the_service():
    """The check knows the service's real series: counters with _total, the histogram's parts."""
    series = exported()
    assert series["digitops_rejected_requests_total"] == {"status"}
    assert series["digitops_predict_seconds_bucket"] == {"le"}
    assert series["digitops_live_accuracy"] == {"model_version"}
    assert "digitops_predictions" not in series  # a counter is only seen with its suffix
    assert not set(EXTERNAL) & set(series) and not any(n.startswith("digitops") for n in EXTERNAL)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # a metric renamed in digitops.serving.metrics (here: renamed in the rule instead)
        (("digitops_predict_seconds_bucket", "digitops_latency_seconds_bucket"), "not a series"),
        (("digitops_live_accuracy{", "digitops_live_accuracy_ratio{"), "not a series"),
        (('status=~"5.."', 'code=~"5.."'), "no label 'code'"),
        (("by (model_version)", "by (version)"), "grouping by ['version']"),
        (("sum by (le) (rate(", "sum by (le) (("), "expected type vector"),
        (("for: 10m", "for: 10 minutes"), "for: "),
        (("{severity: critical}", "{severity: page}"), "severity"),
    ],
)
def test_a_renamed_series_or_broken_rule_fails_the_check(edit, expected):
    old, new = edit
    text = RULES.read_text()
    assert old in text
    found = problems(yaml.safe_load(text.replace(old, new)), exported() | EXTERNAL)
    assert any(expected in p for p in found), found


@kubectl
def test_monitoring_kustomization_renders_the_rules_and_the_service_monitor():
    """The Prometheus Operator's CRD schemas are not available offline: the kinds, the namespace
    and the kustomization's completeness are checked here, the rules above."""
    docs = kustomize(MONITORING)
    assert sorted(d["kind"] for d in docs) == ["PrometheusRule", "ServiceMonitor"]
    for doc in docs:
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert doc["metadata"]["namespace"] == "digitops"
        assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    listed = set(yaml.safe_load((MONITORING / "kustomization.yaml").read_text())["resources"])
    assert {p.name for p in MONITORING.glob("*.yaml")} - {"kustomization.yaml"} == listed


@kubectl
def test_service_monitor_scrapes_the_serving_service_where_it_serves_metrics():
    monitor = next(d for d in kustomize(MONITORING) if d["kind"] == "ServiceMonitor")
    serving = kustomize(REPO / "manifests" / "serving")
    service = next(d for d in serving if d["kind"] == "Service")
    deployment = next(d for d in serving if d["kind"] == "Deployment")
    assert monitor["metadata"]["namespace"] == "digitops"  # the service's (deploy.namespace)
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports
        assert endpoint["path"] == annotations["prometheus.io/path"]
        assert str(ports[endpoint["port"]]["port"]) == annotations["prometheus.io/port"]
    # Scraped series carry the Service's name as `job`: the rules that name a job name it.
    jobs = {
        matcher.value
        for group in rules()["spec"]["groups"]
        for rule in group["rules"]
        for selector in parts(promql_parser.parse(rule["expr"]))[0]
        for matcher in selector.matchers.matchers
        if matcher.name == "job"
    }
    assert jobs == {service["metadata"]["name"]}
