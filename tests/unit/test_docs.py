import re
from pathlib import Path

import pytest

from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.cce_job import FAMILIES
from exporter.settings.load import load_settings
from exporter.settings.model import Settings

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()


def _table_names(section: str) -> set[str]:
    """The backticked first-column names of the tables under a README heading."""
    start = README.index(f"\n## {section}\n")
    end = README.find("\n## ", start + 1)
    body = README[start : end if end != -1 else None]
    return set(re.findall(r"^\| `([a-z_]+)` \|", body, flags=re.MULTILINE))


def test_readme_documents_every_setting() -> None:
    """The README's configuration table lists exactly the settings the code has."""
    assert _table_names("Configuration") == set(Settings.model_fields)


def test_readme_documents_every_metric() -> None:
    """Every metric in the README's catalogue is one the exporter serves, and vice versa."""
    registry_names = {
        metric.name + ("_total" if metric.type == "counter" else "")
        for metric in Instruments().registry.collect()
        if metric.name.startswith("cce_")
    }
    family_names = {family.value[0] for family in FAMILIES}
    assert _table_names("Metrics") == registry_names | family_names


def test_example_settings_file_is_valid(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """config/exporter.example.yml loads without a problem (given its secret files)."""
    text = (ROOT / "config" / "exporter.example.yml").read_text()
    for name in ("access-key", "secret-key"):
        secret = tmp_path / name
        secret.write_text(f"example-{name}\n")
        text = text.replace(f"/run/secrets/cce-{name}", str(secret))
    example = tmp_path / "exporter.yml"
    example.write_text(text)
    settings = load_settings({}, example)
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


def test_readme_names_every_log_event() -> None:
    """Every event the exporter logs is named in the README, so an operator can look it up."""
    events = _logged_events()
    assert {"job_poll_failing", "poll_crashed", "loop_ended", "listening"} <= events
    assert sorted(name for name in events if f"`{name}`" not in README) == []
