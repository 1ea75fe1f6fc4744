import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

import exporter.settings.model
from exporter.app import run_once
from exporter.cli import build_parser, main
from exporter.settings.load import ConfigError, load_settings
from exporter.settings.model import Settings
from tests.standins.cce import PROJECT_ID, TOKEN, FakeCCE

BASE = {"endpoint": "https://cce.example.com", "project_id": "p1", "auth_token": "t"}


def _problems(excinfo: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    return {problem.setting: problem.message for problem in excinfo.value.problems}


@pytest.mark.usefixtures("clean_env")
def test_defaults_of_the_new_settings() -> None:
    """Discovery is off, one shard, 10000 jobs at most, no admin API by default."""
    settings = load_settings(BASE)
    assert settings.discover is False
    assert settings.discover_interval == 60
    assert settings.discover_max_age == 86400
    assert settings.discover_job_types is None
    assert settings.job_ids_file is None
    assert settings.admin_secret is None
    assert settings.max_jobs == 10000
    assert (settings.shard, settings.shard_count) == (0, 1)


@pytest.mark.usefixtures("clean_env")
def test_a_job_types_expression_that_does_not_compile_is_a_config_error() -> None:
    """discover_job_types must be a regular expression."""
    with pytest.raises(ConfigError) as excinfo:
        load_settings({**BASE, "discover_job_types": "Create(Cluster"})
    assert "not a regular expression" in _problems(excinfo)["discover_job_types"]


@pytest.mark.usefixtures("clean_env")
def test_shard_index_must_be_below_shard_count() -> None:
    """shard_index outside 0..shard_count-1 is a config error naming the setting."""
    with pytest.raises(ConfigError) as excinfo:
        load_settings({**BASE, "shard_count": "3", "shard_index": "3"})
    assert "not below shard_count 3" in _problems(excinfo)["shard_index"]


@pytest.mark.usefixtures("clean_env")
def test_shard_index_auto_comes_from_the_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """shard_index auto takes N from a host name like cce-job-exporter-N."""
    monkeypatch.setattr(exporter.settings.model.socket, "gethostname", lambda: "cce-job-exporter-2")
    settings = load_settings({**BASE, "shard_count": "3", "shard_index": "auto"})
    assert settings.shard == 2


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("hostname", ["laptop", "cce-job-exporter-5"])
def test_shard_index_auto_without_a_fitting_host_name_is_an_error(
    monkeypatch: pytest.MonkeyPatch, hostname: str
) -> None:
    """An `auto` index with a host name without -N, or with N too large, is a config error."""
    monkeypatch.setattr(exporter.settings.model.socket, "gethostname", lambda: hostname)
    with pytest.raises(ConfigError) as excinfo:
        load_settings({**BASE, "shard_count": "3", "shard_index": "auto"})
    assert hostname in _problems(excinfo)["shard_index"]


@pytest.mark.usefixtures("clean_env")
def test_admin_token_file_is_read_and_never_shown(tmp_path: Path) -> None:
    """admin_token_file holds the job API's token; it appears in no repr."""
    path = tmp_path / "admin"
    path.write_text("very-secret\n")
    settings = load_settings({**BASE, "admin_token_file": str(path)})
    assert settings.admin_secret is not None
    assert settings.admin_secret.get_secret_value() == "very-secret"
    assert "very-secret" not in repr(settings)
    with pytest.raises(ConfigError) as excinfo:
        load_settings({**BASE, "admin_token_file": str(path), "admin_token": "x"})
    assert "not both" in _problems(excinfo)["admin_token_file"]


@pytest.mark.usefixtures("clean_env")
def test_missing_jobs_file_is_a_config_error(tmp_path: Path) -> None:
    """job_ids_file must name a readable file at start-up."""
    with pytest.raises(ConfigError) as excinfo:
        load_settings({**BASE, "job_ids_file": str(tmp_path / "nope")})
    assert "not a readable file" in _problems(excinfo)["job_ids_file"]


def test_flags_for_the_new_settings_but_not_for_secrets() -> None:
    """Every new setting has a flag, except the admin token (its file's path has one)."""
    args = build_parser().parse_args(
        [
            "--discover",
            "--discover-interval=30",
            "--discover-max-age=600",
            "--discover-job-types=Create.*",
            "--job-ids-file=jobs.txt",
            "--max-jobs=5",
            "--shard-count=3",
            "--shard-index=auto",
        ]
    )
    assert args.discover is True
    assert args.shard_index == "auto"
    assert args.job_ids_file == "jobs.txt"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--admin-token=x"])
    assert build_parser().parse_args(["--admin-token-file=x"]).admin_token_file == "x"


def test_check_config_reports_a_bad_shard(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--check-config names the shard problem and exits 2."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    status = main(
        [
            "--check-config",
            "--endpoint=https://cce.example.com",
            "--project-id=p1",
            "--shard-count=2",
            "--shard-index=7",
        ]
    )
    assert status == 2
    assert "shard_index (flag --shard-index)" in capsys.readouterr().err


async def test_once_with_discovery_polls_the_listed_jobs(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], aiohttp_server: Any
) -> None:
    """--once with discover reads the list, polls what qualifies and prints its metrics."""
    cce = FakeCCE()
    cce.add_listed("job-a", created=time.time() - 60)
    server = await aiohttp_server(cce.app())
    settings = Settings(
        endpoint=str(server.make_url("")).rstrip("/"),
        project_id=PROJECT_ID,
        auth_token=SecretStr(TOKEN),
        discover=True,
    )
    status = await run_once(settings)
    out = capsys.readouterr().out
    assert status == 0
    assert f'cce_job_poll_success{{job_id="job-a",project_id="{PROJECT_ID}"}} 1.0' in out
    assert cce.lists == 1
