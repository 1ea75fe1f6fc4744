"""The whole loop with the real programs: exporter, Prometheus, rules, Alertmanager, webhook.

One stack per module: the stand-in CCE API (tests/standins/scenario.py) serves a failed,
a stuck, an unreadable, a throttled, a finished and a young running job, two
jobs that end while watched (one Success, one Failed with failed steps), and
three named clusters, one of them Unavailable; the
real exporter (`python -m exporter`) polls it; a real Prometheus scrapes the
exporter (and a second, dead target) with the shipped scrape config and
evaluates the shipped rules; a real Alertmanager routes the alerts with the
shipped routing tree to a webhook served by the test.

What the test changes in the shipped files, and only that:
- intervals: scrape and evaluation every second instead of 30 s;
- the rules' `for:` durations become 1 s, so that alerts fire in seconds
  instead of minutes, but CCEExporterDown's 20 s (EXPORTER_DOWN_FOR); the
  groups' own evaluation intervals go (the recording rules' 1 min becomes
  the 1 s of every group); every expression, label and annotation is the
  shipped one;
- targets and addresses: loopback, on free ports;
- Alertmanager's group_wait and group_interval become 1 s, and its receivers'
  URLs the test's webhook.
"""

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.standins import scenario
from tests.standins.cce import PROJECT_ID
from tests.standins.processes import (
    require_program,
    reserved_port,
    running_exporter,
    start_server,
    stop,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "config"
DASHBOARD = ROOT / "grafana" / "dashboards" / "cce-jobs.json"
# How long the test waits for the whole loop; it takes about 25 s.
DEADLINE = 90.0
# CCEExporterDown's `for:` here. Its `absent(up{job="cce-job-exporter"})` branch
# holds from Prometheus' start until its first scrape (a few seconds, more on a
# busy machine): with 1 s, that start-up absence could fire and reach the
# webhook as an alert without an instance. The dead target's alert still fires
# well within DEADLINE.
EXPORTER_DOWN_FOR = "20s"
# The scenario's jobs, and those that end while watched (the history's counts).
WATCHED = scenario.SCENARIO_JOBS + scenario.MOVING_JOBS
CLUSTER_NAMES = {cluster_id: name for cluster_id, name, _, _ in scenario.CLUSTERS}
# Queries that have data only with IAM authentication (the stand-in uses a token).
IAM_ONLY = ("cce_exporter_token_expiry_timestamp_seconds",)
# What has data last: a rate (two scrapes that saw a counter move), and the
# recording rules of the trends (a watched job that ended, then an evaluation).
SLOWEST = (
    "rate(cce_exporter_api_requests_total[15s]) > 0",
    "cce:jobs_finished:increase1d",
    "cce:subjobs_failed:increase1d",
    "cce:job_completion_duration_seconds:quantile1d",
)


@dataclass
class Stack:
    """The running loop: where each part answers and what the webhook got."""

    servers: scenario.Servers
    exporter_url: str
    prometheus_url: str
    alertmanager_url: str
    dead_target: str


def _shortened_rules(target: Path) -> None:
    """Copy the shipped rules with every `for:` at 1 s (one at 20 s), evaluated every second."""
    rules = yaml.safe_load((CONFIG / "alerts.yml").read_text())
    for group in rules["groups"]:
        group.pop("interval", None)
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = EXPORTER_DOWN_FOR if rule["alert"] == "CCEExporterDown" else "1s"
    target.write_text(yaml.safe_dump(rules, sort_keys=False))


def _prometheus_config(target: Path, rules: Path, exporter: str, dead: str, am: str) -> None:
    config = yaml.safe_load((CONFIG / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(rules)]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [am]
    scrape = config["scrape_configs"][0]
    scrape["scrape_interval"] = "1s"
    scrape["scrape_timeout"] = "1s"
    shipped = scrape["static_configs"][0]["labels"]
    scrape["static_configs"] = [
        {"targets": [exporter], "labels": shipped},
        {"targets": [dead], "labels": {**shipped, "__display_name": "dead-exporter"}},
    ]
    target.write_text(yaml.safe_dump(config, sort_keys=False))


def _alertmanager_config(target: Path, webhook: str) -> None:
    config = yaml.safe_load((CONFIG / "alertmanager.yml").read_text())
    routes = [config["route"]]
    while routes:
        route = routes.pop()
        route["group_wait"] = "1s"
        route["group_interval"] = "1s"
        routes.extend(route.get("routes", []))
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook
    target.write_text(yaml.safe_dump(config, sort_keys=False))


def _wait_for_cluster_names(exporter_url: str) -> None:
    """Wait until the exporter has read the cluster lists (its first refresh, at start)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        with urllib.request.urlopen(f"{exporter_url}/metrics", timeout=10) as response:  # noqa: S310 - loopback only
            if b"cce_cluster_info{" in response.read():
                return
        assert time.monotonic() < deadline, "the exporter never read the cluster lists"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Run the whole loop for the tests of this module."""
    prometheus = require_program("prometheus")
    alertmanager = require_program("prometheus-alertmanager")
    work = tmp_path_factory.mktemp("monitoring")
    processes: list[subprocess.Popen[bytes]] = []
    # A bound socket that never listens: a scrape target that refuses connections.
    with (
        scenario.serving() as servers,
        running_exporter(servers.api_url, WATCHED, work / "exporter.log") as exporter_url,
        reserved_port() as dead_port,
    ):
        try:
            # The cluster names are in the first scrape: the alerts' texts name them.
            _wait_for_cluster_names(exporter_url)
            _alertmanager_config(work / "alertmanager.yml", servers.webhook_url)
            alertmanager_process, am_url = start_server(
                lambda port: [
                    alertmanager,
                    f"--config.file={work / 'alertmanager.yml'}",
                    f"--storage.path={work / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--cluster.listen-address=",
                    "--log.level=warn",
                ],
                work / "alertmanager.log",
                "/-/ready",
            )
            processes.append(alertmanager_process)
            _shortened_rules(work / "alerts.yml")
            dead_target = f"127.0.0.1:{dead_port}"
            _prometheus_config(
                work / "prometheus.yml",
                work / "alerts.yml",
                exporter_url.removeprefix("http://"),
                dead_target,
                am_url.removeprefix("http://"),
            )
            prometheus_process, prom_url = start_server(
                lambda port: [
                    prometheus,
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                work / "prometheus.log",
                "/-/ready",
            )
            processes.append(prometheus_process)
            yield Stack(servers, exporter_url, prom_url, am_url, dead_target)
        finally:
            for process in processes:
                stop(process)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback only
        return json.load(response)


def query(stack: Stack, expr: str, *, range_seconds: float = 0) -> dict[str, Any]:
    """Run a PromQL query (instant, or a range ending now); return the API's answer."""
    if range_seconds:
        now = time.time()
        params = {"query": expr, "start": now - range_seconds, "end": now, "step": 1}
        url = f"{stack.prometheus_url}/api/v1/query_range?{urllib.parse.urlencode(params)}"
    else:
        url = f"{stack.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        answer: dict[str, Any] = _get_json(url)
    except urllib.error.HTTPError as exc:
        answer = json.load(exc)
    return answer


def _job_ids(stack: Stack, expr: str) -> set[str]:
    """The job IDs of the series an instant query returns."""
    return {series["metric"]["job_id"] for series in query(stack, expr)["data"]["result"]}


@pytest.fixture(scope="module")
def scraped(stack: Stack) -> None:
    """The loop once Prometheus holds every watched job: its tree, or its failing polls."""
    readable = {scenario.FAILED_JOB, scenario.STUCK_JOB, scenario.DONE_JOB, scenario.RUNNING_JOB}
    readable |= set(scenario.MOVING_JOBS)
    unreadable = {scenario.FAILING_JOB, scenario.THROTTLED_JOB}

    def holds_all() -> bool:
        return (
            _job_ids(stack, 'cce_job_info{depth="0"}') == readable
            and _job_ids(stack, "cce_job_poll_success == 0") == unreadable
        )

    deadline = time.monotonic() + DEADLINE
    while not holds_all():
        assert time.monotonic() < deadline, "Prometheus never held every watched job"
        time.sleep(0.5)


def _alerts_by_key(stack: Stack) -> dict[tuple[str, str], dict[str, Any]]:
    """The firing alerts the webhook received, by (alertname, job_id, cluster_id or instance)."""
    alerts: dict[tuple[str, str], dict[str, Any]] = {}
    for notification in stack.servers.received():
        for alert in notification["alerts"]:
            if alert["status"] != "firing":
                continue
            labels = alert["labels"]
            subject = labels.get("job_id") or labels.get("cluster_id") or labels.get("instance")
            key = (labels["alertname"], subject or "")
            alerts[key] = alert | {"receiver": notification["receiver"]}
    return alerts


EXPECTED = {
    ("CCEJobFailed", scenario.FAILED_JOB),
    ("CCEJobStuck", scenario.STUCK_JOB),
    ("CCEJobPollFailing", scenario.FAILING_JOB),
    ("CCEJobPollFailing", scenario.THROTTLED_JOB),
    ("CCEApiThrottled", "demo-exporter"),
    ("CCEExporterDown", "dead-exporter"),
    # A scale-up that failed: a warning, not a page.
    ("CCEJobFailed", scenario.FAILING_STEPS_JOB),
    ("CCEClusterUnhealthy", scenario.CLUSTER_B),
}


def test_alerts_reach_the_webhook_with_rendered_annotations(stack: Stack) -> None:
    """Each expected alert arrives at the webhook, routed and with its texts filled in."""
    deadline = time.monotonic() + DEADLINE
    alerts = _alerts_by_key(stack)
    while not set(alerts) >= EXPECTED and time.monotonic() < deadline:
        time.sleep(0.5)
        alerts = _alerts_by_key(stack)
    assert set(alerts) >= EXPECTED, f"missing {EXPECTED - set(alerts)}; got {sorted(alerts)}"
    # Nothing for the finished job, the young running one, or a sub-job.
    assert set(alerts) == EXPECTED

    failed = alerts["CCEJobFailed", scenario.FAILED_JOB]
    assert failed["receiver"] == "on-call-pager"
    for key, value in {
        "severity": "critical",
        "job_type": "CreateCluster",
        "cluster_id": scenario.CLUSTER_A,
        "resource_name": "prod-cluster",
        "reason": scenario.FAILURE_REASON,
        "region": "cn-north-4",
        "environment": "demo",
        "project_id": PROJECT_ID,
    }.items():
        assert failed["labels"][key] == value, key
    # No instance: a restarted exporter (a new pod IP) must not make it a new alert.
    assert "instance" not in failed["labels"]
    # Named by the cluster's name from the cluster list.
    cluster_a = CLUSTER_NAMES[scenario.CLUSTER_A]
    assert failed["annotations"]["summary"] == (
        f"CCE CreateCluster job {scenario.FAILED_JOB} failed on cluster {cluster_a}"
    )
    assert failed["annotations"]["description"] == (
        f"The CreateCluster job {scenario.FAILED_JOB} for prod-cluster on cluster "
        f"{cluster_a} ({scenario.CLUSTER_A}) in project {PROJECT_ID} ended Failed. "
        f"Reason: {scenario.FAILURE_REASON}. Failed steps: InstallMaster."
    )
    assert failed["annotations"]["runbook"].startswith("Open the job in the CCE console")
    assert failed["annotations"]["runbook_url"].endswith("/monitoring.md#ccejobfailed")

    routine = alerts["CCEJobFailed", scenario.FAILING_STEPS_JOB]
    assert routine["receiver"] == "team-chat"
    assert routine["labels"]["severity"] == "warning"
    assert routine["labels"]["job_type"] == "ScaleupCluster"

    unhealthy = alerts["CCEClusterUnhealthy", scenario.CLUSTER_B]
    assert unhealthy["receiver"] == "on-call-pager"
    cluster_b = CLUSTER_NAMES[scenario.CLUSTER_B]
    assert unhealthy["labels"]["cluster_name"] == cluster_b
    assert unhealthy["labels"]["severity"] == "critical"
    assert unhealthy["annotations"]["summary"] == f"CCE cluster {cluster_b} is Unavailable"
    assert unhealthy["annotations"]["runbook_url"].endswith("/monitoring.md#cceclusterunhealthy")

    stuck = alerts["CCEJobStuck", scenario.STUCK_JOB]
    assert stuck["receiver"] == "on-call-pager"
    assert stuck["labels"]["job_type"] == "CreateNode"
    assert stuck["labels"]["cluster_id"] == scenario.CLUSTER_B
    # Only labels a running job keeps: its resource can appear mid-run.
    assert not {"instance", "resource_id", "resource_name"} & set(stuck["labels"])
    assert re.fullmatch(
        rf"CCE CreateNode job {scenario.STUCK_JOB} on cluster {cluster_b} "
        r"has not finished after 3h 0m \d+s",
        stuck["annotations"]["summary"],
    ), stuck["annotations"]["summary"]
    assert re.fullmatch(
        rf"The CreateNode job {scenario.STUCK_JOB} for node-7 on cluster {cluster_b} "
        rf"\({scenario.CLUSTER_B}\) "
        rf"in project {PROJECT_ID} was created 3h 0m \d+s ago and is still not "
        r"finished; jobs of this type should take less than 45m 0s\.",
        stuck["annotations"]["description"],
    ), stuck["annotations"]["description"]

    failing = alerts["CCEJobPollFailing", scenario.FAILING_JOB]
    assert failing["receiver"] == "team-chat"
    assert failing["labels"]["severity"] == "warning"
    assert failing["annotations"]["summary"] == (
        f"cce-job-exporter cannot read CCE job {scenario.FAILING_JOB} (type not known yet)"
    )
    assert failing["annotations"]["description"].endswith("errors: server_error.")
    throttled_job = alerts["CCEJobPollFailing", scenario.THROTTLED_JOB]
    assert throttled_job["annotations"]["description"].endswith("errors: throttled.")

    throttled = alerts["CCEApiThrottled", "demo-exporter"]
    assert throttled["labels"]["operation"] == "show_job"
    assert throttled["labels"]["target"] == "default"  # the exporter's one implicit target
    # The target labels reach this alert too.
    assert throttled["labels"]["region"] == "cn-north-4"
    assert throttled["labels"]["environment"] == "demo"
    assert throttled["annotations"]["summary"] == (
        "The CCE API is throttling cce-job-exporter demo-exporter (default, show_job)"
    )

    down = alerts["CCEExporterDown", "dead-exporter"]
    assert down["receiver"] == "on-call-pager"
    assert down["annotations"]["summary"] == "cce-job-exporter dead-exporter is down"


def _poll_failing_groups(stack: Stack) -> list[tuple[dict[str, str], set[str]]]:
    """The CCEJobPollFailing notifications: their group labels and the jobs they list."""
    return [
        (
            notification["groupLabels"],
            {alert["labels"]["job_id"] for alert in notification["alerts"]},
        )
        for notification in stack.servers.received()
        if notification["groupLabels"].get("alertname") == "CCEJobPollFailing"
    ]


def test_failing_polls_of_a_project_make_one_notification(stack: Stack) -> None:
    """Every job of a project whose polls fail is listed in one notification, not one each."""
    wanted = {scenario.FAILING_JOB, scenario.THROTTLED_JOB}
    deadline = time.monotonic() + DEADLINE
    groups = _poll_failing_groups(stack)
    while not any(jobs >= wanted for _, jobs in groups) and time.monotonic() < deadline:
        time.sleep(0.5)
        groups = _poll_failing_groups(stack)
    assert any(jobs >= wanted for _, jobs in groups), groups
    for labels, _ in groups:
        assert labels == {"alertname": "CCEJobPollFailing", "project_id": PROJECT_ID}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        inner
        for panel in dashboard["panels"]
        for inner in [panel, *panel.get("panels", [])]
        if inner.get("targets")
    ]


def _variable_values(variable: dict[str, Any], stack: Stack, chosen: dict[str, str]) -> list[str]:
    """Run a variable's query as Grafana would; return the values (not the texts) it offers."""
    return sorted(value for value, _ in _variable_options(variable, stack, chosen))


def _variable_options(
    variable: dict[str, Any], stack: Stack, chosen: dict[str, str]
) -> list[tuple[str, str]]:
    """A variable's options as (value, text), from its query as Grafana runs it.

    `label_values(selector, label)`, or `query_result(expr)` whose lines Grafana
    matches with the variable's regex (named groups `value` and `text`; either
    stands in for the other).
    """
    definition = variable["definition"]
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", definition)
    if match:
        selector, label = match.groups()
        answer = query(stack, f"group by ({label}) ({_fill(selector, chosen)})")
        assert answer["status"] == "success", (definition, answer)
        values = {series["metric"].get(label, "") for series in answer["data"]["result"]}
        return [(value, value) for value in values]
    match = re.fullmatch(r"query_result\((.*)\)", definition, flags=re.DOTALL)
    assert match, definition
    answer = query(stack, _fill(match.group(1), chosen))
    assert answer["status"] == "success", (definition, answer)
    # Grafana's line for each series: name{label="value",...} value timestamp-in-ms,
    # the labels in the order Prometheus gives them (sorted).
    pattern = re.compile(variable["regex"].strip("/").replace("(?<", "(?P<"))
    options: dict[str, str] = {}
    for series in answer["data"]["result"]:
        metric = dict(series["metric"])
        labels = ",".join(f'{k}="{v}"' for k, v in metric.items() if k != "__name__")
        timestamp, value = series["value"]
        line = f"{metric.get('__name__', '')}{{{labels}}} {value} {round(timestamp * 1000)}"
        found = pattern.search(line)
        if found:
            groups = {k: v for k, v in found.groupdict().items() if v}
            value_of = groups.get("value", groups.get("text"))
            if value_of is not None:
                options.setdefault(value_of, groups.get("text", value_of))
    return list(options.items())


def _grafana_escape(value: str) -> str:
    """Escape a value for a regex matcher in a PromQL string, as Grafana does."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m.group(0), value)


def _fill(expr: str, chosen: dict[str, str]) -> str:
    """Substitute the dashboard's variables the way Grafana does for Prometheus."""
    for name, value in chosen.items():
        expr = expr.replace(f"${name}", value)
    expr = expr.replace("$__rate_interval", "15s").replace("$__interval", "1s")
    return expr.replace("$__range", "5m")


def test_every_dashboard_query_answers_with_data(stack: Stack) -> None:
    """With its variables filled in, every query of the dashboard runs and returns data."""
    dashboard = json.loads(DASHBOARD.read_text())
    # Fill the variables in order, each from its own query, as Grafana does,
    # selecting every value it offers (a multi-value selection: "(a|b)").
    chosen: dict[str, str] = {}
    deadline = time.monotonic() + DEADLINE
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        values = _variable_values(variable, stack, chosen)
        while not values and time.monotonic() < deadline:
            time.sleep(0.5)
            values = _variable_values(variable, stack, chosen)
        assert values, variable["name"]
        chosen[variable["name"]] = "(" + "|".join(_grafana_escape(v) for v in values) + ")"
    assert PROJECT_ID in chosen["project_id"]
    assert scenario.CLUSTER_A in chosen["cluster_id"]
    assert "CreateCluster" in chosen["job_type"]

    # Rates need a few scrapes, the trends a job that ended and the recording
    # rules' next evaluation: wait until the slowest kinds of query have data.
    for slowest in SLOWEST:
        while not query(stack, slowest)["data"]["result"] and time.monotonic() < deadline:
            time.sleep(0.5)

    checked = 0
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            expr = _fill(target["expr"], chosen)
            # Every variable filled ("$1" is label_replace's, not Grafana's).
            assert not re.search(r"\$[A-Za-z_{]", expr), (panel["title"], expr)
            answer = query(stack, expr, range_seconds=0 if target.get("instant") else 30)
            assert answer["status"] == "success", (panel["title"], expr, answer)
            checked += 1
            if any(name in expr for name in IAM_ONLY):
                continue
            assert answer["data"]["result"], (panel["title"], expr)
    assert checked >= 15


@pytest.mark.usefixtures("scraped")
def test_dashboard_table_shows_the_failed_job(stack: Stack) -> None:
    """The table's queries give the failed job's phase, progress, duration and reason."""
    dashboard = json.loads(DASHBOARD.read_text())
    table = next(p for p in _panels(dashboard) if p["type"] == "table")
    everything = {"project_id": ".*", "cluster_id": ".*", "job_type": ".*"}
    rows: dict[str, dict[str, Any]] = {}
    for target in table["targets"]:
        answer = query(stack, _fill(target["expr"], everything))
        for series in answer["data"]["result"]:
            row = rows.setdefault(series["metric"]["job_id"], {})
            row.update(series["metric"])
            row[target["refId"]] = float(series["value"][1])
    failed = rows[scenario.FAILED_JOB]
    assert failed["phase"] == "Failed"
    assert failed["reason"] == scenario.FAILURE_REASON
    # The Cluster column is the cluster's name.
    assert failed["cluster_name"] == CLUSTER_NAMES[scenario.CLUSTER_A]
    assert rows[scenario.STUCK_JOB]["cluster_name"] == CLUSTER_NAMES[scenario.CLUSTER_B]
    assert failed["C"] == 0.5  # one of its two sub-jobs succeeded
    assert failed["D"] == pytest.approx(1800, abs=1)  # 0.7 h - 0.2 h
    assert rows[scenario.STUCK_JOB]["D"] == pytest.approx(3 * 3600, abs=30)
    # Only watched jobs are rows: no sub-job, and the unreadable jobs have no tree.
    assert set(rows) == {
        scenario.FAILED_JOB,
        scenario.STUCK_JOB,
        scenario.DONE_JOB,
        scenario.RUNNING_JOB,
        *scenario.MOVING_JOBS,
    }


@pytest.mark.usefixtures("scraped")
def test_dashboard_failing_polls_follow_the_cluster_and_type(stack: Stack) -> None:
    """Failing-poll panels count never-read jobs under "All" only, and follow the filters."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = {panel["title"]: panel for panel in _panels(dashboard)}
    count = panels["Jobs whose polls fail"]["targets"][0]["expr"]
    by_kind = panels["Failed polls by kind"]["targets"][0]["expr"]
    everything = {"project_id": ".*", "cluster_id": ".*", "job_type": ".*"}
    one_cluster = everything | {"cluster_id": scenario.CLUSTER_A}
    # The two unreadable jobs were never read: no type, no cluster.
    answer = query(stack, _fill(count, everything))
    assert [float(s["value"][1]) for s in answer["data"]["result"]] == [2.0]
    answer = query(stack, _fill(count, one_cluster))
    assert [float(s["value"][1]) for s in answer["data"]["result"]] == [0.0]

    def failing_kinds(chosen: dict[str, str]) -> set[str]:
        answer = query(stack, _fill(by_kind, chosen))
        return {s["metric"]["error"] for s in answer["data"]["result"] if float(s["value"][1])}

    deadline = time.monotonic() + DEADLINE
    while not failing_kinds(everything) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert failing_kinds(everything) <= {"server_error", "throttled"}
    assert failing_kinds(everything)
    # The readable jobs of cluster A fail no poll; the unreadable ones are left out.
    assert failing_kinds(one_cluster) == set()


def _example_queries() -> list[str]:
    """The PromQL examples of docs/monitoring.md, one query per comment-headed block."""
    guide = (ROOT / "docs" / "monitoring.md").read_text()
    opening = guide.index("```promql", guide.index("## Example queries")) + len("```promql")
    block = guide[opening : guide.index("```", opening)]
    queries, current = [], []
    for line in block.strip().splitlines():
        if line.startswith("#"):
            if current:
                queries.append("\n".join(current))
            current = []
        elif line.strip():
            current.append(line)
    queries.append("\n".join(current))
    return queries


def test_example_queries_answer(stack: Stack) -> None:
    """Every example query of docs/monitoring.md runs against the real Prometheus and returns data.

    A query over a rate of errors needs two scrapes that saw the counter move,
    so each query is given up to 30 s to return data.
    """
    queries = _example_queries()
    assert len(queries) >= 6
    for expr in queries:
        deadline = time.monotonic() + 30
        while True:
            answer = query(stack, expr)
            assert answer["status"] == "success", (expr, answer)
            if answer["data"]["result"] or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert answer["data"]["result"], expr


def _link_urls(panel: dict[str, Any]) -> dict[str, str]:
    """The data links of a table's columns, by column."""
    urls = {}
    for override in panel["fieldConfig"]["overrides"]:
        for prop in override["properties"]:
            if prop["id"] == "links":
                urls[override["matcher"]["options"]] = prop["value"][0]["url"]
    return urls


def _status_page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback only
        assert response.status == 200
        body: str = response.read().decode()
    return body


@pytest.mark.usefixtures("scraped")
def test_dashboard_links_open_the_job_and_its_cluster_on_the_status_page(stack: Stack) -> None:
    """The job table's links, filled in as Grafana does, open /jobs on that job and cluster."""
    dashboard = json.loads(DASHBOARD.read_text())
    table = next(p for p in _panels(dashboard) if p["type"] == "table")
    urls = _link_urls(table)

    def fill(url: str, value: str) -> str:
        url = url.replace("${exporter_url}", stack.exporter_url)
        fields = {"${__value.raw}": value, "${__data.fields.cluster_id}": scenario.CLUSTER_A}
        for name, text in fields.items():
            url = url.replace(name, urllib.parse.quote(text, safe=""))
        assert "$" not in url, url
        return url

    job = _status_page(fill(urls["Job"], scenario.FAILED_JOB))
    assert scenario.FAILED_JOB in job
    assert scenario.STUCK_JOB not in job
    # The failed job's cluster (A) holds it and the finished one, not the stuck job (B).
    cluster = _status_page(fill(urls["Cluster"], scenario.CLUSTER_A))
    assert scenario.FAILED_JOB in cluster
    assert scenario.DONE_JOB in cluster
    assert scenario.STUCK_JOB not in cluster
    kind = _status_page(fill(urls["Type"], "CreateNode"))
    assert scenario.STUCK_JOB in kind
    assert scenario.FAILED_JOB not in kind


@pytest.mark.usefixtures("scraped")
def test_the_cluster_picker_shows_the_clusters_by_name(stack: Stack) -> None:
    """The cluster variable offers every listed cluster: its ID as value, its name as text."""
    dashboard = json.loads(DASHBOARD.read_text())
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "cluster_id")
    options = dict(_variable_options(variable, stack, {"project_id": ".*"}))
    assert options == CLUSTER_NAMES


def _trend_values(stack: Stack, expr: str, label: str) -> dict[str, float]:
    """One instant query of a trends panel, every variable at "All": value by `label`."""
    everything = {"project_id": ".*", "cluster_id": ".*", "job_type": ".*"}
    answer = query(stack, _fill(expr, everything))
    return {s["metric"][label]: float(s["value"][1]) for s in answer["data"]["result"]}


@pytest.mark.usefixtures("scraped")
def test_the_trends_count_the_jobs_that_ended_while_watched(stack: Stack) -> None:
    """The trends panels, through the recording rules, count the two jobs that ended."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = {panel["title"]: panel for panel in _panels(dashboard)}
    finished = panels["Finished jobs per day, by type and result"]["targets"][0]["expr"]
    ratio = panels["Failure ratio by type, per day"]["targets"][0]["expr"]
    steps = panels["Sub-job types that fail most (last 24 hours)"]["targets"][0]["expr"]
    # The jobs the exporter saw end: one CreateNode succeeded, one ScaleupCluster
    # failed (two failed steps). Those that ended before it started do not count.
    wanted = {"CreateNode Success": 1.0, "ScaleupCluster Failed": 1.0}
    answer: dict[str, float] = {}
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        result = query(
            stack, _fill(finished, {"project_id": ".*", "cluster_id": ".*", "job_type": ".*"})
        )
        answer = {
            f"{s['metric']['job_type']} {s['metric']['phase']}": round(float(s["value"][1]))
            for s in result["data"]["result"]
        }
        if answer == wanted:
            break
        time.sleep(0.5)
    assert answer == wanted
    assert _trend_values(stack, ratio, "job_type") == {"CreateNode": 0.0, "ScaleupCluster": 1.0}
    failed_steps = _trend_values(stack, steps, "subjob_type")
    assert {k: round(v) for k, v in failed_steps.items()} == {"InstallNode": 1, "InstallAddons": 1}
