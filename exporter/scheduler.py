"""The poll loop: every watched job that is not finished, every `poll_interval`.

Two clocks: the wall clock (`time.time`) stamps what is exported and tells
how long ago a job ended; the monotonic clock (`time.monotonic`) times
everything the loop waits for (the next poll of a job, the end of its
retention), so that a step of the wall clock (an NTP step, a VM resumed)
neither stops polling nor drops jobs early.

The scheduler owns which jobs are watched: one `Slot` per job holds all it
knows of the job but its snapshot (which the `JobStore` holds), the routes
that named it among them, and the target it belongs to, so a job leaves with
everything about it at once.

Targets: each job is polled through its target's reader (a client of its
own: endpoint, credentials, rate limit, backoffs) with its target's project
ID. The concurrency slots are shared by all targets, handed out to the
targets with polls waiting in turn (`exporter.cce.concurrency`). A job ID
belongs to one target: watching it for another is refused here too.
"""

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any

from exporter.cce.auth.gate import AUTH_KINDS
from exporter.cce.concurrency import RequestSlots
from exporter.errors import ApiError
from exporter.jobs.ids import Api
from exporter.jobs.state import DEFAULT_TARGET, JobState, JobStore
from exporter.jobs.tree import JobTree
from exporter.logs import about_target, crash, event
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.history import JobHistory
from exporter.watch.polling import (
    JobReader,
    PollSettings,
    PollTarget,
    PollTargets,
    Slot,
    next_delay,
)

__all__ = ["JobReader", "PollSettings", "PollTarget", "Scheduler", "next_delay"]

log = logging.getLogger(__name__)

# The most time a loop turn sleeps, so that retention is enforced on time.
_MAX_SLEEP = 1.0


class Scheduler:
    """Polls the watched jobs and keeps the latest state of each in the store.

    `reader` is the reader of the one implicit target (`default`, of
    `settings.project_id`), or every target with its own.
    """

    def __init__(
        self,
        reader: JobReader | Sequence[PollTarget],
        store: JobStore,
        instruments: Instruments,
        settings: PollSettings,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        history: JobHistory | None = None,
    ) -> None:
        self._targets = PollTargets(reader, settings.project_id)
        self._history = history  # told of every change of state: it counts the jobs that end
        self._store = store
        self._instruments = instruments
        self._settings = settings
        self._clock = clock  # wall clock: exported times, when a job ended
        self._monotonic = monotonic  # every wait: due times, retention
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._sleep = sleep  # before a request: its jitter, or its interval's end
        # poll_concurrency: a poll gives its slot up while its retries wait.
        # With several targets, each leaves one slot for every other.
        share = settings.poll_concurrency - (len(self._targets.names) - 1)
        self._requests = RequestSlots(settings.poll_concurrency, share=share)
        self._slots: dict[str, Slot] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._wakes_at = -math.inf  # when the loop's current sleep ends (monotonic)
        self._watched = {
            (name, state): instruments.target(name).watched_jobs.labels(state)
            for name in self._targets.names
            for state in ("active", "finished")
        }

    @property
    def ready(self) -> bool:
        """Tell whether every watched job has been polled at least once."""
        return all(state.polls > 0 for state in self._store)

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._slots

    @property
    def targets(self) -> tuple[str, ...]:
        """The names of the targets, in the order given."""
        return self._targets.names

    def target_of(self, job_id: str) -> str | None:
        """Return the target a watched job belongs to (None when it is not watched)."""
        slot = self._slots.get(job_id)
        return slot.target.name if slot is not None else None

    def routes(self, job_id: str) -> frozenset[str]:
        """Return the routes that name a watched job (empty when it is not watched)."""
        slot = self._slots.get(job_id)
        return frozenset(slot.routes) if slot is not None else frozenset()

    def watch(
        self,
        job_ids: Iterable[str],
        route: str = "",
        target: str | None = None,
        api: Api | None = None,
    ) -> list[str]:
        """Watch jobs of `target` for `route` (new ones due at once); return the IDs that were new.

        `target` may be left out when there is only one. A job watched for
        another target stays that target's, and `route` is not added to it.
        `api` is the API the jobs live on, when the route knows it.
        """
        poll_target = self._targets.get(target)
        now = self._monotonic()
        added = []
        for job_id in job_ids:
            slot = self._slots.get(job_id)
            if slot is not None:
                if slot.target is poll_target:
                    slot.routes.add(route)
                    slot.api = slot.api or api
                continue
            self._slots[job_id] = Slot(poll_target, {route}, due=now, api=api)
            state = JobState(job_id, target=poll_target.name, project_id=poll_target.project_id)
            self._store.put(state)
            self._tally(None, state)
            added.append(job_id)
        if added:
            self._wake.set()
        return added

    def adopt(self, state: JobState, route: str = "") -> bool:
        """Start watching a job whose state is already known; return whether it was new.

        The job belongs to the state's target. A finished state (a job that
        the job list shows ended) is never polled, and leaves at once when its
        retention is already over; any other is due at once.
        """
        if state.job_id in self._slots:
            return False
        slot = Slot(self._targets.get(state.target), {route}, api=state.api)
        if state.finished:
            left = self._retention_left(state, self._clock())
            if left <= 0:
                with about_target(state.target):
                    event(log, logging.INFO, "job_expired", job_id=state.job_id, reason="finished")
                return True
            slot.keep_until = self._monotonic() + left
        else:
            slot.due = self._monotonic()
            self._wake.set()
        self._slots[state.job_id] = slot
        self._store.put(state)
        self._tally(None, state)
        return True

    def release(self, job_id: str, route: str) -> bool:
        """Drop `route`'s claim on a job; stop watching it when no route names it any more.

        Return whether it was stopped.
        """
        slot = self._slots.get(job_id)
        if slot is None:
            return False
        slot.routes.discard(route)
        return not slot.routes and self.unwatch(job_id)

    def unwatch(self, job_id: str) -> bool:
        """Stop watching a job whatever named it, and drop its series; return whether it was."""
        state = self._store.get(job_id)
        self._store.remove(job_id)
        slot = self._slots.pop(job_id, None)
        self._tally(state, None)
        return slot is not None

    def due_jobs(self) -> list[str]:
        """List the jobs whose poll is due now and not already under way."""
        now = self._monotonic()
        return [
            job_id
            for job_id, slot in self._slots.items()
            if slot.due is not None and slot.due <= now and not slot.in_flight
        ]

    async def poll_due(self, *, jitter: bool = True) -> list[str]:
        """Poll every due job once, concurrently (bounded); return their IDs."""
        self.expire()
        due = self.due_jobs()
        if due:
            await self._pass(due, jitter=jitter)
        return due

    def expire(self) -> list[str]:
        """Drop finished and vanished jobs whose retention has run out; return their IDs."""
        now = self._monotonic()
        retention = self._settings.finished_retention
        ended, vanished = [], []
        for job_id, slot in self._slots.items():
            if slot.keep_until is not None and now >= slot.keep_until:
                ended.append(job_id)
            elif slot.gone_since is not None and now - slot.gone_since >= retention:
                vanished.append(job_id)
        for job_id in ended:
            self._expire(job_id, "finished")
        for job_id in vanished:
            self._expire(job_id, "not_found")
        return ended + vanished

    def _expire(self, job_id: str, reason: str) -> None:
        target = self.target_of(job_id)
        self.unwatch(job_id)
        with about_target(target or DEFAULT_TARGET):
            event(log, logging.INFO, "job_expired", job_id=job_id, reason=reason)

    def _retention_left(self, state: JobState, now: float) -> float:
        """Return the seconds a finished job has still to keep its series at `now` (wall)."""
        finished_at = now if state.finished_at is None else state.finished_at
        return self._settings.finished_retention - (now - finished_at)

    async def run(self) -> None:
        """Poll for ever: each due job as soon as it is due; cancel to stop."""
        try:
            while True:
                self.expire()
                due = self.due_jobs()
                if due:
                    self._spawn(self._pass(due, jitter=True))
                await self._sleep_until_due()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Cancel every poll under way and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sleep_until_due(self) -> None:
        idle = [s.due for s in self._slots.values() if s.due is not None and not s.in_flight]
        self._wakes_at = min([*idle, self._monotonic() + _MAX_SLEEP])
        delay = self._wakes_at - self._monotonic()
        self._wake.clear()
        if delay > 0:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow
            # a cancellation that arrives as the wait ends, and shutdown hangs.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
        else:
            await asyncio.sleep(0)

    async def _pass(self, job_ids: list[str], *, jitter: bool) -> None:
        started = time.monotonic()
        slots = [self._slots[job_id] for job_id in job_ids]
        for slot in slots:
            slot.in_flight = True
        # Each job is free to be due again once its own poll ends, not when the
        # slowest job of the pass ends (it may be in a later pass by then);
        # these are the ones whose poll has not ended, or never began.
        unreleased = {id(slot): slot for slot in slots}

        async def poll(job_id: str, slot: Slot) -> None:
            try:
                await self._poll(job_id, slot, jitter=jitter)
            finally:
                del unreleased[id(slot)]
                slot.in_flight = False
                # Wake the loop only when this job is due before it would wake
                # anyway: each wake walks every job, and a wake per poll would
                # make a pass cost the square of the number of jobs.
                if slot.due is not None and slot.due < self._wakes_at:
                    self._wake.set()

        try:
            results = await asyncio.gather(
                *(poll(job_id, slot) for job_id, slot in zip(job_ids, slots, strict=True)),
                return_exceptions=True,
            )
        finally:
            for slot in unreleased.values():
                slot.in_flight = False
        for job_id, result in zip(job_ids, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                # A bug, not an API failure: keep the other jobs going and say so.
                crash(log, "poll_crashed", result, job_id=job_id)
        self._instruments.poll_cycle.set(time.monotonic() - started)
        self._wake.set()

    async def _poll(self, job_id: str, slot: Slot, *, jitter: bool) -> None:
        scheduled = slot.due if slot.due is not None else self._monotonic()
        if jitter:
            # Spread the pass's requests, and never ask for a job much sooner
            # than an interval after its last request (whose jitter or queue
            # may have made it late): a pass starts on time.
            spread = self._rng.uniform(0, self._settings.jitter) if self._settings.jitter else 0
            early = slot.not_before - self._monotonic()
            if max(spread, early) > 0:
                await self._sleep(max(spread, early))
        target = slot.target
        async with self._requests.hold(target.name):
            if self._slots.get(job_id) is not slot:  # unwatched while it waited
                return
            started = self._monotonic()
            project_id = target.project_id
            with about_target(target.name):
                try:
                    if slot.api is None:  # found on one API, it is asked there only
                        api, tree = await target.reader.find_job(project_id, job_id)
                    else:
                        api = slot.api
                        tree = await target.reader.show_job(project_id, job_id, api)
                except ApiError as exc:
                    self._record_failure(job_id, slot, exc)
                else:
                    slot.api = api
                    self._record_success(job_id, slot, tree)
                finally:
                    # Even after a bug (an exception other than ApiError), the job
                    # waits its interval: a crash must not turn into a tight loop.
                    self._reschedule(slot, scheduled, started)

    def _reschedule(self, slot: Slot, scheduled: float, started: float) -> None:
        """Set when a job is next due: an interval after it was last due.

        Counting from when it was due, not from when its request went out,
        keeps the cadence exact whatever the jitter and the queue, and keeps
        the jobs of one pass together in the next one. A job that waited
        longer than its interval counts from its request instead: missed
        rounds are skipped, not made up in a burst. Its next request waits,
        if need be, until an interval less the jitter after this one went out.
        """
        if slot.due is not None:  # neither finished nor unwatched (a dropped slot is left alone)
            since = slot.gone_since
            gone_for = None if since is None else started - since
            delay = next_delay(gone_for, self._settings.poll_interval)
            due = scheduled + delay
            slot.due = due if due > started else started + delay
            # Up to one jitter early: a request that went out late (its jitter
            # draw, a queue) must not hold every later one as late, or the
            # requests would creep to the end of the jitter window and bunch.
            slot.not_before = started + delay - self._settings.jitter

    def _record_success(self, job_id: str, slot: Slot, tree: JobTree) -> None:
        before = self._store.get(job_id)
        if before is None or self._slots.get(job_id) is not slot:  # unwatched meanwhile
            return
        now = self._clock()
        after = before.succeeded(tree, now, slot.api)
        for name in tree.parse_errors:
            self._instruments.parse_errors.labels(name).inc()
        if before.failing:
            event(log, logging.INFO, "job_recovered", job_id=job_id, after_polls=before.polls)
        left = self._retention_left(after, now)
        if after.finished and before.tree is None and left <= 0:
            # It ended longer ago than the retention before its first good read
            # (a restart, an ID added late): it leaves without ever being
            # exported, so that an old failure does not page again.
            self._expire(job_id, "finished")
            return
        self._store.put(after)
        self._tally(before, after)
        slot.gone_since = None
        if after.finished:
            slot.due = None
            slot.keep_until = self._monotonic() + left
            root = tree.root
            event(
                log,
                logging.WARNING if root.phase == "Failed" else logging.INFO,
                "job_finished",
                job_id=job_id,
                job_type=root.job_type,
                phase=root.phase,
                reason=root.reason,
            )

    def _record_failure(self, job_id: str, slot: Slot, exc: ApiError) -> None:
        before = self._store.get(job_id)
        if before is None or self._slots.get(job_id) is not slot:  # unwatched meanwhile
            return
        after = before.failed(exc.kind, str(exc), self._clock())
        self._store.put(after)
        if after.vanished_at is not None and slot.gone_since is None:
            slot.gone_since = self._monotonic()
        # Refused credentials fail every job alike; the auth gate logs them once.
        quiet = exc.kind in AUTH_KINDS
        if (before.last_error_kind != exc.kind or not before.failing) and not quiet:
            event(
                log,
                logging.WARNING,
                "job_poll_failing",
                job_id=job_id,
                error=exc.kind.value,
                detail=str(exc),
            )
        elif log.isEnabledFor(logging.DEBUG):
            event(log, logging.DEBUG, "job_poll_failed", job_id=job_id, error=exc.kind.value)

    def _tally(self, before: JobState | None, after: JobState | None) -> None:
        """Keep cce_exporter_watched_jobs and the history up to date as one job's state changes."""
        if self._history is not None:
            self._history.observe(before, after)
        for state, change in ((before, -1), (after, 1)):
            if state is not None:
                phase = "finished" if state.finished else "active"
                self._watched[state.target, phase].inc(change)
