"""CCE Autopilot: a job is found on whichever job API knows it, then polled there only.

The stand-in serves CCE's and Autopilot's paths side by side; a job lives on
one, and the other answers 404 for it. Requests are counted per API.
"""

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from exporter.app import exporter
from exporter.cce.auth.base import TokenAuth
from exporter.cce.auth.gate import AuthGate
from exporter.cce.client import CCEClient, RetryPolicy
from exporter.errors import ErrorKind
from exporter.jobs.ids import Api
from exporter.jobs.state import JobStore
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.exposition import Renderer
from exporter.scheduler import PollSettings, Scheduler
from exporter.server.statuspage.model import jobs_json
from exporter.server.statuspage.page import render_html
from exporter.settings.model import Settings
from exporter.watch.watchlist import Route, WatchList
from tests.conftest import parse_series
from tests.standins.cce import PROJECT_ID, SDK_ERROR_BODIES, TOKEN, FakeCCE, Fault
from tests.standins.clocks import Clock
from tests.standins.jobs import job_object

INTERVAL = 30.0
RETENTION = 600.0


@dataclass
class Rig:
    """A scheduler on a fake clock, polling the stand-in through the real client."""

    api: FakeCCE
    scheduler: Scheduler
    watchlist: WatchList
    store: JobStore
    clock: Clock
    instruments: Instruments

    async def rounds(self, count: int) -> None:
        """Poll every due job, `count` times an interval apart."""
        for _ in range(count):
            await self.scheduler.poll_due(jitter=False)
            self.clock.now += INTERVAL


@pytest.fixture
async def rig(aiohttp_server: AiohttpServer) -> AsyncIterator[Rig]:
    """The stand-in, and a scheduler polling it every 30 s (each request tried once)."""
    api = FakeCCE()
    server = await aiohttp_server(api.app())
    clock = Clock()
    store = JobStore()
    instruments = Instruments()
    async with aiohttp.ClientSession() as session:
        client = CCEClient(
            session,
            str(server.make_url("")),
            TokenAuth(SecretStr(TOKEN)),
            instruments,
            timeout=5,
            retry=RetryPolicy(attempts=1),
            # Its backoff after a refusal never ends: the test's time does not reach it.
            gate=AuthGate("CCE API", {}, clock=Clock()),
        )
        settings = PollSettings(
            project_id=PROJECT_ID,
            poll_interval=INTERVAL,
            poll_concurrency=4,
            finished_retention=RETENTION,
        )
        scheduler = Scheduler(client, store, instruments, settings, clock=clock, monotonic=clock)
        watchlist = WatchList(scheduler, instruments)
        yield Rig(api, scheduler, watchlist, store, clock, instruments)
        await scheduler.stop()


def _fields(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == name]


async def test_each_job_is_polled_on_its_own_api_and_autopilot_is_probed_once(rig: Rig) -> None:
    """A bare Autopilot ID beside a CCE ID: each polled on its API; CCE asked once for the other."""
    rig.api.add_job("cce-job")
    sub = job_object("ap-step", "Running", job_type="InstallMaster")
    rig.api.add_job("ap-job", api=Api.AUTOPILOT)
    rig.api.jobs["ap-job"]["spec"]["subJobs"] = [sub]
    rig.watchlist.add(Route.SETTINGS, ["cce-job", "ap-job"])
    await rig.rounds(4)
    # The Autopilot job: one 404 from CCE at its first poll, then Autopilot only.
    assert rig.api.requests == {"cce-job": 4, "ap-job": 1}
    assert rig.api.autopilot_requests == {"ap-job": 4}
    states = {state.job_id: state for state in rig.store}
    assert {job_id: state.api for job_id, state in states.items()} == {
        "cce-job": Api.CCE,
        "ap-job": Api.AUTOPILOT,
    }
    assert all(state.last_ok and state.polls == 4 for state in states.values())
    series = parse_series(Renderer(rig.instruments.registry).render(rig.store).decode())
    apis = {dict(key)["job_id"]: dict(key)["api"] for name, key in series if name == "cce_job_info"}
    assert apis == {"cce-job": "cce", "ap-job": "autopilot", "ap-step": "autopilot"}
    document = jobs_json(rig.store, PROJECT_ID, rig.clock.now)
    assert {job["job_id"]: job["api"] for job in document["jobs"]} == {
        "cce-job": "cce",
        "ap-job": "autopilot",
    }
    html = render_html(rig.store, PROJECT_ID, rig.clock.now)
    assert '<p class="facts">CCE Autopilot · cluster c-1' in html
    assert '<p class="facts">CCE · cluster c-1' in html


async def test_a_job_known_to_neither_api_ages_out_as_not_found(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """An ID neither API knows: one not_found per poll (both asked), then it ages out as before."""
    caplog.set_level(logging.INFO)
    rig.watchlist.add(Route.SETTINGS, ["nowhere"])
    await rig.rounds(1)
    state = rig.store.get("nowhere")
    assert state is not None
    assert (state.polls, state.errors[list(ErrorKind).index(ErrorKind.NOT_FOUND)]) == (1, 1)
    assert state.last_error == ("not_found: HTTP 404: CCE.01404001: Job not found (Autopilot: 404)")
    assert (rig.api.requests["nowhere"], rig.api.autopilot_requests["nowhere"]) == (1, 1)
    start = rig.clock.now - INTERVAL
    rig.clock.now = start + RETENTION
    assert rig.scheduler.expire() == ["nowhere"]
    assert _fields(caplog, "job_expired") == [
        {"target": "default", "job_id": "nowhere", "reason": "not_found"}
    ]
    # Each poll cost the two requests, and counted as one failure.
    assert rig.api.requests["nowhere"] == rig.api.autopilot_requests["nowhere"]


async def test_an_autopilot_refusal_is_not_found_and_holds_back_autopilot_only(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """CCE says 404 and Autopilot 403: not_found; CCE's own jobs are read on unhindered."""
    rig.api.add_job("cce-job")
    rig.api.add_job("ghost", api=Api.AUTOPILOT)
    rig.api.faults["ghost"] = Fault(403, json.dumps(SDK_ERROR_BODIES["policy"]))
    rig.watchlist.add(Route.SETTINGS, ["cce-job", "ghost"])
    await rig.rounds(3)
    ghost, cce_job = rig.store.get("ghost"), rig.store.get("cce-job")
    assert ghost is not None
    assert ghost.last_error_kind is ErrorKind.NOT_FOUND
    assert ghost.last_error is not None
    assert ghost.last_error.endswith("(Autopilot: forbidden)")
    assert ghost.api is None
    assert cce_job is not None
    assert (cce_job.polls, cce_job.last_ok) == (3, True)
    [refused] = _fields(caplog, "authentication_failed")
    assert refused["action"] == "cce:job:get (Autopilot)"
    # Backing off, the gate let only the first Autopilot request through.
    assert rig.api.autopilot_requests["ghost"] == 1
    assert rig.api.requests["ghost"] == 3


async def test_a_failing_probe_is_told_and_tried_again(rig: Rig) -> None:
    """Autopilot failing (500) while probed: server_error, not pinned; the next poll finds it."""
    rig.api.add_job("ap-job", api=Api.AUTOPILOT)
    rig.api.faults["ap-job"] = Fault(500, json.dumps(SDK_ERROR_BODIES["generic"]), times=1)
    rig.watchlist.add(Route.SETTINGS, ["ap-job"])
    await rig.rounds(1)
    state = rig.store.get("ap-job")
    assert state is not None
    assert state.last_error_kind is ErrorKind.SERVER_ERROR
    assert state.last_error == "server_error: HTTP 500: Autopilot: CCE.01500001: Internal error"
    await rig.rounds(2)
    state = rig.store.get("ap-job")
    assert state is not None
    assert (state.last_ok, state.api) == (True, Api.AUTOPILOT)
    assert rig.api.requests["ap-job"] == 2  # probed twice, never again once found
    assert rig.api.autopilot_requests["ap-job"] == 3


# Discovery and the other routes, through the exporter as the service builds it.


@pytest.fixture
def cce() -> FakeCCE:
    """An empty stand-in project."""
    return FakeCCE()


@pytest.fixture
async def server(cce: FakeCCE, aiohttp_server: AiohttpServer) -> TestServer:
    """Serve the stand-in on loopback."""
    served: TestServer = await aiohttp_server(cce.app())
    return served


def _settings(server: TestServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "endpoint": str(server.make_url("")).rstrip("/"),
        "project_id": PROJECT_ID,
        "auth_token": SecretStr(TOKEN),
        "finished_retention": 3600,
    }
    return Settings(**(values | overrides))


async def test_ids_from_the_settings_and_the_jobs_file_are_found_on_either_api(
    cce: FakeCCE, server: TestServer, tmp_path: Path
) -> None:
    """An Autopilot ID in the jobs file and a CCE ID in the settings are both read."""
    cce.add_job("cce-job")
    cce.add_job("ap-job", api=Api.AUTOPILOT)
    jobs_file = tmp_path / "jobs.txt"
    jobs_file.write_text("ap-job\n")
    settings = _settings(server, job_ids=("cce-job",), job_ids_file=jobs_file)
    async with exporter(settings) as ex:
        await ex.scheduler.poll_due(jitter=False)
        apis = {state.job_id: (state.last_ok, state.api) for state in ex.store}
    assert apis == {"cce-job": (True, Api.CCE), "ap-job": (True, Api.AUTOPILOT)}
    assert cce.autopilot_requests == {"ap-job": 1}


async def test_discovery_lists_both_apis_and_polls_each_job_where_it_was_listed(
    cce: FakeCCE, server: TestServer
) -> None:
    """Both lists are read; listed jobs are polled on their API with no probe, even if named."""
    now = time.time()
    cce.add_listed("c-run", created=now - 60)
    cce.add_listed("a-run", created=now - 60, api=Api.AUTOPILOT)
    cce.add_listed(
        "a-done", created=now - 600, updated=now - 60, phase="Success", api=Api.AUTOPILOT
    )
    # Named in the settings too: the list tells their API before their first poll.
    settings = _settings(server, discover=True, job_ids=("a-run", "a-done"))
    async with exporter(settings) as ex:
        assert ex.discovery is not None
        result = await ex.discovery.refresh()
        await ex.scheduler.poll_due(jitter=False)
        states = {state.job_id: state for state in ex.store}
    assert (result.listed, result.watched, result.ok) == (3, 1, True)
    assert (cce.lists, cce.autopilot_lists) == (1, 1)
    assert cce.requests == {"c-run": 1}
    assert cce.autopilot_requests == {"a-run": 1, "a-done": 1}
    assert {job_id: state.api for job_id, state in states.items()} == {
        "c-run": Api.CCE,
        "a-run": Api.AUTOPILOT,
        "a-done": Api.AUTOPILOT,
    }


async def test_a_failing_list_loses_nothing_of_the_other_and_each_failure_counts(
    cce: FakeCCE, server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """One list failing keeps the other's jobs coming; each failed list is one log line."""
    now = time.time()
    cce.add_listed("c-run", created=now - 60)
    cce.add_listed("a-run", created=now - 60, api=Api.AUTOPILOT)
    async with exporter(_settings(server, discover=True)) as ex:
        assert ex.discovery is not None
        cce.autopilot_list_status = 500
        first = await ex.discovery.refresh()
        assert {state.job_id for state in ex.store} == {"c-run"}
        # A job stopped through the job API stays stopped across a failed read of its list.
        cce.autopilot_list_status = 200
        await ex.discovery.refresh()
        assert ex.watchlist.remove("a-run")
        cce.autopilot_list_status = 500
        cce.list_status = 500
        both = await ex.discovery.refresh()
        cce.autopilot_list_status = cce.list_status = 200
        await ex.discovery.refresh()
        watched = {state.job_id for state in ex.store}
        registry = ex.instruments.registry
        failures = {
            operation: registry.get_sample_value(
                "cce_exporter_api_requests_total",
                {"target": "default", "operation": operation, "code": "500"},
            )
            for operation in ("list_jobs", "list_autopilot_jobs")
        }
    assert first.failed == (Api.AUTOPILOT,)
    assert not first.ok
    assert both.failed == (Api.CCE, Api.AUTOPILOT)
    assert watched == {"c-run"}
    # The two lists are read together: their lines come in either order.
    assert sorted(fields["api"] for fields in _fields(caplog, "discovery_failed")) == [
        "autopilot",
        "autopilot",
        "cce",
    ]
    # Each failed read counts, retries included: three tries a read.
    assert failures == {"list_jobs": 3, "list_autopilot_jobs": 6}


async def test_an_endpoint_without_autopilot_is_no_failure(
    cce: FakeCCE, server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An Autopilot list answering 404 lists nothing, fails nothing, and is said once."""
    caplog.set_level(logging.INFO)
    cce.add_listed("c-run", created=time.time() - 60)
    cce.autopilot_list_status = 404
    async with exporter(_settings(server, discover=True)) as ex:
        assert ex.discovery is not None
        passes = [await ex.discovery.refresh() for _ in range(3)]
        watched = {state.job_id for state in ex.store}
    assert all(result.ok for result in passes)
    assert watched == {"c-run"}
    assert len(_fields(caplog, "autopilot_not_offered")) == 1
    assert _fields(caplog, "discovery_failed") == []
