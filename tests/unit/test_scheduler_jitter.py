"""The poll jitter: each request of a pass waits its own random draw, the cadence stays put."""

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import SecretStr

from exporter import app
from exporter.jobs.ids import Api
from exporter.jobs.state import JobStore
from exporter.jobs.tree import JobTree, flatten
from exporter.metrics.cce_exporter import Instruments
from exporter.scheduler import PollSettings, Scheduler
from exporter.settings.model import Settings
from tests.standins.clocks import Clock

PROJECT = "proj"
INTERVAL = 30.0
JITTER = 0.8


class ScriptedRandom(random.Random):
    """A random source whose `random()` gives a fixed sequence; `uniform` is the stdlib's own."""

    def __init__(self, values: Sequence[float]) -> None:
        super().__init__()
        self.values = list(values)
        self.draws: list[float] = []  # what `uniform` returned, in order

    def random(self) -> float:
        """Give the next scripted value."""
        return self.values.pop(0)

    def uniform(self, a: float, b: float) -> float:
        """Draw as the stdlib does, and remember the draw."""
        draw = super().uniform(a, b)
        self.draws.append(draw)
        return draw


class Rig:
    """A reader and a sleep that record, per poll task, the sleep that preceded each request."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.slept: dict[asyncio.Task[Any] | None, list[float]] = {}
        self.sent: dict[str, list[float]] = {}  # job ID -> sleeps its task made before the read

    async def sleep(self, seconds: float) -> None:
        """Record the sleep against the task that asked for it, and let the fake time pass."""
        self.slept.setdefault(asyncio.current_task(), []).append(seconds)
        self.clock.now += seconds

    async def show_job(self, project_id: str, job_id: str, api: Api = Api.CCE) -> JobTree:
        """Answer a running job, noting what its task slept before this request."""
        self.sent[job_id] = list(self.slept.get(asyncio.current_task(), []))
        return flatten({"metadata": {"uid": job_id}, "status": {"phase": "Running"}}, job_id)

    async def find_job(self, project_id: str, job_id: str) -> tuple[Api, JobTree]:
        """Find every job on CCE."""
        return Api.CCE, await self.show_job(project_id, job_id)


def _scheduler(
    rig: Rig, rng: ScriptedRandom, instruments: Instruments, *, concurrency: int, jitter: float
) -> Scheduler:
    """A scheduler over the rig's reader, clock and sleep, drawing its jitter from `rng`."""
    settings = PollSettings(
        project_id=PROJECT,
        poll_interval=INTERVAL,
        poll_concurrency=concurrency,
        finished_retention=600,
        jitter=jitter,
    )
    return Scheduler(
        rig,
        JobStore(),
        instruments,
        settings,
        clock=rig.clock,
        monotonic=rig.clock,
        rng=rng,
        sleep=rig.sleep,
    )


async def test_each_poll_of_a_pass_sleeps_its_own_draw_and_the_pass_stays_together(
    instruments: Instruments,
) -> None:
    """Every request of a pass waits exactly its rng draw (at most the jitter); all due again."""
    clock = Clock()
    rig = Rig(clock)
    rng = ScriptedRandom([0.25, 0.5, 0.999])
    scheduler = _scheduler(rig, rng, instruments, concurrency=3, jitter=JITTER)
    scheduler.watch(["a", "b", "c"])
    start = clock.now
    assert await scheduler.poll_due() == ["a", "b", "c"]
    assert rng.draws == pytest.approx([0.25 * JITTER, 0.5 * JITTER, 0.999 * JITTER])
    assert all(0 <= draw <= JITTER for draw in rng.draws)
    # Each request went after one sleep of its own draw, in its own task.
    assert rig.sent == {job: [draw] for job, draw in zip("abc", rng.draws, strict=True)}
    # The sleeps ran one after the other on the fake clock, so the last request
    # went out well after the pass began; the jobs are due together all the same.
    assert clock.now - start == pytest.approx(sum(rng.draws))
    clock.now = start + INTERVAL - 0.01
    assert scheduler.due_jobs() == []
    clock.now = start + INTERVAL
    assert scheduler.due_jobs() == ["a", "b", "c"]


async def test_a_pass_without_jitter_does_not_sleep_or_draw(instruments: Instruments) -> None:
    """`poll_due(jitter=False)` (the --once run) sends every request at once, drawing nothing."""
    clock = Clock()
    rig = Rig(clock)
    rng = ScriptedRandom([])
    scheduler = _scheduler(rig, rng, instruments, concurrency=3, jitter=1.0)
    scheduler.watch(["a", "b"])
    assert await scheduler.poll_due(jitter=False) == ["a", "b"]
    assert rng.draws == []
    assert rig.sent == {"a": [], "b": []}


@pytest.mark.parametrize(
    ("poll_interval", "jitter"), [(30.0, 1.0), (10.0, 1.0), (5.0, 0.5), (2.0, 0.2), (0.5, 0.05)]
)
async def test_the_service_jitter_is_a_tenth_of_the_interval_up_to_one_second(
    monkeypatch: pytest.MonkeyPatch, poll_interval: float, jitter: float
) -> None:
    """The exporter's scheduler gets a jitter of min(1 s, poll_interval / 10)."""
    built: list[PollSettings] = []

    class RecordingScheduler(Scheduler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(args[3])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(app, "Scheduler", RecordingScheduler)
    settings = Settings(
        endpoint="http://127.0.0.1:9",
        project_id=PROJECT,
        auth_token=SecretStr("token"),
        poll_interval=poll_interval,
    )
    async with app.exporter(settings) as ex:
        assert isinstance(ex.scheduler, RecordingScheduler)
    assert [poll.jitter for poll in built] == [pytest.approx(jitter)]
    assert built[0].poll_interval == poll_interval


async def test_a_late_request_does_not_keep_the_next_ones_late(instruments: Instruments) -> None:
    """After a request at the end of its jitter window, the next one may go at its own draw."""
    clock = Clock()
    rig = Rig(clock)
    rng = ScriptedRandom([0.999, 0.0])
    scheduler = _scheduler(rig, rng, instruments, concurrency=1, jitter=JITTER)
    scheduler.watch(["a"])
    start = clock.now
    await scheduler.poll_due()
    assert rig.sent == {"a": [pytest.approx(0.999 * JITTER)]}
    clock.now = start + INTERVAL
    await scheduler.poll_due()
    # Drawn 0: the request goes at once, not held back to the last one's lateness.
    assert rig.sent == {"a": []}
    assert clock.now == start + INTERVAL
