"""The real process with three targets in one YAML file, each on its own stand-in API.

`tokens` reads its token from a file of its own, `signed` inherits the
top-level access key pair (files too), `broken` asks IAM for tokens with a
wrong password. Through the command line, as an operator runs it: each is
polled and discovered on its own endpoint, the broken one fails alone, and
no secret shows in the log, /metrics or the status views.
"""

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from tests.conftest import labels, parse_series
from tests.standins.cce import TOKEN, FakeCCE
from tests.standins.iam import StandIn
from tests.standins.jobs import v2_job
from tests.standins.processes import free_port

P_TOKENS = "11111111111111111111111111111111"
P_SIGNED = "22222222222222222222222222222222"
P_BROKEN = "33333333333333333333333333333333"
AK = "TARGETSPROCESSACCESSKEY"
SK = "targets-process-secret-key-0123"
PASSWORD = "targets-process-right-password"
WRONG_PASSWORD = "targets-process-wrong-password"
SECRETS = (TOKEN, AK, SK, PASSWORD, WRONG_PASSWORD)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("CCE_EXPORTER_")}


def _secret_file(directory: Path, name: str, value: str) -> Path:
    path = directory / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


async def _urls(aiohttp_server: AiohttpServer) -> tuple[list[str], FakeCCE, StandIn, FakeCCE]:
    tokens = FakeCCE(project_id=P_TOKENS)
    tokens.add_job("tok-1")
    tokens.add_listed("tok-found", created=time.time() - 60)
    signed = StandIn(
        keys={AK: SK}, users={("example-domain", "exporter"): PASSWORD}, project_id=P_SIGNED
    )
    signed.listing = [v2_job("signed-found", created=time.time() - 60)]
    broken = FakeCCE(project_id=P_BROKEN)
    broken.add_job("broken-1")
    urls = [
        str((await aiohttp_server(app)).make_url("")).rstrip("/")
        for app in (tokens.app(), signed.app(), broken.app())
    ]
    return urls, tokens, signed, broken


def _config(directory: Path, urls: list[str]) -> Path:
    access_key = _secret_file(directory, "ak", AK)
    secret_key = _secret_file(directory, "sk", SK)
    token = _secret_file(directory, "token", TOKEN)
    password = _secret_file(directory, "password", WRONG_PASSWORD)
    path = directory / "exporter.yml"
    path.write_text(
        f"""
access_key_file: {access_key}
secret_key_file: {secret_key}
log_level: debug
log_format: json
poll_interval: 30
targets:
  - name: tokens
    endpoint: {urls[0]}
    project_id: '{P_TOKENS}'
    auth_token_file: {token}
    job_ids: [tok-1]
    discover: true
  - name: signed
    endpoint: {urls[1]}
    project_id: '{P_SIGNED}'
    job_ids: [signed-1]
    discover: true
  - name: broken
    endpoint: {urls[2]}
    project_id: '{P_BROKEN}'
    iam_endpoint: {urls[1]}
    iam_domain: example-domain
    iam_username: exporter
    iam_password_file: {password}
    job_ids: [broken-1]
"""
    )
    return path


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def _wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if (await _get(session, f"{url}/readyz"))[0] == 200:
                return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    pytest.fail("the exporter was not ready within 30 s")


async def test_three_targets_through_the_command_line(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """Polled and discovered apart; the broken one counts unauthorized; no secret shows."""
    urls, tokens, signed, broken = await _urls(aiohttp_server)
    config = _config(tmp_path, urls)
    check = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", "--config", str(config), "--check-config",
        env=_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(check.communicate(), 60)
    assert check.returncode == 0
    assert out.decode().strip() == "configuration OK"
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", "--config", str(config),
        "--listen-address", f"127.0.0.1:{port}",
        env=_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_ready(session, url)
            _, metrics = await _get(session, f"{url}/metrics")
            _, everything = await _get(session, f"{url}/api/v1/jobs")
            _, broken_only = await _get(session, f"{url}/api/v1/jobs?target=broken")
            _, page = await _get(session, f"{url}/jobs")
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
        assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = stderr.decode()

    series = parse_series(metrics)
    for job_id, project in (
        ("tok-1", P_TOKENS),
        ("tok-found", P_TOKENS),
        ("signed-1", P_SIGNED),
        ("signed-found", P_SIGNED),
    ):
        assert series[("cce_job_poll_success", labels(job_id=job_id, project_id=project))] == 1.0
    failing = labels(error="unauthorized", job_id="broken-1", project_id=P_BROKEN)
    assert series[("cce_job_poll_errors_total", failing)] >= 1.0
    refused = labels(target="broken", operation="iam_token", code="401")
    assert series[("cce_exporter_api_requests_total", refused)] >= 1.0
    # Only the broken target asked IAM; the others never failed a job read or list
    # (the IAM stand-in serves no cluster lists: those answer 404, and are not jobs).
    codes = {
        (dict(key)["target"], dict(key)["code"])
        for name, key in series
        if name == "cce_exporter_api_requests_total"
        and dict(key)["operation"] in ("show_job", "list_jobs")
    }
    assert {code for target, code in codes if target != "broken"} == {"200"}
    assert set(tokens.requests) == {"tok-1", "tok-found"}
    assert signed.seen["signature_ok"] >= 3
    assert signed.seen["bad_signature"] == 0
    assert not broken.requests  # no token, so never asked
    assert {dict(key)["target"] for name, key in series if name == "cce_exporter_target_info"} == {
        "tokens",
        "signed",
        "broken",
    }

    document = json.loads(everything)
    assert document["targets"] == {"broken": 1, "signed": 2, "tokens": 2}
    assert [job["job_id"] for job in json.loads(broken_only)["jobs"]] == ["broken-1"]
    assert "Targets:" in page

    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    failed = [line for line in lines if line["event"] == "authentication_failed"]
    assert failed
    assert {line["target"] for line in failed} == {"broken"}
    for secret in SECRETS:
        for text in (log, metrics, everything, page):
            assert secret not in text
