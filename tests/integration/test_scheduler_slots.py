"""Jobs that hang or are throttled cannot take every concurrency slot from healthy ones.

The real client and scheduler against a fake API, with two slots: two jobs
whose first attempt fails (a Retry-After, or a timeout) wait for their retry
in a sleep that the test holds; meanwhile the healthy job must be polled, at
once and again an interval later.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from exporter.cce.auth.base import TokenAuth
from exporter.cce.client import CCEClient, RetryPolicy
from exporter.jobs.state import JobStore
from exporter.metrics.cce_exporter import Instruments
from exporter.scheduler import PollSettings, Scheduler
from tests.standins.cce import TOKEN, FakeCCE, Fault
from tests.standins.clocks import Clock

PROJECT = "proj"
INTERVAL = 30.0
HANGING = ("hang-1", "hang-2")
HEALTHY = "healthy"


class HeldSleeps:
    """Sleeps that last until the test lets them end, recording what was asked."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.over = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        """Record the wait, and wait until the test says."""
        self.calls.append(seconds)
        await self.over.wait()


@dataclass
class Rig:
    """The real client and scheduler (two slots), a fake API and the held retry waits."""

    api: FakeCCE
    scheduler: Scheduler
    store: JobStore
    clock: Clock
    sleeps: HeldSleeps


@pytest.fixture
async def rig(aiohttp_server: AiohttpServer, instruments: Instruments) -> AsyncIterator[Rig]:
    """Yield the rig; request timeout 0.5 s, so that a hanging request fails soon."""
    api = FakeCCE()
    server = await aiohttp_server(api.app())
    sleeps = HeldSleeps()
    clock = Clock()
    store = JobStore()
    async with aiohttp.ClientSession() as session:
        client = CCEClient(
            session, str(server.make_url("")), TokenAuth(SecretStr(TOKEN)), instruments,
            timeout=0.5, retry=RetryPolicy(attempts=3), sleep=sleeps.sleep,
        )  # fmt: skip
        settings = PollSettings(
            project_id=PROJECT, poll_interval=INTERVAL, poll_concurrency=2, finished_retention=600
        )
        scheduler = Scheduler(client, store, instruments, settings, clock=clock, monotonic=clock)
        yield Rig(api, scheduler, store, clock, sleeps)
        sleeps.over.set()
        await scheduler.stop()


async def _until(condition: Callable[[], bool]) -> None:
    """Wait until `condition` holds; fail after 10 seconds."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - counters of the fake API, no event
            await asyncio.sleep(0.01)


FAULTS = {
    "retry-after": lambda: Fault(503, json.dumps({"code": "busy"}), headers={"Retry-After": "20"}),
    "timeout": lambda: Fault(delay=30.0),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_a_healthy_job_is_polled_while_failing_jobs_wait_to_retry(
    rig: Rig, fault: str
) -> None:
    """With both slots taken by jobs waiting to retry, the healthy job is polled on time."""
    for job_id in (*HANGING, HEALTHY):
        rig.api.add_job(job_id)
    rig.scheduler.watch([*HANGING, HEALTHY])  # the failing jobs take the slots first
    await rig.scheduler.poll_due(jitter=False)  # all good: the credentials have worked
    rig.api.requests.clear()
    for job_id in HANGING:
        rig.api.faults[job_id] = FAULTS[fault]()
    rig.clock.now += INTERVAL
    first_pass = asyncio.create_task(rig.scheduler.poll_due(jitter=False))

    # Before: the healthy job waited for a slot until the retries of the others were over.
    await _until(lambda: rig.api.requests[HEALTHY] == 1)
    await _until(lambda: len(rig.sleeps.calls) == len(HANGING))
    if fault == "retry-after":
        assert rig.sleeps.calls == [20.0, 20.0]
    await _until(lambda: (state := rig.store.get(HEALTHY)) is not None and state.polls == 2)

    # An interval on, the healthy job is due again and polled at once; the others still wait.
    rig.clock.now += INTERVAL
    assert await rig.scheduler.poll_due(jitter=False) == [HEALTHY]
    assert rig.api.requests[HEALTHY] == 2
    assert all(rig.api.requests[job_id] == 1 for job_id in HANGING)

    rig.sleeps.over.set()  # the retries go on, and fail
    await first_pass
    assert all(rig.api.requests[job_id] == 3 for job_id in HANGING)
    for job_id in HANGING:
        state = rig.store.get(job_id)
        assert state is not None
        assert not state.last_ok
