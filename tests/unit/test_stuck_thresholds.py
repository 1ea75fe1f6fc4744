import re
from pathlib import Path
from typing import Any

import yaml

from exporter.server.statuspage.page import PAGE_SIZE
from exporter.server.statuspage.stuck import DEFAULT_STUCK_THRESHOLD, STUCK_THRESHOLDS

ALERTS = Path(__file__).parents[2] / "config" / "alerts.yml"


def _group(name: str) -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    rules: list[dict[str, Any]] = next(g["rules"] for g in groups if g["name"] == name)
    return rules


def _seconds(expr: str) -> int:
    match = re.fullmatch(r"vector\((\d+)\)", expr.strip())
    assert match is not None, expr
    return int(match.group(1))


def test_status_page_stuck_thresholds_are_the_alert_s() -> None:
    """The status page's stuck thresholds equal those of config/alerts.yml, type for type."""
    rules = _group("cce-job-stuck-thresholds")
    per_type = {
        rule["labels"]["job_type"]: _seconds(rule["expr"])
        for rule in rules
        if rule["record"] == "cce:job_stuck_threshold_seconds"
    }
    (default,) = (
        _seconds(rule["expr"])
        for rule in rules
        if rule["record"] == "cce:job_stuck_default_threshold_seconds"
    )
    assert dict(STUCK_THRESHOLDS) == per_type
    assert default == DEFAULT_STUCK_THRESHOLD


def test_monitoring_guide_states_the_page_size() -> None:
    """docs/monitoring.md states the status page's page size as the code has it."""
    guide = " ".join((ALERTS.parents[1] / "docs" / "monitoring.md").read_text().split())
    assert f"At most {PAGE_SIZE} jobs a page" in guide
