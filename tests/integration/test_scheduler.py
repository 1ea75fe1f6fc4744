import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from exporter.cce.auth.base import TokenAuth
from exporter.cce.client import CCEClient
from exporter.errors import ApiError, ErrorKind
from exporter.jobs.ids import Api
from exporter.jobs.state import JobState, JobStore
from exporter.jobs.tree import JobTree
from exporter.metrics.cce_exporter import Instruments
from exporter.scheduler import PollSettings, Scheduler
from exporter.watch.jobsfile import JobsFile
from exporter.watch.watchlist import WatchList
from tests.standins.cce import TOKEN, FakeCCE, Fault
from tests.standins.clocks import Clock

PROJECT = "proj"
HOUR = 3600.0


class WallClock:
    """A wall clock that runs with a monotonic fake clock, and can be stepped apart from it."""

    def __init__(self, monotonic: Clock) -> None:
        self.monotonic = monotonic
        self.offset = 0.0  # how far the wall clock was stepped (an NTP step, a VM resumed)

    def __call__(self) -> float:
        """Tell the wall-clock time."""
        return self.monotonic.now + self.offset


class RecordingStore(JobStore):
    """A job store that remembers every job ever stored with a tree, however briefly."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()

    def put(self, state: JobState) -> None:
        """Store the state and remember its job if the state has a tree."""
        if state.tree is not None:
            self.read.add(state.job_id)
        super().put(state)


@dataclass
class Rig:
    """A scheduler polling a fake CCE API through the real client."""

    api: FakeCCE
    scheduler: Scheduler
    store: RecordingStore
    clock: Clock  # the monotonic clock; `wall` moves with it unless stepped
    wall: WallClock
    instruments: Instruments


@pytest.fixture
async def rig(
    aiohttp_server: AiohttpServer, instruments: Instruments, request: pytest.FixtureRequest
) -> AsyncIterator[Rig]:
    """A scheduler (interval 30 s, concurrency 3, retention 600 s or the param) on a fake API."""
    retention = getattr(request, "param", 600.0)
    api = FakeCCE()
    server = await aiohttp_server(api.app())
    clock = Clock()
    wall = WallClock(clock)
    store = RecordingStore()
    async with aiohttp.ClientSession() as session:
        client = CCEClient(
            session, str(server.make_url("")), TokenAuth(SecretStr(TOKEN)), instruments, timeout=5
        )
        settings = PollSettings(
            project_id=PROJECT, poll_interval=30, poll_concurrency=3, finished_retention=retention
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
        "cce_exporter_watched_jobs", {"target": "default", "state": "finished"}
    ) == 2.0  # fmt: skip


async def test_finished_job_is_dropped_after_retention(rig: Rig) -> None:
    """A job that just finished keeps its state for finished_retention seconds, then leaves."""
    rig.api.add_job("done", phase="Success", updated=rig.wall())
    rig.scheduler.watch(["done"])
    await rig.scheduler.poll_due(jitter=False)
    rig.clock.now += 599
    await rig.scheduler.poll_due(jitter=False)
    assert "done" in rig.store
    rig.clock.now += 1
    await rig.scheduler.poll_due(jitter=False)
    assert "done" not in rig.store
    assert rig.instruments.registry.get_sample_value(
        "cce_exporter_watched_jobs", {"target": "default", "state": "finished"}
    ) == 0.0  # fmt: skip


async def test_concurrency_is_bounded(rig: Rig) -> None:
    """No more than poll_concurrency requests are in flight at once."""
    # A first poll proves the credentials: until then one request goes at a time.
    rig.api.add_job("warm-up")
    rig.scheduler.watch(["warm-up"])
    await rig.scheduler.poll_due(jitter=False)
    # A barrier: no answer until three requests have arrived, so three surely
    # overlap; then each answer takes a while, so a fourth would overlap too.
    all_in = asyncio.Event()
    arrived = itertools.count(1)

    def arrive(request: web.Request) -> None:
        if next(arrived) == 3:
            all_in.set()

    rig.api.on_request = arrive
    rig.api.delay = 0.05
    for index in range(12):
        rig.api.add_job(f"job-{index}")
        rig.api.faults[f"job-{index}"] = Fault(hold=all_in)
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
    assert expired[0].fields == {"target": "default", "job_id": "gone", "reason": "not_found"}  # type: ignore[attr-defined]
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


async def test_only_a_good_answer_ends_a_run_of_404s(rig: Rig) -> None:
    """Another failure between two 404s keeps the job's vanished clock: it still leaves on time."""
    rig.scheduler.watch(["gone"])
    start = rig.clock.now
    await rig.scheduler.poll_due(jitter=False)  # 404
    rig.api.faults["gone"] = Fault(400, '{"error_code": "CCE.01400001"}', times=1)
    rig.clock.now = start + 30
    assert await rig.scheduler.poll_due(jitter=False) == ["gone"]
    state = rig.store.get("gone")
    assert state is not None
    assert state.last_error_kind is ErrorKind.INVALID_RESPONSE
    assert state.vanished_at == start
    rig.clock.now = start + 600
    assert rig.scheduler.expire() == ["gone"]


class _Crashing:
    """A reader with a bug: it raises something other than ApiError."""

    def __init__(self) -> None:
        self.calls = 0

    async def show_job(self, project_id: str, job_id: str, api: Api = Api.CCE) -> JobTree:
        """Fail the way a bug would."""
        self.calls += 1
        msg = "a bug"
        raise RuntimeError(msg)

    async def find_job(self, project_id: str, job_id: str) -> tuple[Api, JobTree]:
        """Find every job on CCE."""
        return Api.CCE, await self.show_job(project_id, job_id)


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
    [record] = caplog.records
    assert record.getMessage() == "poll_crashed"
    assert record.fields == {"job_id": "job-1"}  # type: ignore[attr-defined]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    clock.now += 30
    assert await scheduler.poll_due(jitter=False) == ["job-1"]


async def test_watched_jobs_gauge_follows_every_change(rig: Rig) -> None:
    """cce_exporter_watched_jobs matches the store through watch, finish, expiry, unwatch."""

    def gauge() -> tuple[float | None, float | None]:
        get = rig.instruments.registry.get_sample_value
        return (
            get("cce_exporter_watched_jobs", {"target": "default", "state": "active"}),
            get("cce_exporter_watched_jobs", {"target": "default", "state": "finished"}),
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


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, object]]:
    """The fields of each logged event of that name."""
    return [r.fields for r in caplog.records if r.getMessage() == name]  # type: ignore[attr-defined]


async def test_a_job_found_finished_past_its_retention_is_never_exported(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A job that ended longer ago than the retention, read for the first time, leaves at once."""
    rig.api.add_job("old", phase="Failed", reason="quota", updated=rig.wall() - 2 * 86400)
    rig.scheduler.watch(["old"])
    with caplog.at_level(logging.INFO, logger="exporter.scheduler"):
        assert await rig.scheduler.poll_due(jitter=False) == ["old"]
        for _ in range(5):
            rig.clock.now += 60
            assert await rig.scheduler.poll_due(jitter=False) == []
    assert "old" not in rig.store.read  # no phase series, not even for a moment
    assert rig.api.requests["old"] == 1
    assert _events(caplog, "job_expired") == [
        {"target": "default", "job_id": "old", "reason": "finished"}
    ]
    assert _events(caplog, "job_finished") == []
    for state in ("active", "finished"):
        assert rig.instruments.registry.get_sample_value(
            "cce_exporter_watched_jobs", {"target": "default", "state": state}
        ) == 0.0  # fmt: skip


@pytest.mark.parametrize("rig", [HOUR], indirect=True)
async def test_a_job_found_finished_keeps_what_is_left_of_its_retention(rig: Rig) -> None:
    """A job that ended 10 minutes before its first read keeps its series 50 more minutes."""
    ended = rig.wall() - 600
    rig.api.add_job("recent", phase="Failed", updated=ended)
    rig.scheduler.watch(["recent"])
    await rig.scheduler.poll_due(jitter=False)
    state = rig.store.get("recent")
    assert state is not None
    assert state.finished_at == ended
    rig.clock.now += 50 * 60 - 1
    await rig.scheduler.poll_due(jitter=False)
    assert "recent" in rig.store
    rig.clock.now += 1
    await rig.scheduler.poll_due(jitter=False)
    assert "recent" not in rig.store
    assert rig.api.requests["recent"] == 1


@pytest.mark.parametrize("rig", [HOUR], indirect=True)
async def test_a_job_seen_running_keeps_the_retention_from_when_it_was_seen_finished(
    rig: Rig,
) -> None:
    """A job watched while running counts its retention from the poll that saw it finished."""
    rig.api.add_job("job-1", updated=rig.wall() - 2 * HOUR)
    rig.scheduler.watch(["job-1"])
    await rig.scheduler.poll_due(jitter=False)
    # Its own update time is two hours old: it must not count.
    rig.api.add_job("job-1", phase="Failed", updated=rig.wall() - 2 * HOUR)
    rig.clock.now += 30
    await rig.scheduler.poll_due(jitter=False)
    state = rig.store.get("job-1")
    assert state is not None
    assert state.finished_at == rig.wall()
    rig.clock.now += HOUR - 1
    await rig.scheduler.poll_due(jitter=False)
    assert "job-1" in rig.store
    rig.clock.now += 1
    await rig.scheduler.poll_due(jitter=False)
    assert "job-1" not in rig.store


@pytest.mark.parametrize("updated", ["2999-01-01 00:00:00 +0000 UTC", "last Tuesday"])
async def test_a_found_finished_job_without_a_usable_end_counts_from_now(
    rig: Rig, updated: str
) -> None:
    """An update time in the future or unreadable makes the first read the job's end."""
    rig.api.add_job("odd", phase="Success")
    rig.api.jobs["odd"]["metadata"]["updateTimestamp"] = updated
    rig.scheduler.watch(["odd"])
    await rig.scheduler.poll_due(jitter=False)
    state = rig.store.get("odd")
    assert state is not None
    assert state.finished_at == rig.wall()


async def test_a_job_dropped_at_its_first_read_is_not_offered_again(
    rig: Rig, tmp_path: Path
) -> None:
    """The jobs file still naming a job dropped at its first read does not bring it back."""
    watchlist = WatchList(rig.scheduler, rig.instruments)
    rig.api.add_job("old", phase="Failed", updated=rig.wall() - 86400)
    rig.api.add_job("new")
    path = tmp_path / "jobs.txt"
    path.write_text("old\n")
    jobs_file = JobsFile(path, watchlist)
    jobs_file.check()
    await rig.scheduler.poll_due(jitter=False)
    path.write_text("old\nnew\n")  # longer: the file's signature changes
    while not jobs_file.check():
        pass
    rig.clock.now += 30
    await rig.scheduler.poll_due(jitter=False)
    assert {state.job_id for state in rig.store} == {"new"}
    assert rig.api.requests == {"old": 1, "new": 1}


class _Slow:
    """A reader whose every read takes `seconds` of a fake clock, then fails."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds
        self.sent: list[tuple[str, float]] = []  # (job ID, when its request went out)

    async def show_job(self, project_id: str, job_id: str, api: Api = Api.CCE) -> JobTree:
        """Let the time of one read pass, and answer a server error."""
        self.sent.append((job_id, self.clock.now))
        self.clock.now += self.seconds
        raise ApiError(ErrorKind.SERVER_ERROR, "down")

    async def find_job(self, project_id: str, job_id: str) -> tuple[Api, JobTree]:
        """Find every job on CCE."""
        return Api.CCE, await self.show_job(project_id, job_id)


def _one_at_a_time(reader: _Slow, clock: Clock, instruments: Instruments) -> Scheduler:
    """A scheduler polling every 30 s, one request at a time, on the reader's clock."""
    settings = PollSettings(
        project_id=PROJECT, poll_interval=30, poll_concurrency=1, finished_retention=600
    )
    return Scheduler(reader, JobStore(), instruments, settings, clock=clock, monotonic=clock)


async def test_the_jobs_of_a_pass_are_due_together_again(instruments: Instruments) -> None:
    """Jobs polled in one pass are due again together, however long each queued for its turn."""
    clock = Clock()
    scheduler = _one_at_a_time(_Slow(clock, 0.4), clock, instruments)
    scheduler.watch(["a", "b", "c"])
    start = clock.now
    assert await scheduler.poll_due(jitter=False) == ["a", "b", "c"]
    clock.now = start + 29.9
    assert scheduler.due_jobs() == []
    clock.now = start + 30
    assert await scheduler.poll_due(jitter=False) == ["a", "b", "c"]


async def test_a_job_that_queued_past_its_interval_skips_the_round(
    instruments: Instruments,
) -> None:
    """A job whose turn came after its next round was due counts its interval from its read."""
    clock = Clock()
    scheduler = _one_at_a_time(_Slow(clock, 20), clock, instruments)
    scheduler.watch(["a", "b", "c"])
    start = clock.now
    # a reads at 0, b at 20, c at 40: c's next round (30) is gone by then.
    await scheduler.poll_due(jitter=False)
    clock.now = start + 30
    assert scheduler.due_jobs() == ["a", "b"]
    clock.now = start + 70
    assert scheduler.due_jobs() == ["a", "b", "c"]


async def test_no_request_goes_within_an_interval_of_the_last(instruments: Instruments) -> None:
    """A job whose last request queued goes, in its next pass, no sooner than an interval after."""
    clock = Clock()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds

    reader = _Slow(clock, 0.4)
    settings = PollSettings(
        project_id=PROJECT, poll_interval=30, poll_concurrency=1, finished_retention=600, jitter=0
    )
    scheduler = Scheduler(
        reader, JobStore(), instruments, settings, clock=clock, monotonic=clock, sleep=sleep
    )
    scheduler.watch(["a", "b"])
    start = clock.now
    await scheduler.poll_due(jitter=True)  # a goes at 0; b queues behind it and goes at 0.4
    assert sleeps == []
    scheduler.unwatch("a")  # nothing queues b this time
    clock.now = start + 30
    assert await scheduler.poll_due(jitter=True) == ["b"]  # due with a's round, at 30
    assert sleeps == [pytest.approx(0.4)]
    assert [when - start for job_id, when in reader.sent if job_id == "b"] == [
        pytest.approx(0.4),
        pytest.approx(30.4),
    ]


class _Held:
    """A reader that holds the reads of some jobs until released, and fails the others at once."""

    def __init__(self) -> None:
        self.release = {"slow": asyncio.Event(), "fast": asyncio.Event()}
        self.reads: list[str] = []
        self.counted = {2: asyncio.Event(), 3: asyncio.Event()}  # set at that many reads
        self.hold = {"slow"}

    async def show_job(self, project_id: str, job_id: str, api: Api = Api.CCE) -> JobTree:
        """Wait while the job is held, then answer a server error."""
        self.reads.append(job_id)
        if len(self.reads) in self.counted:
            self.counted[len(self.reads)].set()
        if job_id in self.hold:
            await self.release[job_id].wait()
        raise ApiError(ErrorKind.SERVER_ERROR, "down")

    async def find_job(self, project_id: str, job_id: str) -> tuple[Api, JobTree]:
        """Find every job on CCE."""
        return Api.CCE, await self.show_job(project_id, job_id)


async def test_a_pass_that_ends_leaves_its_jobs_polled_by_a_later_pass_in_flight(
    instruments: Instruments,
) -> None:
    """A job already in a later pass stays in flight when its earlier pass ends: polled once."""
    clock = Clock()
    reader = _Held()
    settings = PollSettings(
        project_id=PROJECT, poll_interval=30, poll_concurrency=4, finished_retention=600
    )
    scheduler = Scheduler(reader, JobStore(), instruments, settings, clock=clock, monotonic=clock)
    scheduler.watch(["slow", "fast"])
    first = asyncio.create_task(scheduler.poll_due(jitter=False))
    await reader.counted[2].wait()  # fast's read has failed, slow's is held
    assert reader.reads == ["slow", "fast"]
    clock.now += 30
    reader.hold.add("fast")
    second = asyncio.create_task(scheduler.poll_due(jitter=False))
    await reader.counted[3].wait()
    assert reader.reads[2] == "fast"  # the second pass's read of fast, held now
    reader.release["slow"].set()
    await first  # the first pass ends while fast is still in the second one
    clock.now += 60
    assert scheduler.due_jobs() == ["slow"]
    reader.release["fast"].set()
    await second
