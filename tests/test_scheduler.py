import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from exporter.auth import TokenAuth
from exporter.client import CCEClient
from exporter.errors import ErrorKind
from exporter.instruments import Instruments
from exporter.model import JobTree
from exporter.scheduler import PollSettings, Scheduler
from exporter.state import JobStore
from tests.conftest import Clock
from tests.fakecce import TOKEN, FakeCCE, Fault

PROJECT = "proj"


class WallClock:
    """A wall clock that runs with a monotonic fake clock, and can be stepped apart from it."""

    def __init__(self, monotonic: Clock) -> None:
        self.monotonic = monotonic
        self.offset = 0.0  # how far the wall clock was stepped (an NTP step, a VM resumed)

    def __call__(self) -> float:
        """Tell the wall-clock time."""
        return self.monotonic.now + self.offset


@dataclass
class Rig:
    """A scheduler polling a fake CCE API through the real client."""

    api: FakeCCE
    scheduler: Scheduler
    store: JobStore
    clock: Clock  # the monotonic clock; `wall` moves with it unless stepped
    wall: WallClock
    instruments: Instruments


@pytest.fixture
async def rig(aiohttp_server: AiohttpServer, instruments: Instruments) -> AsyncIterator[Rig]:
    """A scheduler (interval 30 s, concurrency 3, retention 600 s) against a fake API."""
    api = FakeCCE()
    server = await aiohttp_server(api.app())
    clock = Clock()
    wall = WallClock(clock)
    store = JobStore()
    async with aiohttp.ClientSession() as session:
        client = CCEClient(
            session, str(server.make_url("")), TokenAuth(SecretStr(TOKEN)), instruments, timeout=5
        )
        settings = PollSettings(
            project_id=PROJECT, poll_interval=30, poll_concurrency=3, finished_retention=600
        )
        scheduler = Scheduler(client, store, instruments, settings, clock=wall, monotonic=clock)
        yield Rig(api, scheduler, store, clock, wall, instruments)
        await scheduler.stop()


async def test_running_job_is_polled_once_per_interval(rig: Rig) -> None:
    """A running job is polled when due, and not again before its interval has passed."""
    rig.api.add_job("job-1")
    rig.scheduler.watch(["job-1"])
    assert await rig.scheduler.poll_due(jitter=False) == ["job-1"]
    rig.clock.now += 29
    assert await rig.scheduler.poll_due(jitter=False) == []
    rig.clock.now += 1
    assert await rig.scheduler.poll_due(jitter=False) == ["job-1"]
    assert rig.api.requests["job-1"] == 2


async def test_finished_job_is_not_polled_again(rig: Rig) -> None:
    """A job seen in Success or Failed is never requested again."""
    rig.api.add_job("done", phase="Success")
    rig.api.add_job("broken", phase="Failed", reason="quota")
    rig.scheduler.watch(["done", "broken"])
    await rig.scheduler.poll_due(jitter=False)
    for _ in range(5):
        rig.clock.now += 60
        assert await rig.scheduler.poll_due(jitter=False) == []
    assert rig.api.requests == {"done": 1, "broken": 1}
    assert rig.instruments.registry.get_sample_value(
        "cce_exporter_watched_jobs", {"state": "finished"}
    ) == 2.0  # fmt: skip


async def test_finished_job_is_dropped_after_retention(rig: Rig) -> None:
    """A finished job keeps its state for finished_retention seconds, then leaves the store."""
    rig.api.add_job("done", phase="Success")
    rig.scheduler.watch(["done"])
    await rig.scheduler.poll_due(jitter=False)
    rig.clock.now += 599
    await rig.scheduler.poll_due(jitter=False)
    assert "done" in rig.store
    rig.clock.now += 1
    await rig.scheduler.poll_due(jitter=False)
    assert "done" not in rig.store
    assert rig.instruments.registry.get_sample_value(
        "cce_exporter_watched_jobs", {"state": "finished"}
    ) == 0.0  # fmt: skip


async def test_concurrency_is_bounded(rig: Rig) -> None:
    """No more than poll_concurrency requests are in flight at once."""
    rig.api.delay = 0.05
    for index in range(12):
        rig.api.add_job(f"job-{index}")
    rig.scheduler.watch(f"job-{index}" for index in range(12))
    polled = await rig.scheduler.poll_due(jitter=False)
    assert len(polled) == 12
    assert rig.api.max_in_flight == 3
    assert rig.instruments.registry.get_sample_value("cce_exporter_poll_cycle_duration_seconds")


async def test_failed_poll_keeps_the_last_good_tree(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """While polls fail, the last good tree stays and one log line marks the change."""
    rig.api.add_job("job-1")
    rig.scheduler.watch(["job-1"])
    await rig.scheduler.poll_due(jitter=False)
    good = rig.store.get("job-1")
    assert good is not None
    assert good.tree is not None
    rig.api.faults["job-1"] = Fault(status=503, body="busy")
    with caplog.at_level(logging.INFO, logger="exporter.scheduler"):
        for _ in range(3):
            rig.clock.now += 30
            await rig.scheduler.poll_due(jitter=False)
        del rig.api.faults["job-1"]
        rig.clock.now += 30
        await rig.scheduler.poll_due(jitter=False)
    state = rig.store.get("job-1")
    assert state is not None
    assert state.last_ok
    assert state.errors[list(ErrorKind).index(ErrorKind.SERVER_ERROR)] == 3
    events = [record.getMessage() for record in caplog.records]
    assert events == ["job_poll_failing", "job_recovered"]


async def test_failing_state_is_exported_with_the_old_tree(rig: Rig) -> None:
    """A failing job keeps its last good tree while poll_success says 0."""
    rig.api.add_job("job-1")
    rig.scheduler.watch(["job-1"])
    await rig.scheduler.poll_due(jitter=False)
    rig.api.faults["job-1"] = Fault(status=500, body="{}")
    rig.clock.now += 30
    await rig.scheduler.poll_due(jitter=False)
    state = rig.store.get("job-1")
    assert state is not None
    assert state.tree is not None
    assert state.tree.root.phase == "Running"
    assert not state.last_ok
    assert state.last_error_kind is ErrorKind.SERVER_ERROR


async def test_one_job_failing_does_not_touch_others(rig: Rig) -> None:
    """A job that answers 404 fails alone; the others are polled successfully."""
    rig.api.add_job("good-1")
    rig.api.add_job("good-2")
    rig.scheduler.watch(["good-1", "missing", "good-2"])
    await rig.scheduler.poll_due(jitter=False)
    assert {s.job_id: s.last_ok for s in rig.store} == {
        "good-1": True,
        "missing": False,
        "good-2": True,
    }
    missing = rig.store.get("missing")
    assert missing is not None
    assert missing.last_error_kind is ErrorKind.NOT_FOUND


async def test_ready_once_every_job_was_polled(rig: Rig) -> None:
    """Readiness waits for one poll of every watched job, successful or not."""
    rig.api.add_job("job-1")
    rig.scheduler.watch(["job-1", "missing"])
    assert not rig.scheduler.ready
    await rig.scheduler.poll_due(jitter=False)
    assert rig.scheduler.ready
    rig.scheduler.watch(["job-2"])
    assert not rig.scheduler.ready


async def test_watch_is_idempotent_and_unwatch_drops(rig: Rig) -> None:
    """Watching a job twice adds it once; unwatching removes its state."""
    assert rig.scheduler.watch(["a", "b", "a"]) == ["a", "b"]
    assert rig.scheduler.watch(["a"]) == []
    assert rig.scheduler.unwatch("a")
    assert not rig.scheduler.unwatch("a")
    assert [state.job_id for state in rig.store] == ["b"]


async def test_parse_errors_are_counted(rig: Rig) -> None:
    """A timestamp that does not parse is counted by field; the job is still exported."""
    rig.api.add_job("job-1")
    rig.api.jobs["job-1"]["metadata"]["creationTimestamp"] = "last Tuesday"
    rig.scheduler.watch(["job-1"])
    await rig.scheduler.poll_due(jitter=False)
    assert rig.instruments.registry.get_sample_value(
        "cce_exporter_parse_errors_total", {"field": "metadata.creationTimestamp"}
    ) == 1.0  # fmt: skip
    state = rig.store.get("job-1")
    assert state is not None
    assert state.last_ok


async def test_vanished_job_is_polled_ever_more_rarely_then_dropped(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A job answering 404 stays with not_found, polled at doubling gaps, then leaves."""
    rig.scheduler.watch(["gone"])
    polled_at = []
    with caplog.at_level(logging.INFO, logger="exporter.scheduler"):
        for _ in range(700):  # 700 steps of 1 s, past the 600 s retention
            if await rig.scheduler.poll_due(jitter=False):
                polled_at.append(rig.clock.now)
            rig.clock.now += 1
    start = polled_at[0]
    gaps = [b - a for a, b in itertools.pairwise(polled_at)]
    assert gaps[:4] == [30, 30, 60, 120]
    assert all(gap <= 32 * 30 for gap in gaps)
    assert "gone" not in rig.store
    assert rig.api.requests["gone"] == len(polled_at)
    expired = [r for r in caplog.records if r.getMessage() == "job_expired"]
    assert len(expired) == 1
    assert expired[0].fields == {"job_id": "gone", "reason": "not_found"}  # type: ignore[attr-defined]
    assert start + 600 <= rig.clock.now


async def test_job_that_comes_back_is_polled_normally_again(rig: Rig) -> None:
    """A 404 followed by a good answer clears the vanished state and the slow-down."""
    rig.scheduler.watch(["flaky"])
    await rig.scheduler.poll_due(jitter=False)
    state = rig.store.get("flaky")
    assert state is not None
    assert state.vanished_at == rig.clock.now
    rig.api.add_job("flaky")
    rig.clock.now += 30
    assert await rig.scheduler.poll_due(jitter=False) == ["flaky"]
    state = rig.store.get("flaky")
    assert state is not None
    assert state.vanished_at is None
    assert state.last_ok
    rig.clock.now += 30
    assert await rig.scheduler.poll_due(jitter=False) == ["flaky"]


class _Crashing:
    """A reader with a bug: it raises something other than ApiError."""

    def __init__(self) -> None:
        self.calls = 0

    async def show_job(self, project_id: str, job_id: str) -> JobTree:
        """Fail the way a bug would."""
        self.calls += 1
        msg = "a bug"
        raise RuntimeError(msg)


async def test_a_crashing_poll_still_waits_its_interval(
    instruments: Instruments, caplog: pytest.LogCaptureFixture
) -> None:
    """A poll that crashes is logged and the job is polled again only after its interval."""
    clock = Clock()
    reader = _Crashing()
    settings = PollSettings(
        project_id=PROJECT, poll_interval=30, poll_concurrency=3, finished_retention=600
    )
    scheduler = Scheduler(reader, JobStore(), instruments, settings, clock=clock, monotonic=clock)
    scheduler.watch(["job-1"])
    with caplog.at_level(logging.ERROR, logger="exporter.scheduler"):
        await scheduler.poll_due(jitter=False)
        assert await scheduler.poll_due(jitter=False) == []
    assert reader.calls == 1
    assert [r.getMessage() for r in caplog.records] == ["poll_crashed job_id=job-1"]
    clock.now += 30
    assert await scheduler.poll_due(jitter=False) == ["job-1"]


async def test_watched_jobs_gauge_follows_every_change(rig: Rig) -> None:
    """cce_exporter_watched_jobs matches the store through watch, finish, expiry, unwatch."""

    def gauge() -> tuple[float | None, float | None]:
        get = rig.instruments.registry.get_sample_value
        return (
            get("cce_exporter_watched_jobs", {"state": "active"}),
            get("cce_exporter_watched_jobs", {"state": "finished"}),
        )

    rig.api.add_job("run")
    rig.api.add_job("done", phase="Success")
    rig.scheduler.watch(["run", "done", "gone"])
    assert gauge() == (3, 0)
    await rig.scheduler.poll_due(jitter=False)
    assert gauge() == (2, 1)
    rig.scheduler.unwatch("run")
    assert gauge() == (1, 1)
    rig.clock.now += 600
    rig.scheduler.expire()
    assert gauge() == (0, 0)
    assert len(rig.store) == 0


async def test_a_wall_clock_step_back_does_not_stop_polling(rig: Rig) -> None:
    """After the wall clock steps back an hour, a running job is still polled every interval."""
    rig.api.add_job("job-1")
    rig.scheduler.watch(["job-1"])
    await rig.scheduler.poll_due(jitter=False)
    rig.wall.offset -= 3600
    rig.clock.now += 30
    assert await rig.scheduler.poll_due(jitter=False) == ["job-1"]
    rig.clock.now += 30
    assert await rig.scheduler.poll_due(jitter=False) == ["job-1"]
    assert rig.api.requests["job-1"] == 3


async def test_a_wall_clock_step_forward_does_not_cut_retention(rig: Rig) -> None:
    """A job seen finishing keeps its series for its whole retention despite a wall-clock step."""
    rig.api.add_job("job-1")
    rig.scheduler.watch(["job-1"])
    await rig.scheduler.poll_due(jitter=False)
    rig.api.add_job("job-1", phase="Failed")
    rig.clock.now += 30
    await rig.scheduler.poll_due(jitter=False)
    rig.wall.offset += 7200
    rig.clock.now += 599
    await rig.scheduler.poll_due(jitter=False)
    assert "job-1" in rig.store
    rig.clock.now += 1
    await rig.scheduler.poll_due(jitter=False)
    assert "job-1" not in rig.store


async def test_the_404_slow_down_runs_on_the_monotonic_clock(rig: Rig) -> None:
    """A wall-clock step neither stretches nor shortens the gaps between polls of a vanished job."""
    rig.scheduler.watch(["gone"])
    polled_at = []
    for step in range(200):
        if step == 45:
            rig.wall.offset += 100_000
        if step == 100:
            rig.wall.offset -= 300_000
        if await rig.scheduler.poll_due(jitter=False):
            polled_at.append(rig.clock.now)
        rig.clock.now += 1
    gaps = [b - a for a, b in itertools.pairwise(polled_at)]
    assert gaps == [30, 30, 60]
    assert "gone" in rig.store
