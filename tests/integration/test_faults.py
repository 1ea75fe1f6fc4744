"""Each fault of the API and the network, against the real client, scheduler and /metrics.

A real local server (tests.standins.cce) plays the CCE API beside two healthy jobs;
the faulty job must cost only itself: its error counted under the right kind,
the others' series untouched, /metrics answering.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from pytest_aiohttp import AiohttpClient, AiohttpServer

from exporter.cce.auth.base import TokenAuth
from exporter.cce.client import CCEClient, RetryPolicy
from exporter.cce.ratelimit import RateLimiter
from exporter.cce.transport import MAX_BODY_BYTES
from exporter.errors import ErrorKind
from exporter.jobs.state import JobStore
from exporter.jobs.tree import MAX_NODES
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.exposition import Renderer
from exporter.scheduler import PollSettings, Scheduler
from exporter.server.endpoints import WebContext, create_app
from tests.conftest import Series, labels, parse_series
from tests.standins.cce import CCE_NOT_FOUND, TOKEN, FakeCCE, Fault, html_page
from tests.standins.clocks import Clock, Sleeps
from tests.standins.jobs import deep_job_body, empty_subjobs_body, job_object, wide_job

PROJECT = "proj"
HEALTHY = ("ok-1", "ok-2")
BAD = "bad"
INTERVAL = 30.0
# Generous: a stalled event loop (a busy machine, coverage on) must never make
# a request time out and be sent again, or the request counts would be off.
REQUEST_TIMEOUT = 30.0
# Only for the test about timeouts, where the job that hangs is polled alone:
# three attempts cost under a second of real time.
SHORT_TIMEOUT = 0.3


@dataclass
class Rig:
    """The real client, scheduler, renderer and web app, polling a fake API."""

    api: FakeCCE
    scheduler: Scheduler
    store: JobStore
    clock: Clock
    sleeps: Sleeps
    http: aiohttp.ClientSession
    base: str

    async def scrape(self) -> Series:
        """GET /metrics from the real web app; it must answer 200 and parse."""
        async with self.http.get(f"{self.base}/metrics") as response:
            assert response.status == 200
            return parse_series(await response.text())

    async def poll(self) -> list[str]:
        """Poll the due jobs once, without jitter."""
        return await self.scheduler.poll_due(jitter=False)


@pytest.fixture
def request_timeout() -> float:
    """The client's request timeout; a test about timeouts parametrizes it."""
    return REQUEST_TIMEOUT


@pytest.fixture
async def rig(
    aiohttp_server: AiohttpServer,
    aiohttp_client: AiohttpClient,
    instruments: Instruments,
    request_timeout: float,
) -> AsyncIterator[Rig]:
    """A scheduler over the real client (3 attempts, recorded sleeps) and the real /metrics."""
    api = FakeCCE()
    server = await aiohttp_server(api.app())
    sleeps = Sleeps()
    clock = Clock()
    store = JobStore()
    limiter = RateLimiter(1000, clock=sleeps.clock, sleep=sleeps.sleep)
    async with aiohttp.ClientSession() as session:
        client = CCEClient(
            session, str(server.make_url("")), TokenAuth(SecretStr(TOKEN)), instruments,
            timeout=request_timeout, limiter=limiter, retry=RetryPolicy(attempts=3),
            sleep=sleeps.sleep, clock=sleeps.clock,
        )  # fmt: skip
        settings = PollSettings(
            project_id=PROJECT, poll_interval=INTERVAL, poll_concurrency=4, finished_retention=600
        )
        scheduler = Scheduler(client, store, instruments, settings, clock=clock, monotonic=clock)
        renderer = Renderer(instruments.registry)
        web_client = await aiohttp_client(
            create_app(WebContext(store, renderer, lambda: scheduler.ready, PROJECT))
        )
        base = str(web_client.make_url("")).rstrip("/")
        async with aiohttp.ClientSession() as http:
            yield Rig(api, scheduler, store, clock, sleeps, http, base)
        await scheduler.stop()


def _errors(series: Series, job_id: str) -> dict[str, float]:
    """The job's poll error counters by kind."""
    return {
        dict(key)["error"]: value
        for (name, key), value in series.items()
        if name == "cce_job_poll_errors_total" and dict(key)["job_id"] == job_id
    }


def _job_series(series: Series, job_ids: tuple[str, ...]) -> Series:
    """Every series of these jobs but the last-success time (which moves with the clock)."""
    return {
        (name, key): value
        for (name, key), value in series.items()
        if dict(key).get("job_id") in job_ids
        and dict(key).get("root_job_id", dict(key).get("job_id")) in job_ids
        and name != "cce_job_last_poll_success_timestamp_seconds"
    }


def _success(series: Series, job_id: str) -> float:
    return series[("cce_job_poll_success", labels(project_id=PROJECT, job_id=job_id))]


def _cce_error(code: str, message: str) -> str:
    return json.dumps({"error_code": code, "error_msg": message})


_JOB_TEXT = json.dumps(job_object(BAD))

# name: (the fault, the error kind it must be counted as, requests one poll makes).
# Transient kinds are tried three times; the others once. A reset connection
# that was a kept-alive one is tried once more by aiohttp itself (a GET is
# idempotent), so a reset attempt reaches the server once or twice.
RESETS = range(3, 7)
FAULTS: dict[str, tuple[Callable[[], Fault], ErrorKind, int | range]] = {
    "500": (
        lambda: Fault(500, _cce_error("CCE.01500001", "Internal server error")),
        ErrorKind.SERVER_ERROR, 3,
    ),
    "502-html": (
        lambda: Fault(502, html_page(502, "Bad Gateway"), headers={"Content-Type": "text/html"}),
        ErrorKind.SERVER_ERROR, 3,
    ),
    "503": (
        lambda: Fault(503, json.dumps({"kind": "Status", "reason": "ServiceUnavailable"})),
        ErrorKind.SERVER_ERROR, 3,
    ),
    "429": (
        lambda: Fault(429, _cce_error("APIG.0308", "The throttling threshold has been reached")),
        ErrorKind.THROTTLED, 3,
    ),
    "429-retry-after": (
        lambda: Fault(429, _cce_error("APIG.0308", "throttled"), headers={"Retry-After": "7"}),
        ErrorKind.THROTTLED, 3,
    ),
    "connection-reset": (lambda: Fault(reset=True), ErrorKind.CONNECTION, RESETS),
    "truncated-content-length": (
        lambda: Fault(200, _JOB_TEXT, abort_after=len(_JOB_TEXT) // 2),
        ErrorKind.CONNECTION, RESETS,
    ),
    "truncated-json": (
        lambda: Fault(200, _JOB_TEXT[: len(_JOB_TEXT) // 2]), ErrorKind.INVALID_RESPONSE, 1,
    ),
    "wrong-shape-list": (lambda: Fault(200, '[{"kind": "Job"}]'), ErrorKind.INVALID_RESPONSE, 1),
    "wrong-shape-object": (
        lambda: Fault(200, '{"items": [], "metadata": "none"}'), ErrorKind.INVALID_RESPONSE, 1,
    ),
    "over-cap-declared": (
        lambda: Fault(200, b" " * (MAX_BODY_BYTES + 1)), ErrorKind.INVALID_RESPONSE, 1,
    ),
    "over-cap-chunked": (
        lambda: Fault(200, b" " * (MAX_BODY_BYTES + 1), chunked=True),
        ErrorKind.INVALID_RESPONSE, 1,
    ),
    "404-cce-body": (lambda: Fault(404, json.dumps(CCE_NOT_FOUND)), ErrorKind.NOT_FOUND, 1),
    # Nested about 3,000 JSON levels deep: past the decoder's recursion limit.
    "tree-1000-deep": (lambda: Fault(200, deep_job_body(BAD, 1000)), ErrorKind.INVALID_RESPONSE, 1),
    # 2 MB of `subJobs: [{}, ...]`: half a million nodes, far past MAX_NODES.
    "tree-500000-wide": (
        lambda: Fault(200, empty_subjobs_body(BAD, 500_000)), ErrorKind.INVALID_RESPONSE, 1,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(FAULTS))
async def test_fault_costs_only_its_job(rig: Rig, name: str) -> None:
    """A fault is counted under its kind for its job alone; the others and /metrics go on."""
    make_fault, kind, attempts = FAULTS[name]
    for job_id in (*HEALTHY, BAD):
        rig.api.add_job(job_id)
    rig.scheduler.watch([*HEALTHY, BAD])
    await rig.poll()
    before = await rig.scrape()
    assert all(_success(before, job_id) == 1.0 for job_id in (*HEALTHY, BAD))

    rig.api.faults[BAD] = make_fault()
    rig.api.requests.clear()
    rig.clock.now += INTERVAL
    assert sorted(await rig.poll()) == sorted([*HEALTHY, BAD])
    after = await rig.scrape()

    errors = _errors(after, BAD)
    assert errors[kind.value] == 1.0
    assert sum(errors.values()) == 1.0, errors
    assert _success(after, BAD) == 0.0
    if isinstance(attempts, range):
        assert rig.api.requests[BAD] in attempts
    else:
        assert rig.api.requests[BAD] == attempts
    # The last good tree of the faulty job is still exported.
    assert _job_series(after, (BAD,)).keys() >= {
        key for key in _job_series(before, (BAD,)) if key[0] == "cce_job_info"
    }
    # The healthy jobs: polled once each, every series as before, time of success moved on.
    assert {job_id: rig.api.requests[job_id] for job_id in HEALTHY} == dict.fromkeys(HEALTHY, 1)
    assert _job_series(after, HEALTHY) == _job_series(before, HEALTHY)
    for job_id in HEALTHY:
        assert _success(after, job_id) == 1.0
        assert sum(_errors(after, job_id).values()) == 0.0
        key = ("cce_job_last_poll_success_timestamp_seconds",
               labels(project_id=PROJECT, job_id=job_id))  # fmt: skip
        assert after[key] == before[key] + INTERVAL
    # The process is alive and its own endpoints answer.
    async with rig.http.get(f"{rig.base}/healthz") as response:
        assert response.status == 200


def _requests_counted(series: Series, code: str) -> float:
    """The show_job requests the client counted with this status code."""
    return series.get(
        (
            "cce_exporter_api_requests_total",
            labels(target="default", operation="show_job", code=code),
        ),
        0.0,
    )


@pytest.mark.parametrize("request_timeout", [SHORT_TIMEOUT])
async def test_a_timeout_is_tried_three_times_and_counted_once(rig: Rig) -> None:
    """A job whose answers never come in time: 3 attempts, one timeout, its last tree kept."""
    rig.api.add_job(BAD)
    rig.scheduler.watch([BAD])
    await rig.poll()
    before = await rig.scrape()
    assert _success(before, BAD) == 1.0

    rig.api.faults[BAD] = Fault(delay=10 * SHORT_TIMEOUT)
    rig.api.requests.clear()
    rig.clock.now += INTERVAL
    assert await rig.poll() == [BAD]
    after = await rig.scrape()

    errors = _errors(after, BAD)
    assert errors[ErrorKind.TIMEOUT.value] == 1.0
    assert sum(errors.values()) == 1.0, errors
    assert _success(after, BAD) == 0.0
    # Three attempts, each given up on. The client's count is exact; the server
    # may miss an attempt that a stall of this loop timed out while connecting.
    assert _requests_counted(after, "error") - _requests_counted(before, "error") == 3
    assert 1 <= rig.api.requests[BAD] <= 3
    assert _job_series(after, (BAD,)).keys() >= {
        key for key in _job_series(before, (BAD,)) if key[0] == "cce_job_info"
    }


async def test_tree_of_5000_subjobs_is_exported_in_full(rig: Rig) -> None:
    """A job with 5,000 direct sub-jobs is exported node by node, beside healthy jobs."""
    for job_id in HEALTHY:
        rig.api.add_job(job_id)
    rig.api.jobs[BAD] = wide_job(BAD, 5000)
    rig.scheduler.watch([*HEALTHY, BAD])
    await rig.poll()
    series = await rig.scrape()
    info = [
        key for name, key in series if name == "cce_job_info" and dict(key)["root_job_id"] == BAD
    ]
    assert len(info) == 5001
    assert {dict(key)["depth"] for key in info} == {"0", "1"}
    subjobs = {
        dict(key)["phase"]: value
        for (name, key), value in series.items()
        if name == "cce_job_subjobs" and dict(key)["job_id"] == BAD
    }
    assert subjobs == {"Initializing": 0.0, "Running": 1000.0, "Success": 4000.0, "Failed": 0.0}
    ratio = (
        "cce_job_progress_ratio",
        labels(project_id=PROJECT, job_id=BAD, root_job_id=BAD, job_type="CreateNode"),
    )
    assert series[ratio] == 0.8
    assert all(_success(series, job_id) == 1.0 for job_id in (*HEALTHY, BAD))


async def test_a_tree_at_the_node_cap_is_exported_and_one_past_it_is_refused(rig: Rig) -> None:
    """MAX_NODES nodes are exported in full; one more is invalid_response, the last tree kept."""
    for job_id in HEALTHY:
        rig.api.add_job(job_id)
    rig.api.jobs[BAD] = wide_job(BAD, MAX_NODES - 1)
    rig.scheduler.watch([*HEALTHY, BAD])
    await rig.poll()
    async with rig.http.get(f"{rig.base}/metrics") as response:
        text = await response.text()
    # Counted in the text: parsing twenty thousand nodes' series would take long.
    info = [line for line in text.splitlines() if line.startswith("cce_job_info{")]
    assert sum(f'root_job_id="{BAD}"' in line for line in info) == MAX_NODES

    rig.api.jobs[BAD] = wide_job(BAD, MAX_NODES)
    rig.clock.now += INTERVAL
    await rig.poll()
    state = rig.store.get(BAD)
    assert state is not None
    assert state.last_error_kind is ErrorKind.INVALID_RESPONSE
    assert state.last_error is not None
    assert f"job tree has more than {MAX_NODES} nodes" in state.last_error
    assert state.tree is not None
    assert len(state.tree.nodes) == MAX_NODES  # the last good tree, still exported
    for job_id in HEALTHY:
        healthy = rig.store.get(job_id)
        assert healthy is not None
        assert healthy.last_ok
        assert healthy.polls == 2


async def _throttled_alone(rig: Rig, fault: Fault) -> Series:
    """Poll the faulty job alone (a first good poll, then one with the fault); scrape."""
    rig.api.add_job(BAD)
    rig.scheduler.watch([BAD])
    await rig.poll()
    rig.api.faults[BAD] = fault
    rig.sleeps.calls.clear()
    rig.clock.now += INTERVAL
    await rig.poll()
    return await rig.scrape()


async def test_retry_after_is_waited_exactly(rig: Rig) -> None:
    """429 with Retry-After: 7 waits exactly 7 s before each retry, then counts throttled."""
    series = await _throttled_alone(rig, Fault(429, "{}", headers={"Retry-After": "7"}))
    # Between attempts: the Retry-After, then one token at the steady rate (1 ms at 1000/s).
    assert rig.sleeps.calls == [7.0, pytest.approx(0.001), 7.0, pytest.approx(0.001)]
    assert rig.api.requests[BAD] == 4
    assert _errors(series, BAD)["throttled"] == 1.0


async def test_retry_after_then_success_reads_the_job(rig: Rig) -> None:
    """One 429 with Retry-After: 2, then the job: the poll waits 2 s and succeeds."""
    series = await _throttled_alone(rig, Fault(429, "{}", headers={"Retry-After": "2"}, times=1))
    assert rig.sleeps.calls == [2.0, pytest.approx(0.001)]
    assert _success(series, BAD) == 1.0
    assert sum(_errors(series, BAD).values()) == 0.0


async def test_throttled_without_retry_after_pauses_exponentially(rig: Rig) -> None:
    """429 without Retry-After pauses 1 s, then 2 s (the limiter's doubling), then gives up."""
    series = await _throttled_alone(rig, Fault(429, _cce_error("APIG.0308", "throttled")))
    assert rig.sleeps.calls == [1.0, pytest.approx(0.001), 2.0, pytest.approx(0.001)]
    assert _errors(series, BAD)["throttled"] == 1.0


async def test_a_slow_job_does_not_hold_back_the_jobs_polled_beside_it(rig: Rig) -> None:
    """A job whose answer hangs does not delay the next polls of jobs polled in the same pass."""
    for job_id in (*HEALTHY, BAD):
        rig.api.add_job(job_id)
    release = asyncio.Event()
    rig.api.faults[BAD] = Fault(hold=release)
    rig.scheduler.watch([*HEALTHY, BAD])
    first = asyncio.create_task(rig.poll())
    try:
        async with asyncio.timeout(10):
            # Nothing signals one job's poll ending inside a pass, nor a request
            # arriving (on a busy machine the healthy jobs may be read before
            # the bad job's request is even in): look.
            while not (  # noqa: ASYNC110 - no event tells of either
                all(getattr(rig.store.get(job_id), "polls", 0) for job_id in HEALTHY)
                and rig.api.in_flight_by_job[BAD] == 1  # hanging, held by the stand-in
            ):
                await asyncio.sleep(0.01)
        assert getattr(rig.store.get(BAD), "polls", None) == 0
        rig.clock.now += INTERVAL
        assert sorted(rig.scheduler.due_jobs()) == sorted(HEALTHY)
        assert sorted(await rig.poll()) == sorted(HEALTHY)
    finally:
        release.set()
        await first
    assert rig.scheduler.due_jobs() == [BAD]
    assert {job_id: rig.api.requests[job_id] for job_id in (*HEALTHY, BAD)} == {
        "ok-1": 2,
        "ok-2": 2,
        BAD: 1,
    }


def _spoiled_job(job_id: str) -> dict[str, Any]:
    """A job whose texts hold lone surrogates beside good non-ASCII text."""
    sub = job_object(f"{job_id}-sub-\ud800", phase="Run\udc00ning")
    sub["status"]["reason"] = "\udfff"
    job = job_object(job_id, phase="Failed", sub_jobs=[sub, job_object(f"{job_id}-sub-ok")])
    job["spec"] |= {"type": "Create\ud800Node", "resourceName": "node-\udbff-é", "resourceID": "😀"}
    job["status"]["reason"] = "disk \ud83d full \udc00"
    return job


async def _get(rig: Rig, path: str) -> tuple[int, bytes]:
    """GET a path of the real web app; its status and body."""
    async with rig.http.get(f"{rig.base}{path}") as response:
        return response.status, await response.read()


@pytest.mark.parametrize("spelling", ["escaped", "raw-bytes"])
async def test_lone_surrogates_cost_only_their_code_points(rig: Rig, spelling: str) -> None:
    """Job texts with lone surrogates are served with U+FFFD for them, beside untouched jobs."""
    for job_id in (*HEALTHY, BAD):
        rig.api.add_job(job_id)
    rig.scheduler.watch([*HEALTHY, BAD])
    await rig.poll()
    before = await rig.scrape()

    spoiled = _spoiled_job(BAD)
    if spelling == "escaped":  # "\ud800" in the JSON text
        rig.api.jobs[BAD] = spoiled
    else:  # the bytes a UTF-8 encoder that lets surrogates pass writes; json.loads reads them
        body = json.dumps(spoiled, ensure_ascii=False).encode("utf-8", "surrogatepass")
        rig.api.faults[BAD] = Fault(200, body)
    rig.clock.now += INTERVAL
    await rig.poll()

    after = await rig.scrape()  # answers 200 and parses, or fails here
    assert _success(after, BAD) == 1.0
    root = {"project_id": PROJECT, "root_job_id": BAD, "job_type": "Create\ufffdNode"}
    sub = {"project_id": PROJECT, "root_job_id": BAD, "job_type": "CreateNode"}
    info = labels(**root, job_id=BAD, parent_job_id="", cluster_id="c-1", resource_id="😀",
                  resource_name="node-\ufffd-é", depth="0", api="cce")  # fmt: skip
    assert after[("cce_job_info", info)] == 1.0
    reason = labels(**root, job_id=BAD, reason="disk \ufffd full \ufffd")
    assert after[("cce_job_status_reason_info", reason)] == 1.0
    sub_id = f"{BAD}-sub-\ufffd"
    assert after[("cce_job_status_phase", labels(**sub, job_id=sub_id, phase="Run\ufffdning"))] == 1
    assert after[("cce_job_status_reason_info", labels(**sub, job_id=sub_id, reason="\ufffd"))] == 1
    subjobs = labels(**root, job_id=BAD, phase="Run\ufffdning")
    assert after[("cce_job_subjobs", subjobs)] == 1.0
    # The healthy jobs: every series as before.
    assert _job_series(after, HEALTHY) == _job_series(before, HEALTHY)

    status, page = await _get(rig, "/jobs")
    assert status == 200
    assert "disk \ufffd full \ufffd" in page.decode()
    assert all(f'id="job-{job_id}"' in page.decode() for job_id in HEALTHY)
    status, doc = await _get(rig, "/api/v1/jobs")
    assert status == 200
    jobs = {job["job_id"]: job for job in json.loads(doc)["jobs"]}
    assert [node["job_id"] for node in jobs[BAD]["nodes"]] == [BAD, sub_id, f"{BAD}-sub-ok"]
    assert jobs[BAD]["nodes"][0]["resource_name"] == "node-\ufffd-é"
    assert all(jobs[job_id]["last_poll_ok"] for job_id in HEALTHY)


async def test_lone_surrogates_in_an_error_body_reach_the_pages_replaced(rig: Rig) -> None:
    """An error body whose message holds lone surrogates is shown with U+FFFD for them."""
    for job_id in (*HEALTHY, BAD):
        rig.api.add_job(job_id)
    rig.api.faults[BAD] = Fault(404, '{"error_code": "CCE.\\ud800", "error_msg": "no \\udc00 job"}')
    rig.scheduler.watch([*HEALTHY, BAD])
    await rig.poll()

    series = await rig.scrape()
    assert _errors(series, BAD)["not_found"] == 1.0
    assert all(_success(series, job_id) == 1.0 for job_id in HEALTHY)
    status, page = await _get(rig, "/jobs")
    assert status == 200
    assert "CCE.\ufffd: no \ufffd job" in page.decode()
    status, doc = await _get(rig, "/api/v1/jobs")
    assert status == 200
    jobs = {job["job_id"]: job for job in json.loads(doc)["jobs"]}
    # Not found on CCE, and not on Autopilot either (asked since the job was never read).
    assert (
        jobs[BAD]["last_error"] == "not_found: HTTP 404: CCE.\ufffd: no \ufffd job (Autopilot: 404)"
    )
