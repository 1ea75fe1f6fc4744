"""Three targets from one YAML file, each on its own stand-in API: polled and discovered apart.

`tokens` brings its own token, `signed` inherits the top-level access key
pair (checked with the official SDK's signer), `broken` brings a token its
API refuses. The broken one counts `unauthorized` and touches neither of the
others, and no secret reaches the logs or the exposition.
"""

import asyncio
import logging
import time
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpServer

from exporter.app import exporter
from exporter.settings.load import load_settings
from tests.conftest import parse_series
from tests.standins.cce import TOKEN, FakeCCE, Fault
from tests.standins.iam import StandIn
from tests.standins.jobs import v2_job

P_TOKENS = "11111111111111111111111111111111"
P_SIGNED = "22222222222222222222222222222222"
P_BROKEN = "33333333333333333333333333333333"
AK = "TARGETSTESTACCESSKEY"
SK = "targets-test-secret-key-0123456789"
BAD_TOKEN = "refused-token-of-the-broken-target"
SECRETS = (TOKEN, AK, SK, BAD_TOKEN)


def _labels(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


async def _servers(aiohttp_server: AiohttpServer) -> tuple[FakeCCE, StandIn, FakeCCE, list[str]]:
    tokens = FakeCCE(project_id=P_TOKENS)
    tokens.add_job("tok-1")
    tokens.add_listed("tok-found", created=time.time() - 60)
    signed = StandIn(keys={AK: SK}, project_id=P_SIGNED)
    signed.listing = [v2_job("signed-found", created=time.time() - 60)]
    broken = FakeCCE(project_id=P_BROKEN)
    broken.add_job("broken-1")
    broken.add_listed("broken-found", created=time.time() - 60)
    urls = [
        str((await aiohttp_server(app)).make_url("")).rstrip("/")
        for app in (tokens.app(), signed.app(), broken.app())
    ]
    return tokens, signed, broken, urls


def _settings_file(tmp_path: Path, urls: list[str]) -> Path:
    path = tmp_path / "exporter.yml"
    path.write_text(
        f"""
access_key: {AK}
secret_key: {SK}
poll_interval: 30
targets:
  - name: tokens
    endpoint: {urls[0]}
    project_id: '{P_TOKENS}'
    auth_token: {TOKEN}
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
    auth_token: {BAD_TOKEN}
    job_ids: [broken-1]
    discover: true
"""
    )
    return path


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        f"{record.getMessage()} {getattr(record, 'fields', {})} {record.exc_text or ''}"
        for record in caplog.records
    )


async def test_three_targets_are_polled_and_discovered_apart(
    aiohttp_server: AiohttpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each target reads its own project on its own API; the broken one fails alone."""
    tokens, signed, broken, urls = await _servers(aiohttp_server)
    settings = load_settings({}, _settings_file(tmp_path, urls))
    caplog.set_level(logging.DEBUG)
    async with exporter(settings) as ex:
        passes = await asyncio.gather(*(d.refresh() for d in ex.discoveries))
        await ex.scheduler.poll_due(jitter=False)
        text = ex.renderer.render(ex.store).decode()
        states = {state.job_id: state for state in ex.store}
    assert [result.ok for result in passes] == [True, True, False]
    assert {job_id: (s.target, s.project_id) for job_id, s in states.items()} == {
        "tok-1": ("tokens", P_TOKENS),
        "tok-found": ("tokens", P_TOKENS),
        "signed-1": ("signed", P_SIGNED),
        "signed-found": ("signed", P_SIGNED),
        "broken-1": ("broken", P_BROKEN),
    }
    # Each API saw only its own target's jobs.
    assert set(tokens.requests) == {"tok-1", "tok-found"}
    # Both job lists (Autopilot answers 404 here) and both jobs, signed with the top AK/SK.
    assert signed.seen["signature_ok"] == 4
    assert signed.seen["bad_signature"] == 0
    assert broken.lists == 1
    assert not broken.requests  # its job failed at the gate: no second refused request

    series = parse_series(text)
    for job_id, project in (
        ("tok-1", P_TOKENS),
        ("tok-found", P_TOKENS),
        ("signed-1", P_SIGNED),
        ("signed-found", P_SIGNED),
    ):
        assert series[("cce_job_poll_success", _labels(job_id=job_id, project_id=project))] == 1.0
    broken_poll = _labels(job_id="broken-1", project_id=P_BROKEN)
    assert series[("cce_job_poll_success", broken_poll)] == 0.0
    errors = _labels(error="unauthorized", job_id="broken-1", project_id=P_BROKEN)
    assert series[("cce_job_poll_errors_total", errors)] == 1.0
    # No other job counts any error.
    others = [
        value
        for (name, labels), value in series.items()
        if name == "cce_job_poll_errors_total" and ("job_id", "broken-1") not in labels
    ]
    assert others
    assert set(others) == {0.0}

    requests: dict[tuple[str, str, str], float] = {
        (dict(labels)["target"], dict(labels)["operation"], dict(labels)["code"]): value
        for (name, labels), value in series.items()
        if name == "cce_exporter_api_requests_total"
    }
    # The IAM stand-in offers no Autopilot list (404: no Autopilot jobs, no failure).
    assert requests == {
        ("tokens", "list_jobs", "200"): 1.0,
        ("tokens", "list_autopilot_jobs", "200"): 1.0,
        ("tokens", "show_job", "200"): 2.0,
        ("signed", "list_jobs", "200"): 1.0,
        ("signed", "list_autopilot_jobs", "404"): 1.0,
        ("signed", "show_job", "200"): 2.0,
        ("broken", "list_jobs", "401"): 1.0,
    }
    for name, project, endpoint in (
        ("tokens", P_TOKENS, urls[0]),
        ("signed", P_SIGNED, urls[1]),
        ("broken", P_BROKEN, urls[2]),
    ):
        info = _labels(target=name, project_id=project, region="", endpoint=endpoint)
        assert series[("cce_exporter_target_info", info)] == 1.0
        watched = sum(
            series[("cce_exporter_watched_jobs", _labels(target=name, state=state))]
            for state in ("active", "finished")
        )
        assert watched == (1.0 if name == "broken" else 2.0)

    refusals = [r for r in caplog.records if r.getMessage() == "authentication_failed"]
    assert [r.fields["target"] for r in refusals] == ["broken"]  # type: ignore[attr-defined]
    logs = _log_text(caplog)
    for secret in SECRETS:
        assert secret not in text
        assert secret not in logs


async def test_a_target_whose_api_hangs_leaves_the_others_polling(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """With every request of one target hanging, the other's polls go on in the shared slots."""
    hanging = FakeCCE()
    release = asyncio.Event()
    for index in range(6):
        hanging.add_job(f"hang-{index}")
        hanging.faults[f"hang-{index}"] = Fault(hold=release)
    healthy = FakeCCE()
    for index in range(4):
        healthy.add_job(f"ok-{index}")
    urls = [
        str((await aiohttp_server(api.app())).make_url("")).rstrip("/")
        for api in (hanging, healthy)
    ]
    path = tmp_path / "exporter.yml"
    path.write_text(
        f"""
auth_token: {TOKEN}
poll_concurrency: 3
request_timeout: 300
targets:
  - name: hanging
    endpoint: {urls[0]}
    project_id: '{P_TOKENS}'
    job_ids: [{", ".join(f"hang-{i}" for i in range(6))}]
  - name: healthy
    endpoint: {urls[1]}
    project_id: '{P_SIGNED}'
    job_ids: [{", ".join(f"ok-{i}" for i in range(4))}]
"""
    )
    async with exporter(load_settings({}, path)) as ex:
        task = asyncio.create_task(ex.scheduler.poll_due(jitter=False))
        try:
            async with asyncio.timeout(60):  # a generous bound: it takes milliseconds
                # The store has no event to wait on: it is looked at until the polls are in.
                while not all(state.last_ok for state in ex.store if state.target == "healthy"):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            # One request hangs (until the credentials get a verdict, the gate
            # lets one through), and the hanging target's polls queued behind it
            # hold the rest of its share: all the slots but the one left for the other.
            assert hanging.in_flight == 1
        finally:
            release.set()
            await task
    assert hanging.max_in_flight <= 2
    assert all(state.last_ok for state in ex.store)
