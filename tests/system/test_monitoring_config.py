"""The shipped monitoring files: checked by the real promtool, amtool and hadolint."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.standins.processes import require_program
from tests.unit.test_docs import _anchors

ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "config"
DASHBOARD = ROOT / "grafana" / "dashboards" / "cce-jobs.json"
MONITORING_GUIDE = ROOT / "docs" / "monitoring.md"
ALERTS = (
    "CCEJobFailed",
    "CCEJobStuck",
    "CCEJobPollFailing",
    "CCEExporterDown",
    "CCEApiThrottled",
    "CCEJobFailureRateHigh",
    "CCEClusterUnhealthy",
    "CCEDiscoveryFailing",
    "CCEWatchListFull",
    "CCEShardsMismatch",
)
# Where runbook_url points: the guide's copy on the docs host users set.
RUNBOOK_BASE = "https://cce-job-exporter.example/docs/monitoring.md#"
RULE_TESTS = ("alerts.test.yml", "rules.test.yml")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603


def test_promtool_checks_the_prometheus_config() -> None:
    """`promtool check config` accepts prometheus.yml and the rule file it loads."""
    promtool = require_program("promtool")
    result = _run(promtool, "check", "config", str(CONFIG / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_rules() -> None:
    """`promtool check rules` accepts alerts.yml."""
    promtool = require_program("promtool")
    result = _run(promtool, "check", "rules", str(CONFIG / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def _metrics_guide_queries() -> list[str]:
    """The example-query cells of the tables in docs/metrics.md."""
    queries = []
    for line in (ROOT / "docs" / "metrics.md").read_text().splitlines():
        if line.startswith("| `cce_"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            queries.append(cells[4].strip("`"))
    return queries


def test_promtool_parses_the_metrics_guide_queries(tmp_path: Path) -> None:
    """Every example query of docs/metrics.md is PromQL that promtool accepts."""
    promtool = require_program("promtool")
    queries = _metrics_guide_queries()
    assert len(queries) >= 20
    rules = [{"record": f"docs:example_{i}", "expr": expr} for i, expr in enumerate(queries)]
    path = tmp_path / "examples.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "docs", "rules": rules}]}))
    result = _run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("tests", RULE_TESTS)
def test_promtool_unit_tests_of_the_rules_pass(tests: str) -> None:
    """`promtool test rules` passes the unit tests of the alerts and of the recording rules."""
    promtool = require_program("promtool")
    result = _run(promtool, "test", "rules", str(CONFIG / tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_amtool_checks_the_alertmanager_config() -> None:
    """`amtool check-config` accepts alertmanager.yml."""
    amtool = require_program("amtool")
    result = _run(amtool, "check-config", str(CONFIG / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((CONFIG / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _alert_rules() -> dict[str, list[dict[str, Any]]]:
    """Each alert's rules: one, or several of one name (CCEJobFailed's severities)."""
    rules: dict[str, list[dict[str, Any]]] = {}
    for rule in _rules():
        if "alert" in rule:
            rules.setdefault(rule["alert"], []).append(rule)
    return rules


def test_every_spec_alert_is_shipped_with_severity_and_texts() -> None:
    """Each alert of the spec exists, with severity, summary, description, runbook and its URL."""
    rules = _alert_rules()
    assert set(rules) == set(ALERTS)
    for name, variants in rules.items():
        for rule in variants:
            assert rule["labels"]["severity"] in ("critical", "warning"), name
            assert set(rule["annotations"]) == {
                "summary",
                "description",
                "runbook",
                "runbook_url",
            }, name
    # Several rules of one name differ in severity, so each alert stays one.
    for name, variants in rules.items():
        assert len({rule["labels"]["severity"] for rule in variants}) == len(variants), name


def test_runbook_urls_point_at_each_alert_s_section_of_the_guide() -> None:
    """Every runbook_url names the heading of its own alert in docs/monitoring.md."""
    anchors = _anchors(MONITORING_GUIDE.read_text())
    for name, variants in _alert_rules().items():
        for rule in variants:
            url = rule["annotations"]["runbook_url"]
            assert url.startswith(RUNBOOK_BASE), url
            anchor = url.removeprefix(RUNBOOK_BASE)
            assert anchor == name.lower(), (name, url)
            assert anchor in anchors, (name, url)


def test_the_guide_lists_each_alert_with_its_severity() -> None:
    """docs/monitoring.md's alert table gives each alert the severities its rules carry."""
    guide = MONITORING_GUIDE.read_text()
    rows = {
        match.group(1): match.group(2)
        for match in re.finditer(r"^\| `(CCE\w+)` \| ([^|]+) \|", guide, flags=re.MULTILINE)
    }
    assert set(rows) == set(ALERTS)
    for name, variants in _alert_rules().items():
        for rule in variants:
            assert rule["labels"]["severity"] in rows[name], name
    severity = guide[guide.index("## Severity") : guide.index("## Runbooks")]
    for name in ALERTS:
        assert f"`{name}`" in severity, name


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    """alerts.test.yml checks each alert (each severity of it) firing, and each silent."""
    tests = yaml.safe_load((CONFIG / "alerts.test.yml").read_text())["tests"]
    firing: set[tuple[str, str]] = set()
    silent: set[str] = set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            expected = case.get("exp_alerts") or []
            if not expected:
                silent.add(case["alertname"])
            for alert in expected:
                firing.add((case["alertname"], alert["exp_labels"]["severity"]))
                assert set(alert["exp_annotations"]) == {
                    "summary",
                    "description",
                    "runbook",
                    "runbook_url",
                }
    shipped = {
        (name, rule["labels"]["severity"])
        for name, variants in _alert_rules().items()
        for rule in variants
    }
    assert firing == shipped
    assert silent == set(ALERTS)


def test_every_recording_rule_is_unit_tested() -> None:
    """rules.test.yml checks what each recording rule of alerts.yml records."""
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    assert len(recorded) >= 7
    tests = yaml.safe_load((CONFIG / "rules.test.yml").read_text())["tests"]
    checked: set[str] = set()
    for test in tests:
        for case in test.get("promql_expr_test", []):
            for sample in case.get("exp_samples") or []:
                checked.add(re.split(r"[{\s]", sample["labels"], maxsplit=1)[0])
    assert checked == recorded


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"alertname": "CCEJobFailed", "severity": "critical"}, "on-call-pager"),
        ({"alertname": "CCEJobFailed", "severity": "warning"}, "team-chat"),
        ({"alertname": "CCEJobStuck", "severity": "critical"}, "on-call-pager"),
        ({"alertname": "CCEJobFailureRateHigh", "severity": "critical"}, "on-call-pager"),
        ({"alertname": "CCEClusterUnhealthy", "severity": "critical"}, "on-call-pager"),
        ({"alertname": "CCEExporterDown", "severity": "critical"}, "on-call-pager"),
        ({"alertname": "CCEJobPollFailing", "severity": "warning"}, "team-chat"),
        ({"alertname": "CCEApiThrottled", "severity": "warning"}, "team-chat"),
        ({"alertname": "CCEDiscoveryFailing", "severity": "warning"}, "team-chat"),
        ({"alertname": "CCEWatchListFull", "severity": "warning"}, "team-chat"),
        ({"alertname": "CCEShardsMismatch", "severity": "warning"}, "team-chat"),
    ],
)
def test_alertmanager_pages_critical_alerts_only(labels: dict[str, str], receiver: str) -> None:
    """`amtool config routes test`: critical alerts reach the pager, warnings the chat."""
    amtool = require_program("amtool")
    pairs = [f"{name}={value}" for name, value in labels.items()]
    config = f"--config.file={CONFIG / 'alertmanager.yml'}"
    result = _run(amtool, "config", "routes", "test", config, *pairs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]


def test_job_alerts_name_the_job_type_and_cluster() -> None:
    """The job alerts' texts name the job, its type, its cluster (by name); failures the reason."""
    rules = _alert_rules()
    for name in ("CCEJobFailed", "CCEJobStuck", "CCEJobPollFailing"):
        for rule in rules[name]:
            text = rule["annotations"]["summary"] + rule["annotations"]["description"]
            for label in ("job_id", "job_type", "cluster_id"):
                assert f"$labels.{label}" in text, (name, label)
            assert 'label "cluster_name"' in text, name
    for rule in rules["CCEJobFailed"]:
        assert "$labels.reason" in rule["annotations"]["description"]
    for rule in rules["CCEClusterUnhealthy"]:
        assert "$labels.cluster_name" in rule["annotations"]["summary"]
    for rule in rules["CCEJobFailureRateHigh"]:
        assert "$labels.job_type" in rule["annotations"]["summary"]


def test_compose_file_references_only_files_in_the_repository() -> None:
    """Every bind mount and build context of docker-compose.yml exists in the repository."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"exporter", "prometheus", "alertmanager", "grafana"}
    checked = 0
    for service in compose["services"].values():
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").is_file()
            checked += 1
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), source
                checked += 1
    assert checked >= 5


def test_compose_wires_the_services_as_the_configs_expect() -> None:
    """The Prometheus config scrapes the compose exporter and alerts its Alertmanager."""
    prometheus = yaml.safe_load((CONFIG / "prometheus.yml").read_text())
    scrape = prometheus["scrape_configs"][0]
    assert scrape["job_name"] == "cce-job-exporter"
    assert scrape["static_configs"][0]["targets"] == ["exporter:9849"]
    targets = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
    source = yaml.safe_load((ROOT / "grafana" / "datasources" / "prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((ROOT / "grafana" / "dashboards" / "provider.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/provisioning/dashboards"


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def test_dashboard_is_current_and_uses_its_variables() -> None:
    """The dashboard: recent schema, a datasource variable used by every panel and target."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("project_id", "cluster_id", "job_type"):
        assert variables[name]["datasource"] == DATASOURCE
    for name in ("project_id", "job_type"):
        assert variables[name]["definition"].startswith("label_values(")
    # The cluster picker shows names: the value is the ID, the text the name.
    cluster = variables["cluster_id"]
    assert cluster["definition"].startswith("query_result(")
    assert cluster["query"]["query"] == cluster["definition"]
    assert "cce_cluster_info" in cluster["definition"]
    assert "(?<value>" in cluster["regex"]
    assert "(?<text>" in cluster["regex"]
    assert variables["exporter_url"]["type"] == "textbox"
    ids = [panel["id"] for panel in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    targets = 0
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]
            targets += 1
    assert targets >= 15
    exprs = " ".join(t["expr"] for p in _panels(dashboard) for t in p.get("targets", []))
    for name in ("project_id", "cluster_id", "job_type", "target"):
        assert f"${name}" in exprs
    # The target picker lists the exporter's targets; every panel about the
    # exporter's own API traffic, token and watched jobs follows it.
    assert variables["target"]["definition"] == "label_values(cce_exporter_target_info, target)"
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            for family in (
                "cce_exporter_api_request",
                "cce_exporter_token_expiry",
                "cce_exporter_watched_jobs",
            ):
                if family in target["expr"]:
                    assert 'target=~"$target"' in target["expr"], panel["title"]


def test_dashboard_has_the_panels_a_reader_needs() -> None:
    """Phase counts, a job table, a state timeline, progress, durations and exporter health."""
    dashboard = json.loads(DASHBOARD.read_text())
    kinds = [panel["type"] for panel in _panels(dashboard)]
    for kind in ("stat", "table", "state-timeline", "bargauge", "timeseries"):
        assert kind in kinds
    exprs = " ".join(t["expr"] for p in _panels(dashboard) for t in p.get("targets", []))
    for metric in (
        "cce_job_status_phase",
        "cce_job_info",
        "cce_job_progress_ratio",
        "cce_job_duration_seconds",
        "cce_job_status_reason_info",
        "cce_job_poll_errors_total",
        "cce_exporter_api_request_duration_seconds_bucket",
        'cce_exporter_api_requests_total{code="429", target=~"$target"}',
        "cce_exporter_token_expiry_timestamp_seconds",
    ):
        assert metric in exprs, metric
    table = next(p for p in _panels(dashboard) if p["type"] == "table")
    renamed = set(table["transformations"][1]["options"]["renameByName"].values())
    assert {"Type", "Cluster", "Resource", "Phase", "Progress", "Duration", "Reason"} <= renamed
    # The table's Cluster column is the cluster's name.
    assert table["transformations"][1]["options"]["renameByName"]["cluster_name"] == "Cluster"


def _recorded() -> set[str]:
    groups = yaml.safe_load((CONFIG / "alerts.yml").read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def test_dashboard_has_the_trends_and_the_clusters() -> None:
    """A trends row over 30 days read from recording rules, and the clusters' names and phases."""
    dashboard = json.loads(DASHBOARD.read_text())
    rows = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert "Clusters" in rows
    trends = next(title for title in rows if title.startswith("Trends"))
    panels = dashboard["panels"]
    start = next(i for i, p in enumerate(panels) if p.get("title") == trends)
    end = next((i for i, p in enumerate(panels) if i > start and p["type"] == "row"), len(panels))
    row = panels[start + 1 : end]
    exprs = " ".join(t["expr"] for p in row for t in p["targets"])
    for rule in (
        "cce:jobs_finished:increase1d",
        "cce:job_completion_duration_seconds:quantile1d",
        "cce:subjobs_failed:increase1d",
    ):
        assert rule in exprs, rule
    # Trends read recorded series only: no raw history counter over days.
    for raw in ("cce_jobs_finished_total", "cce_subjobs_failed_total", "_bucket"):
        assert raw not in exprs, raw
    assert 'quantile="0.5"' in exprs
    assert 'quantile="0.95"' in exprs
    for panel in row:
        if panel["type"] == "timeseries":
            assert panel["timeFrom"] == "30d", panel["title"]
            assert panel["interval"] == "1d", panel["title"]
    # Every recording rule the dashboard reads is one that alerts.yml records.
    every = " ".join(t["expr"] for p in _panels(dashboard) for t in p.get("targets", []))
    assert set(re.findall(r"cce:[a-z0-9_:]+", every)) <= _recorded()
    # The clusters: names joined from cce_cluster_info, and the phase over time.
    clusters = [
        p for p in _panels(dashboard) if "cce_cluster_status_phase" in str(p.get("targets"))
    ]
    assert {p["type"] for p in clusters} >= {"table", "state-timeline"}
    for panel in clusters:
        assert "cce_cluster_info" in str(panel["targets"]), panel["title"]


def _links(panel: dict[str, Any]) -> list[str]:
    found = [link["url"] for link in panel["fieldConfig"]["defaults"].get("links", [])]
    for override in panel["fieldConfig"]["overrides"]:
        for prop in override["properties"]:
            if prop["id"] == "links":
                found += [link["url"] for link in prop["value"]]
    return found


def test_dashboard_links_jobs_and_clusters_to_the_status_page() -> None:
    """Job rows, job series and clusters link to the exporter's /jobs page with its filters."""
    dashboard = json.loads(DASHBOARD.read_text())
    by_title = {(panel["type"], panel["title"]): panel for panel in _panels(dashboard)}
    table = _links(by_title["table", "Watched jobs"])
    assert "${exporter_url}/jobs?q=${__value.raw}" in table
    assert "${exporter_url}/jobs?type=${__value.raw}" in table
    assert "${exporter_url}/jobs?cluster=${__data.fields.cluster_id}" in table
    clusters = _links(by_title["table", "Clusters"])
    assert "${exporter_url}/jobs?cluster=${__data.fields.cluster_id}" in clusters
    for kind, title in (
        ("state-timeline", "Phase of each watched job over time"),
        ("bargauge", "Sub-job progress of each watched job"),
    ):
        assert "${exporter_url}/jobs?q=${__field.labels.job_id}" in _links(by_title[kind, title])
    # The parameters are the status page's own filters.
    from exporter.server.statuspage.model import Filters  # noqa: PLC0415 - the page's reader

    filters = Filters.from_query({"q": ["j"], "type": ["t"], "cluster": ["c"]})
    assert (filters.q, filters.type, filters.cluster) == ("j", ("t",), ("c",))


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).is_file():
        return require_program("hadolint")
    return found


def test_dockerfile_passes_hadolint() -> None:
    """Hadolint finds nothing to say about the Dockerfile."""
    result = _run(_hadolint(), "--no-color", str(ROOT / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("path", ["prometheus.yml", "alertmanager.yml", "alerts.yml"])
def test_configs_point_at_no_real_host(path: str) -> None:
    """The examples' receiver hosts are reserved example names, never a real address."""
    text = (CONFIG / path).read_text()
    for url in re.findall(r"https?://([^/:\s]+)", text):
        assert url.endswith(".example") or url in ("localhost", "127.0.0.1"), url
