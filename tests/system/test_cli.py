import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from exporter.cli import build_parser
from exporter.settings.load import env_name
from tests.conftest import labels, parse_series
from tests.standins.cce import PROJECT_ID, TOKEN, FakeCCE
from tests.standins.jobs import EXAMPLE_JOB_ID
from tests.standins.processes import free_port


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCE_EXPORTER_")}
    return env | extra


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", *args,
        env=env if env is not None else _env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_configuration_errors_exit_2_naming_each_setting() -> None:
    """Bad settings print one line per problem, with setting and source, and exit 2."""
    code, out, err = await _run(
        "--poll-interval", "-5", "--endpoint", "http://cce.example.com",
        env=_env(CCE_EXPORTER_JOB_IDS="ok,not/ok"),
    )  # fmt: skip
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert all(line.startswith("cce-job-exporter: configuration error: ") for line in lines)
    text = "\n".join(lines)
    assert "poll_interval (flag --poll-interval): Input should be greater than 0" in text
    assert "endpoint (flag --endpoint): plain http:// is refused" in text
    assert "job_ids (environment variable CCE_EXPORTER_JOB_IDS): 'not/ok'" in text
    assert "project_id (default): required" in text
    assert len(lines) == 5


async def test_check_config_accepts_good_settings() -> None:
    """--check-config exits 0 on settings that work, and starts nothing."""
    code, out, _ = await _run(
        "--check-config", "--region", "cn-north-4", "--project-id", PROJECT_ID,
        env=_env(CCE_EXPORTER_AUTH_TOKEN="secret-token-value"),
    )  # fmt: skip
    assert code == 0
    assert out.strip() == "configuration OK"
    assert "secret-token-value" not in out


async def test_kubernetes_service_links_do_not_stop_the_exporter() -> None:
    """--check-config passes in a pod that a Service named cce-exporter gave its variables."""
    links = {
        "CCE_EXPORTER_SERVICE_HOST": "10.0.0.11",
        "CCE_EXPORTER_SERVICE_PORT": "9849",
        "CCE_EXPORTER_SERVICE_PORT_METRICS": "9849",
        "CCE_EXPORTER_PORT": "tcp://10.0.0.11:9849",
        "CCE_EXPORTER_PORT_9849_TCP": "tcp://10.0.0.11:9849",
        "CCE_EXPORTER_PORT_9849_TCP_PROTO": "tcp",
        "CCE_EXPORTER_PORT_9849_TCP_PORT": "9849",
        "CCE_EXPORTER_PORT_9849_TCP_ADDR": "10.0.0.11",
    }
    code, out, err = await _run(
        "--check-config", "--region", "cn-north-4", "--project-id", PROJECT_ID,
        env=_env(CCE_EXPORTER_AUTH_TOKEN="t", **links),
    )  # fmt: skip
    assert code == 0, err
    assert out.strip() == "configuration OK"
    code, _, err = await _run(
        "--check-config", "--region", "cn-north-4", "--project-id", PROJECT_ID,
        env=_env(CCE_EXPORTER_AUTH_TOKEN="t", CCE_EXPORTER_SERVICE_HOSTS="x", **links),
    )  # fmt: skip
    assert code == 2
    assert err.splitlines() == [
        "cce-job-exporter: configuration error: service_hosts "
        "(environment variable CCE_EXPORTER_SERVICE_HOSTS): unknown setting"
    ]


async def test_check_config_accepts_another_clouds_region() -> None:
    """Open Telekom Cloud's region eu-de passes --check-config with its endpoint given."""
    code, out, err = await _run(
        "--check-config", "--region", "eu-de", "--project-id", PROJECT_ID,
        "--endpoint", "https://cce.eu-de.otc.t-systems.com",
        env=_env(CCE_EXPORTER_AUTH_TOKEN="t"),
    )  # fmt: skip
    assert code == 0, err
    assert out.strip() == "configuration OK"


async def test_version_flag() -> None:
    """--version prints the version."""
    code, out, _ = await _run("--version")
    assert code == 0
    assert out.startswith("cce-job-exporter ")


async def test_once_prints_the_exposition(
    aiohttp_server: AiohttpServer, example_job: dict[str, Any]
) -> None:
    """--once against a stand-in API prints the example's series with exact values, exit 0."""
    api = FakeCCE()
    api.jobs[EXAMPLE_JOB_ID] = example_job
    server = await aiohttp_server(api.app())
    code, out, err = await _run(
        "--once", "--endpoint", str(server.make_url("")), "--project-id", PROJECT_ID,
        "--job-ids", EXAMPLE_JOB_ID, env=_env(CCE_EXPORTER_AUTH_TOKEN=TOKEN),
    )  # fmt: skip
    assert code == 0, err
    series = parse_series(out)
    base = {"project_id": PROJECT_ID, "root_job_id": EXAMPLE_JOB_ID}
    master = labels(**base, job_id="fd474fab-9606-11e8-baa9-0255ac10215d", job_type="InstallMaster")
    assert series[("cce_job_duration_seconds", master)] == 774.580423413
    root = labels(**base, job_id=EXAMPLE_JOB_ID, job_type="CreateCluster", phase="Running")
    assert series[("cce_job_status_phase", root)] == 1.0
    poll = labels(project_id=PROJECT_ID, job_id=EXAMPLE_JOB_ID)
    assert series[("cce_job_poll_success", poll)] == 1.0
    assert api.requests[EXAMPLE_JOB_ID] == 1


async def test_once_exits_1_when_a_poll_fails(aiohttp_server: AiohttpServer) -> None:
    """--once exits 1 when any job could not be read, and still prints what it has."""
    api = FakeCCE()
    api.add_job("good")
    server = await aiohttp_server(api.app())
    code, out, err = await _run(
        "--once", "--endpoint", str(server.make_url("")), "--project-id", PROJECT_ID,
        "--job-ids", "good,gone", env=_env(CCE_EXPORTER_AUTH_TOKEN=TOKEN),
    )  # fmt: skip
    assert code == 1
    series = parse_series(out)
    assert series[("cce_job_poll_success", labels(project_id=PROJECT_ID, job_id="good"))] == 1.0
    assert series[("cce_job_poll_success", labels(project_id=PROJECT_ID, job_id="gone"))] == 0.0
    assert "job_poll_failing" in err
    assert "not_found" in err


async def test_a_token_with_a_trailing_newline_works(aiohttp_server: AiohttpServer) -> None:
    """A token ending in a newline (a secret put into an env var from a file) polls fine."""
    api = FakeCCE()
    api.add_job("good")
    server = await aiohttp_server(api.app())
    code, out, err = await _run(
        "--once", "--endpoint", str(server.make_url("")), "--project-id", PROJECT_ID,
        "--job-ids", "good", env=_env(CCE_EXPORTER_AUTH_TOKEN=TOKEN + "\n"),
    )  # fmt: skip
    assert code == 0, err
    assert parse_series(out)[("cce_job_poll_success", labels(project_id=PROJECT_ID, job_id="good"))]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"CCE_EXPORTER_AUTH_TOKEN": ""},
            "auth_token (environment variable CCE_EXPORTER_AUTH_TOKEN): the value is empty",
        ),
        (
            {"CCE_EXPORTER_ACCESS_KEY": "AK", "CCE_EXPORTER_SECRET_KEY": "SEKRIT\nVALUE"},
            "secret_key (environment variable CCE_EXPORTER_SECRET_KEY): the value holds a "
            "control character",
        ),
        (
            {"CCE_EXPORTER_AUTH_TOKEN": "t", "CCE_EXPORTER_REQUEST_TIMEOUT": "inf"},
            "request_timeout (environment variable CCE_EXPORTER_REQUEST_TIMEOUT): must be a "
            "finite number",
        ),
        (
            {
                "CCE_EXPORTER_AUTH_TOKEN": "t",
                "CCE_EXPORTER_ENDPOINT": "https://cce.example.com:99999",
            },
            "endpoint (environment variable CCE_EXPORTER_ENDPOINT): "
            "'https://cce.example.com:99999' has a bad port",
        ),
    ],
)
async def test_unusable_settings_fail_the_check_and_the_start(
    env: dict[str, str], expected: str
) -> None:
    """Settings that would break the service later fail --check-config and start-up alike."""
    base = ("--region", "cn-north-4", "--project-id", PROJECT_ID)
    for mode in (("--check-config",), ()):
        code, out, err = await _run(*mode, *base, env=_env(**env))
        assert code == 2, out
        assert "Traceback" not in err
        lines = err.splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith(f"cce-job-exporter: configuration error: {expected}")
        assert "SEKRIT" not in err


async def _wait_http(url: str) -> str:
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return await response.text()
            except aiohttp.ClientConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{url} did not answer 200 within 20 s")
            await asyncio.sleep(0.1)


async def test_service_serves_and_stops_on_sigterm(
    aiohttp_server: AiohttpServer, example_job: dict[str, Any]
) -> None:
    """The service polls, becomes ready, serves /metrics, and exits 0 soon after SIGTERM."""
    api = FakeCCE()
    api.jobs[EXAMPLE_JOB_ID] = example_job
    server = await aiohttp_server(api.app())
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", "--endpoint", str(server.make_url("")),
        "--project-id", PROJECT_ID, "--job-ids", EXAMPLE_JOB_ID,
        "--listen-address", f"127.0.0.1:{port}",
        env=_env(CCE_EXPORTER_AUTH_TOKEN=TOKEN),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await _wait_http(f"http://127.0.0.1:{port}/readyz")
        text = await _wait_http(f"http://127.0.0.1:{port}/metrics")
        assert f'job_id="{EXAMPLE_JOB_ID}"' in text
        started = time.monotonic()  # the span to stop starts with the signal
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
        assert process.returncode == 0
        assert time.monotonic() - started < 5
        assert "stopped" in stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_demo_runs_and_stops() -> None:
    """--demo serves several moving demo jobs on /metrics and stops cleanly on SIGINT."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", "--demo", "--listen-address", f"127.0.0.1:{port}",
        env=_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await _wait_http(f"http://127.0.0.1:{port}/readyz")
        series = parse_series(await _wait_http(f"http://127.0.0.1:{port}/metrics"))
        roots = {
            dict(key)["job_id"]
            for name, key in series
            if name == "cce_job_info" and dict(key)["depth"] == "0"
        }
        assert len(roots) >= 4
        phases = {
            dict(key)["phase"]
            for (name, key), value in series.items()
            if name == "cce_job_status_phase" and value == 1.0
        }
        assert {"Running", "Success"} <= phases
        success = [v for (name, _), v in series.items() if name == "cce_job_poll_success"]
        assert success
        assert set(success) == {1.0}
        # Two simulated regions: two targets, two projects, jobs of both.
        targets = {
            dict(key)["target"]: dict(key)["project_id"]
            for name, key in series
            if name == "cce_exporter_target_info"
        }
        assert set(targets) == {"demo-eu", "demo-ap"}
        projects = {dict(key)["project_id"] for name, key in series if name == "cce_job_info"}
        assert projects == set(targets.values())
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.communicate(), 10)
        assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_secret_files_have_flags_and_secrets_do_not() -> None:
    """`--auth-token-file` is a flag; `--auth-token` is not (a command line is public)."""
    code, out, _ = await _run("--help")
    assert code == 0
    assert "--auth-token-file" in out
    assert "--secret-key-file" in out
    for secret in ("--auth-token ", "--secret-key ", "--iam-password ", "--admin-token "):
        assert secret not in out


def test_every_flag_says_what_it_is_for_and_its_default() -> None:
    """Each setting's flag has a help text of its own, its variable, and its default if any."""
    parser = build_parser()
    group = next(g for g in parser._action_groups if g.title == "settings")
    actions = {action.dest: action for action in group._group_actions}
    assert actions
    for name, action in actions.items():
        assert action.help is not None
        purpose = action.help.split(" (", 1)[0]
        assert purpose not in (name, ""), name
        assert f"env {env_name(name)})" in action.help
    assert "default 30.0;" in str(actions["poll_interval"].help)
    assert "default false;" in str(actions["discover"].help)
    assert "default" not in str(actions["endpoint"].help)


async def test_a_port_in_use_is_a_clean_configuration_error(
    aiohttp_server: AiohttpServer,
) -> None:
    """A listen_address that cannot be bound is one message and exit 2, no traceback."""
    api = FakeCCE()
    server = await aiohttp_server(api.app())
    taken = server.port
    code, _, err = await _run(
        "--endpoint", str(server.make_url("")), "--project-id", PROJECT_ID,
        "--listen-address", f"127.0.0.1:{taken}", env=_env(CCE_EXPORTER_AUTH_TOKEN=TOKEN),
    )  # fmt: skip
    assert code == 2
    assert "Traceback" not in err
    assert f"configuration error: listen_address: cannot listen on 127.0.0.1:{taken}" in err


async def test_a_ca_bundle_without_certificates_is_refused(tmp_path: Any) -> None:
    """A ca_bundle that holds no PEM certificate fails --check-config, naming the setting."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    code, _, err = await _run(
        "--check-config", "--region", "cn-north-4", "--project-id", PROJECT_ID,
        "--ca-bundle", str(bundle), env=_env(CCE_EXPORTER_AUTH_TOKEN="t"),
    )  # fmt: skip
    assert code == 2
    assert "ca_bundle (flag --ca-bundle):" in err
    assert "holds no PEM certificate" in err


async def test_check_config_names_the_target_of_each_problem(tmp_path: Path) -> None:
    """--check-config prints one line per problem, naming target and setting, and exits 2."""
    token = tmp_path / "token"
    token.write_text("TARGET-SECRET-TOKEN\n")
    config = tmp_path / "exporter.yml"
    config.write_text(
        "access_key: AK-SECRET-VALUE\n"
        "secret_key: SK-SECRET-VALUE\n"
        "project_id: top-level\n"
        "targets:\n"
        "  - {name: eu-west, region: eu-west-101, project_id: p1}\n"
        f"  - {{name: cn-north, project_id: p1, auth_token_file: {token}}}\n"
        "  - {name: eu-west, region: cn-east-3, project_id: p2, poll_interval: 5}\n"
        '  - {name: ap, region: ap-southeast-1, project_id: p3, auth_token: "two\\nlines"}\n'
    )
    code, out, err = await _run("--check-config", "--config", str(config))
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    prefix = "cce-job-exporter: configuration error: "
    assert all(line.startswith(prefix) for line in lines)
    where = f"(config file {config})"
    assert [line.removeprefix(prefix).split(": ", 1)[0] for line in lines] == [
        f"project_id {where}",
        f"targets[2] (eu-west).poll_interval {where}",
        f"targets[3] (ap).auth_token {where}",
        f"targets[1] (cn-north).project_id {where}",
        f"targets[1] (cn-north).endpoint {where}",
        f"targets[2] (eu-west).name {where}",
    ]
    assert "SECRET" not in err
    assert "two" not in err


async def test_check_config_accepts_good_targets(tmp_path: Path) -> None:
    """Three targets (inherited AK/SK, own token, own rate limit) pass --check-config."""
    token = tmp_path / "token"
    token.write_text("TARGET-SECRET-TOKEN\n")
    config = tmp_path / "exporter.yml"
    config.write_text(
        "access_key: AK-SECRET-VALUE\n"
        "secret_key: SK-SECRET-VALUE\n"
        "targets:\n"
        "  - {name: eu-west, region: eu-west-101, project_id: p1, discover: true}\n"
        f"  - {{name: cn-north, region: cn-north-4, project_id: p2, auth_token_file: {token}}}\n"
        "  - {name: ap, region: ap-southeast-1, project_id: p3, rate_limit: 5}\n"
    )
    code, out, err = await _run("--check-config", "--config", str(config))
    assert (code, out.strip(), err) == (0, "configuration OK", "")


async def test_targets_is_refused_as_a_flag_or_variable() -> None:
    """--targets and CCE_EXPORTER_TARGETS each say that targets belongs in the YAML file."""
    code, out, err = await _run(
        "--check-config", "--region", "cn-north-4", "--project-id", PROJECT_ID,
        "--targets", "[{name: a}]",
        env=_env(CCE_EXPORTER_AUTH_TOKEN="t", CCE_EXPORTER_TARGETS="[{not json"),
    )  # fmt: skip
    assert (code, out) == (2, "")
    message = (
        "set only in the YAML file given by --config: a list of targets has no flag "
        "or environment variable form"
    )
    assert err.strip().splitlines() == [
        "cce-job-exporter: configuration error: targets (environment variable "
        f"CCE_EXPORTER_TARGETS): {message}",
        f"cce-job-exporter: configuration error: targets (flag --targets): {message}",
    ]


async def _wait_log(log: Path, text: str, count: int) -> str:
    """Wait until the log holds `text` at least `count` times; return the log."""
    deadline = time.monotonic() + 20
    while True:
        content = await asyncio.to_thread(log.read_text, errors="replace")
        if content.count(text) >= count:
            return content
        if time.monotonic() > deadline:
            pytest.fail(f"{text!r} not {count} times in the log within 20 s:\n{content}")
        await asyncio.sleep(0.1)


async def test_signals_reload_stop_or_are_logged_never_kill_silently(
    aiohttp_server: AiohttpServer, example_job: dict[str, Any], tmp_path: Path
) -> None:
    """SIGHUP reads the jobs file again; SIGUSR1/2 are logged and ignored; SIGQUIT stops cleanly."""
    api = FakeCCE()
    api.jobs[EXAMPLE_JOB_ID] = example_job
    server = await aiohttp_server(api.app())
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(f"{EXAMPLE_JOB_ID}\n")
    log = tmp_path / "exporter.log"
    port = free_port()
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "exporter", "--endpoint", str(server.make_url("")),
            "--project-id", PROJECT_ID, "--job-ids-file", str(jobs),
            "--listen-address", f"127.0.0.1:{port}",
            env=_env(CCE_EXPORTER_AUTH_TOKEN=TOKEN), stdout=out, stderr=out,
        )  # fmt: skip
    try:
        await _wait_http(f"http://127.0.0.1:{port}/readyz")
        await _wait_log(log, "jobs_file_read", 1)
        process.send_signal(signal.SIGHUP)
        await _wait_log(log, "jobs_file_read", 2)
        process.send_signal(signal.SIGUSR1)
        process.send_signal(signal.SIGUSR2)
        await _wait_log(log, "action=ignored", 2)
        process.send_signal(signal.SIGHUP)
        await _wait_log(log, "jobs_file_read", 3)
        assert process.returncode is None
        assert f'job_id="{EXAMPLE_JOB_ID}"' in await _wait_http(f"http://127.0.0.1:{port}/metrics")
        process.send_signal(signal.SIGQUIT)
        await asyncio.wait_for(process.wait(), 10)
        assert process.returncode == 0
        text = log.read_text()
        assert "signal_received signal=SIGHUP action=reload" in text
        assert "signal_received signal=SIGUSR1 action=ignored" in text
        assert "signal_received signal=SIGQUIT action=stop" in text
        assert "stopped" in text
        assert "Traceback" not in text
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
