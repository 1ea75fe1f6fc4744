"""The one watched set that every route feeds: settings, the jobs file, discovery, the job API.

A job ID is watched once however many routes name it. Every route passes
the same gate: a valid ID, owned by this instance's shard, and room under
`max_jobs`; refusals are counted in `cce_exporter_rejected_jobs_total`.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from exporter.jobs.ids import is_valid_id
from exporter.jobs.state import JobState, JobStore
from exporter.logs import event
from exporter.metrics.cce_exporter import Instruments
from exporter.watch.sharding import Shard

log = logging.getLogger(__name__)


class Route(StrEnum):
    """Where a job ID came from."""

    SETTINGS = "settings"
    FILE = "file"
    DISCOVERY = "discovery"
    API = "api"


class Watcher(Protocol):
    """What the watch list needs of the scheduler."""

    def watch(self, job_ids: Iterable[str]) -> list[str]:
        """Start watching jobs; return the new ones."""
        ...

    def adopt(self, state: JobState) -> bool:
        """Start watching a job whose state is known; return whether it was new."""
        ...

    def unwatch(self, job_id: str) -> bool:
        """Stop watching a job; return whether it was watched."""
        ...


class Verdict(StrEnum):
    """What became of one offered ID: the name of its field in `Outcome`."""

    ADDED = "added"
    ALREADY_WATCHED = "already_watched"
    OTHER_SHARD = "other_shard"
    REFUSED = "refused"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of the job IDs a route offered."""

    added: tuple[str, ...] = ()
    already_watched: tuple[str, ...] = ()
    other_shard: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()  # no room under max_jobs
    invalid: tuple[str, ...] = ()

    @property
    def accepted(self) -> tuple[str, ...]:
        """The IDs that are watched now: new or already."""
        return self.added + self.already_watched


class WatchList:
    """Admits job IDs from every route into the scheduler, and remembers who named them."""

    def __init__(
        self,
        watcher: Watcher,
        store: JobStore,
        instruments: Instruments,
        *,
        shard: Shard | None = None,
        max_jobs: int = 10000,
    ) -> None:
        self._watcher = watcher
        self._store = store
        self._instruments = instruments
        self._shard = shard or Shard()
        self._max_jobs = max_jobs
        # Routes that name each watched job; entries of jobs that left the
        # store (expired after retention) are pruned now and then, always
        # before a batch is admitted, never during one (see `_prune`).
        self._named: dict[str, set[Route]] = {}

    @property
    def shard(self) -> Shard:
        """This instance's share of the jobs."""
        return self._shard

    def owns(self, job_id: str) -> bool:
        """Tell whether this instance's shard watches `job_id`."""
        return self._shard.owns(job_id)

    def routes(self, job_id: str) -> frozenset[Route]:
        """Return the routes that name a watched job (empty when it is not watched)."""
        if job_id not in self._store:
            return frozenset()
        return frozenset(self._named.get(job_id, ()))

    def add(self, route: Route, job_ids: Iterable[str]) -> Outcome:
        """Watch the IDs a route names that pass the gate; say what became of each."""
        self._prune()
        sorted_ids: dict[Verdict, list[str]] = {verdict: [] for verdict in Verdict}
        added = sorted_ids[Verdict.ADDED]
        for job_id in dict.fromkeys(job_ids):
            sorted_ids[self._admit(route, job_id, pending=len(added))].append(job_id)
        if added:
            self._watcher.watch(added)
        outcome = Outcome(**{verdict.value: tuple(ids) for verdict, ids in sorted_ids.items()})
        self._report(route, outcome)
        return outcome

    def adopt(self, route: Route, state: JobState) -> Outcome:
        """Watch a job whose state a route already knows, unless it is watched already."""
        self._prune()
        verdict = self._admit(route, state.job_id, pending=0)
        if verdict is Verdict.ADDED:
            self._watcher.adopt(state)
        outcome = Outcome(**{verdict.value: (state.job_id,)})
        self._report(route, outcome)
        return outcome

    def release(self, route: Route, job_ids: Iterable[str]) -> list[str]:
        """Drop a route from these IDs; stop watching those that no other route names."""
        stopped = []
        for job_id in job_ids:
            routes = self._named.get(job_id)
            if routes is None:
                continue
            routes.discard(route)
            if not routes:
                del self._named[job_id]
                if self._watcher.unwatch(job_id):
                    stopped.append(job_id)
        if stopped:
            event(log, logging.INFO, "jobs_unwatched", route=route.value, count=len(stopped))
        return stopped

    def remove(self, job_id: str) -> bool:
        """Stop watching a job whichever routes name it; return whether it was watched."""
        self._named.pop(job_id, None)
        return self._watcher.unwatch(job_id)

    def _admit(self, route: Route, job_id: str, *, pending: int) -> Verdict:
        """Decide on one ID, `pending` others being about to be added."""
        if not isinstance(job_id, str) or not is_valid_id(job_id):
            self._instruments.rejected_jobs.labels("invalid_id").inc()
            return Verdict.INVALID
        if not self._shard.owns(job_id):
            return Verdict.OTHER_SHARD
        if job_id in self._store:
            self._named.setdefault(job_id, set()).add(route)
            return Verdict.ALREADY_WATCHED
        if len(self._store) + pending >= self._max_jobs:
            self._instruments.rejected_jobs.labels("max_jobs").inc()
            return Verdict.REFUSED
        self._named[job_id] = {route}
        return Verdict.ADDED

    def _prune(self) -> None:
        """Forget the routes of jobs that left the store, once they outnumber the rest.

        Called before a batch is admitted and never inside one: the IDs a batch
        admits reach the store only when the watcher's `watch()` runs at its
        end, so pruning mid-batch would forget who named them, and releasing
        them later would not stop them. The watcher stores every job it
        starts before returning, so no admitted ID is pending at this point.
        A prune runs only when fewer than half the entries are of stored jobs,
        so it drops more entries than it keeps: its cost is under twice the
        entries it drops, each added once, and adding stays linear overall.
        """
        if len(self._named) > 2 * len(self._store) + 1024:
            self._named = {
                job_id: routes for job_id, routes in self._named.items() if job_id in self._store
            }

    def _report(self, route: Route, outcome: Outcome) -> None:
        if outcome.added:
            event(log, logging.INFO, "jobs_watched", route=route.value, count=len(outcome.added))
        if outcome.refused:
            event(
                log,
                logging.WARNING,
                "jobs_refused",
                route=route.value,
                reason="max_jobs",
                max_jobs=self._max_jobs,
                count=len(outcome.refused),
            )
        if outcome.invalid:
            event(
                log,
                logging.WARNING,
                "jobs_refused",
                route=route.value,
                reason="invalid_id",
                count=len(outcome.invalid),
            )
