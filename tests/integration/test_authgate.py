import asyncio
import logging
import random

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from exporter.cce.auth.base import TokenAuth
from exporter.cce.auth.gate import AuthGate, backoff_delays
from exporter.cce.client import CCEClient, RetryPolicy
from exporter.errors import ApiError, ErrorKind
from exporter.jobs.state import JobStore
from exporter.metrics.cce_exporter import Instruments
from exporter.scheduler import PollSettings, Scheduler
from tests.standins.cce import TOKEN, FakeCCE, Fault
from tests.standins.clocks import Clock, Sleeps

HINTS = {ErrorKind.UNAUTHORIZED: "check the keys", ErrorKind.FORBIDDEN: "grant cce:job:get"}


def test_backoff_doubles_up_to_the_cap() -> None:
    """Delays after refusals in a row double from the base and stop at the cap."""
    delay = backoff_delays(10, 300)
    assert [delay(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [10, 20, 40, 80, 160, 300, 300]


async def test_only_one_request_at_a_time_until_the_credentials_work() -> None:
    """At start-up one probe goes alone; once it succeeds, requests are no longer serialised."""
    gate = AuthGate("CCE API", HINTS, clock=Clock(1000.0))
    probe = await gate.admit()
    waiter = asyncio.create_task(gate.admit())
    await asyncio.sleep(0)
    assert not waiter.done()
    probe.settle(200)
    second = await asyncio.wait_for(waiter, 1)
    third = await gate.admit()  # trusted now: no waiting on the second
    second.settle(200)
    third.settle(200)
    assert not gate.failing


async def test_refusal_backs_off_without_touching_the_network(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After a 401, requests fail at once as unauthorized until the backoff has passed."""
    clock = Clock(1000.0)
    gate = AuthGate("CCE API", HINTS, base_delay=10, clock=clock)
    caplog.set_level(logging.DEBUG, logger="exporter.cce.auth.gate")
    (await gate.admit()).settle(401, "APIG.0301: Incorrect IAM authentication information")
    for _ in range(20):
        with pytest.raises(ApiError) as caught:
            await gate.admit()
        assert caught.value.kind is ErrorKind.UNAUTHORIZED
        assert "next try in 10 s" in str(caught.value)
    clock.now += 10
    (await gate.admit()).settle(401, "APIG.0301: Incorrect IAM authentication information")
    clock.now += 19
    with pytest.raises(ApiError):
        await gate.admit()
    clock.now += 1
    ticket = await gate.admit()
    assert gate.failures == 2
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in errors] == ["authentication_failed"]
    fields = errors[0].fields  # type: ignore[attr-defined]
    assert fields["hint"] == "check the keys"
    assert fields["status"] == 401
    ticket.settle(200)
    assert not gate.failing
    assert "authentication_recovered" in [r.getMessage() for r in caplog.records]


async def test_waiters_behind_a_refused_probe_fail_without_sending() -> None:
    """Requests queued behind the probe are refused when the probe is refused."""
    gate = AuthGate("CCE API", HINTS, clock=Clock(1000.0))
    probe = await gate.admit()
    waiters = [asyncio.create_task(gate.admit()) for _ in range(5)]
    await asyncio.sleep(0)
    probe.settle(403, "CCE.01403001: Forbidden")
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, ApiError) and r.kind is ErrorKind.FORBIDDEN for r in results)


async def test_inconclusive_answers_release_the_probe() -> None:
    """A timeout or a 500 says nothing of the credentials: the next request may probe."""
    gate = AuthGate("CCE API", HINTS, clock=Clock(1000.0))
    (await gate.admit()).settle(None)
    (await gate.admit()).settle(503)
    (await gate.admit()).settle(429)
    assert not gate.failing
    ticket = await asyncio.wait_for(gate.admit(), 1)
    ticket.settle(404)  # the job is unknown, but the credentials were accepted
    assert not gate.failing


async def test_retry_now_skips_the_backoff_once(caplog: pytest.LogCaptureFixture) -> None:
    """A refusal after which the credentials were renewed may be retried at once, unlogged."""
    gate = AuthGate("IAM", HINTS, clock=Clock(1000.0))
    (await gate.admit()).settle(401, "expired", retry_now=True)
    ticket = await gate.admit()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    ticket.settle(401, "still refused")
    with pytest.raises(ApiError):
        await gate.admit()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "authentication_failed"
    ]


async def test_cancelled_waiter_does_not_hold_the_probe() -> None:
    """A request cancelled while waiting for the probe leaves the gate usable."""
    gate = AuthGate("CCE API", HINTS, clock=Clock(1000.0))
    probe = await gate.admit()
    waiter = asyncio.create_task(gate.admit())
    await asyncio.sleep(0)
    waiter.cancel()
    probe.settle(None)
    with pytest.raises(asyncio.CancelledError):
        await waiter
    (await asyncio.wait_for(gate.admit(), 1)).settle(200)
    assert not gate.failing


async def test_a_refused_action_holds_back_only_that_action(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 403 on the job list backs off listing only; job reads go on, unserialised."""
    clock = Clock(1000.0)
    gate = AuthGate("CCE API", HINTS, base_delay=10, clock=clock)
    (await gate.admit("cce:job:list")).settle(403, "CCE.01403001: Forbidden")
    with pytest.raises(ApiError) as caught:
        await gate.admit("cce:job:list")
    assert caught.value.kind is ErrorKind.FORBIDDEN
    assert "refused cce:job:list; next try in 10 s" in str(caught.value)
    # The 403 says the credentials work: reads are not held one at a time.
    reads = [await asyncio.wait_for(gate.admit("cce:job:get"), 1) for _ in range(3)]
    for ticket in reads:
        ticket.settle(200)
    [line] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.getMessage() == "authentication_failed"
    assert line.fields["action"] == "cce:job:list"  # type: ignore[attr-defined]
    assert line.fields["error"] == "forbidden"  # type: ignore[attr-defined]
    clock.now += 10
    (await gate.admit("cce:job:list")).settle(200)
    assert not gate.failing


async def test_refused_credentials_hold_back_every_action() -> None:
    """A 401 is about the credentials: reads and listing both wait for the backoff."""
    clock = Clock(1000.0)
    gate = AuthGate("CCE API", HINTS, base_delay=10, clock=clock)
    (await gate.admit("cce:job:get")).settle(200)
    (await gate.admit("cce:job:list")).settle(401, "APIG.0301: Incorrect IAM authentication")
    for action in ("cce:job:get", "cce:job:list"):
        with pytest.raises(ApiError) as caught:
            await gate.admit(action)
        assert caught.value.kind is ErrorKind.UNAUTHORIZED
        assert "refused the credentials" in str(caught.value)


async def test_requests_waiting_behind_a_try_without_verdict_fail_at_once() -> None:
    """When the lone try times out, the requests behind it fail unsent; the next tries alone."""
    gate = AuthGate("CCE API", HINTS, clock=Clock(1000.0))
    probe = await gate.admit("cce:job:get")
    waiters = [asyncio.create_task(gate.admit("cce:job:get")) for _ in range(5)]
    await asyncio.sleep(0)
    probe.settle(None, kind=ErrorKind.TIMEOUT)
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, ApiError) and r.kind is ErrorKind.TIMEOUT for r in results)
    assert "not sent" in str(results[0])
    second = await asyncio.wait_for(gate.admit("cce:job:get"), 1)
    behind = asyncio.create_task(gate.admit("cce:job:get"))
    await asyncio.sleep(0)
    assert not behind.done()
    second.settle(200)
    (await asyncio.wait_for(behind, 1)).settle(200)
    assert not gate.failing


async def test_a_try_refused_for_another_reason_hands_on_to_the_next() -> None:
    """A 400 says nothing of the credentials and nothing of an outage: the next waiter tries."""
    gate = AuthGate("CCE API", HINTS, clock=Clock(1000.0))
    probe = await gate.admit("cce:job:get")
    waiter = asyncio.create_task(gate.admit("cce:job:get"))
    await asyncio.sleep(0)
    probe.settle(400, kind=ErrorKind.INVALID_RESPONSE)
    (await asyncio.wait_for(waiter, 1)).settle(200)
    assert not gate.failing


async def test_start_up_during_an_outage_polls_every_job_in_minutes(
    aiohttp_server: AiohttpServer, instruments: Instruments, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 jobs while every request takes 10 s and fails: all polled in minutes, one at a time.

    Before, each attempt of each poll went alone in turn: 200 x 3 x 10 s, 100 minutes.
    """
    monkeypatch.setattr(random, "uniform", lambda low, high: low)  # no retry jitter
    time = Sleeps(1000.0)
    api = FakeCCE()
    jobs = [f"job-{n}" for n in range(200)]
    for job_id in jobs:
        api.add_job(job_id)
    outage = Fault(503, '{"error_code": "CCE.01500001"}')
    api.chooser = lambda job_id: outage

    def takes_ten_seconds(request: web.Request) -> None:
        time.now += 10  # as long as a request that times out takes

    api.on_request = takes_ten_seconds
    server = await aiohttp_server(api.app())
    async with aiohttp.ClientSession() as session:
        gate = AuthGate("CCE API", HINTS, clock=time.clock)
        client = CCEClient(
            session, str(server.make_url("")), TokenAuth(SecretStr(TOKEN)), instruments,
            timeout=10, retry=RetryPolicy(attempts=3), sleep=time.sleep, clock=time.clock,
            gate=gate,
        )  # fmt: skip
        settings = PollSettings("p", poll_interval=30, poll_concurrency=16, finished_retention=600)
        scheduler = Scheduler(
            client, JobStore(), instruments, settings, clock=time.clock, monotonic=time.clock
        )
        scheduler.watch(jobs)
        await scheduler.poll_due(jitter=False)
        assert scheduler.ready
        assert api.max_in_flight == 1
        sent = sum(api.requests.values())
        assert time.now - 1000 == 10 * sent
        assert sent <= 60  # about 3 per 16 polls (39 here): ten minutes at most
        # The API is back: the first answer proves the credentials, all jobs are read.
        api.chooser = None
        time.now += 30
        await scheduler.poll_due(jitter=False)
        assert all(state.last_ok for state in scheduler._store)
