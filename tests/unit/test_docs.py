import re
from pathlib import Path

import pytest

from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.cce_job import FAMILIES
from exporter.settings.load import load_settings
from exporter.settings.model import Settings

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"


def _guide(name: str) -> str:
    return (DOCS / name).read_text()


def _table_names(text: str) -> set[str]:
    """The backticked first-column names of the tables in a text."""
    return set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE))


def _cells(row: str) -> list[str]:
    """The cells of a Markdown table row, split on the pipes that are not escaped."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def _metric_rows() -> list[dict[str, str]]:
    """Every row of the tables in docs/metrics.md, keyed by the column names."""
    rows: list[dict[str, str]] = []
    header: list[str] = []
    for line in _guide("metrics.md").splitlines():
        if not line.startswith("|"):
            header = []
        elif not header:
            header = _cells(line)
        elif not set(line) <= set("|-: "):
            rows.append(dict(zip(header, _cells(line), strict=True)))
    return rows


def _served_metrics() -> list[str]:
    """The exposed names of every cce_ metric the exporter serves."""
    registry_names = [
        metric.name + ("_total" if metric.type == "counter" else "")
        for metric in Instruments().registry.collect()
        if metric.name.startswith("cce_")
    ]
    return registry_names + [family.value[0] for family in FAMILIES]


def test_configuration_guide_documents_every_setting() -> None:
    """The tables of docs/configuration.md list exactly the settings the code has."""
    assert _table_names(_guide("configuration.md")) == set(Settings.model_fields)


def test_metrics_guide_documents_every_metric() -> None:
    """docs/metrics.md has one row for each metric the exporter serves, and no other."""
    documented = [row["metric"].strip("`") for row in _metric_rows()]
    assert sorted(documented) == sorted(_served_metrics())


def test_metrics_guide_names_the_file_declaring_each_metric() -> None:
    """Each row's file exists and holds the metric's exposed name as a quoted string."""
    rows = _metric_rows()
    assert rows
    wrong = []
    for row in rows:
        name, file = row["metric"].strip("`"), row["file"].strip("`")
        path = ROOT / file
        if not path.is_file() or f'"{name}"' not in path.read_text():
            wrong.append((name, file))
    assert wrong == []


def _load_with_secret_files(text: str, tmp_path: Path) -> Settings:
    """Load a YAML settings text whose /run/secrets/cce-* files are made up for the test."""
    for name in ("access-key", "secret-key"):
        secret = tmp_path / name
        secret.write_text(f"example-{name}\n")
        text = text.replace(f"/run/secrets/cce-{name}", str(secret))
    settings_file = tmp_path / "exporter.yml"
    settings_file.write_text(text)
    return load_settings({}, settings_file)


def test_example_settings_file_is_valid(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """config/exporter.example.yml loads without a problem (given its secret files)."""
    text = (ROOT / "config" / "exporter.example.yml").read_text()
    settings = _load_with_secret_files(text, tmp_path)
    assert settings.project_id == "0123456789abcdef0123456789abcdef"
    assert settings.auth_method == "aksk"


def _logged_events() -> set[str]:
    """The event names the exporter's code logs, through `event` or `crash`."""
    call = re.compile(r'(?:\bevent\(\s*\w+,\s*logging\.\w+,\s*|\bcrash\(\s*\w+,\s*)"([a-z_]+)"')
    return {
        name
        for path in (ROOT / "exporter").rglob("*.py")
        for name in call.findall(path.read_text())
    }


def test_operations_guide_names_every_log_event() -> None:
    """Every event the exporter logs is named in docs/operations.md, for operators to look up."""
    events = _logged_events()
    assert {"job_poll_failing", "poll_crashed", "loop_ended", "listening"} <= events
    operations = _guide("operations.md")
    assert sorted(name for name in events if f"`{name}`" not in operations) == []
