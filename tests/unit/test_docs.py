import re
from pathlib import Path

import pytest

from exporter.jobs.clusters import EMPTY_DIRECTORY
from exporter.metrics.cce_cluster import ClusterCollector
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.cce_job import FAMILIES
from exporter.metrics.history import JobHistory
from exporter.settings.load import load_settings
from exporter.settings.model import Settings

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
README_MAX_LINES = 250


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
    instruments = Instruments()
    JobHistory(instruments.registry, started=0.0, retention=0.0)
    instruments.registry.register(ClusterCollector({"p": lambda: EMPTY_DIRECTORY}))
    registry_names = [
        metric.name + ("_total" if metric.type == "counter" else "")
        for metric in instruments.registry.collect()
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


def test_readme_configuration_is_valid(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The README's smallest real configuration loads without a problem (given its secret files)."""
    section = README[README.index("\n## A real configuration\n") :]
    opening = section.index("```yaml\n") + len("```yaml\n")
    text = section[opening : section.index("```", opening)]
    settings = _load_with_secret_files(text, tmp_path)
    assert list(settings.job_ids) == ["354331b2c-229a-11e8-9c75-0255ac100ceb"]
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


def _prose(markdown: str) -> str:
    """Markdown without its fenced code blocks."""
    return re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", markdown, flags=re.MULTILINE | re.DOTALL)


def _links(markdown: str) -> list[str]:
    """The targets of the inline links and images of a Markdown text, outside code."""
    text = re.sub(r"`[^`\n]*`", "", _prose(markdown))
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)


def _anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown text.

    Lowercase; punctuation dropped but for hyphens, spaces and underscores (GitHub
    keeps word characters); spaces to hyphens; a repeated slug gets -1, -2, ...
    """
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} +(.+?) *#* *$", _prose(markdown), flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_readme_is_a_short_front_door_to_every_guide() -> None:
    """README.md has at most 250 lines and links every guide in docs/."""
    assert len(README.splitlines()) <= README_MAX_LINES
    linked = {target.split("#")[0] for target in _links(README)}
    guides = sorted(DOCS.glob("*.md"))
    assert len(guides) >= 8
    assert [g.name for g in guides if f"docs/{g.name}" not in linked] == []


@pytest.mark.parametrize(
    "document",
    [ROOT / "README.md", *sorted(DOCS.glob("*.md"))],
    ids=lambda path: path.relative_to(ROOT).as_posix(),
)
def test_relative_links_resolve(document: Path) -> None:
    """Every relative link of the document names an existing file, and an existing heading."""
    broken = []
    for target in _links(document.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:|//", target):
            continue  # another site
        path_part, _, anchor = target.partition("#")
        path = (document.parent / path_part).resolve() if path_part else document
        if not path.exists():
            broken.append(target)
            continue
        if anchor and path.suffix == ".md" and anchor not in _anchors(path.read_text()):
            broken.append(target)
    assert broken == []
