"""The one watched set that every route feeds: settings, the jobs file, discovery, the job API.

A job ID is watched once however many routes name it. Every route passes
the same gate: a valid ID, owned by this instance's shard, and room under
`max_jobs`; refusals are counted in `cce_exporter_rejected_jobs_total`. The
watch list only decides: what is watched, and which routes name each job, is
the scheduler's to keep (`Watcher`).
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from exporter.jobs.ids import Api, is_valid_id
from exporter.jobs.state import JobState
from exporter.logs import Summary, event
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
    """What the watch list needs of the scheduler, which owns the watched set."""

    def __len__(self) -> int:
        """Return how many jobs are watched."""
        ...

    def __contains__(self, job_id: object) -> bool:
        """Tell whether a job is watched."""
        ...

    def routes(self, job_id: str) -> frozenset[str]:
        """Return the routes that name a watched job."""
        ...

    def watch(self, job_ids: Iterable[str], route: str, api: Api | None = None) -> list[str]:
        """Watch jobs for `route` (adding the route to those watched already); return new ones.

        `api` is the API the jobs live on, when the route knows it.
        """
        ...

    def adopt(self, state: JobState, route: str) -> bool:
        """Start watching a job whose state is known; return whether it was new."""
        ...

    def release(self, job_id: str, route: str) -> bool:
        """Drop a route's claim on a job; return whether that stopped watching it."""
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


class WatchList:
    """Admits job IDs from every route into the scheduler."""

    def __init__(
        self,
        watcher: Watcher,
        instruments: Instruments,
        *,
        shard: Shard | None = None,
        max_jobs: int = 10000,
    ) -> None:
        self._watcher = watcher
        self._instruments = instruments
        self._shard = shard or Shard()
        self._max_jobs = max_jobs
        # Discovery offers each refused job again at every pass, one call per
        # job: refusals are logged as counts per minute, not line per call.
        self._refused = Summary(log, logging.WARNING, "jobs_refused")

    @property
    def shard(self) -> Shard:
        """This instance's share of the jobs."""
        return self._shard

    def owns(self, job_id: str) -> bool:
        """Tell whether this instance's shard watches `job_id`."""
        return self._shard.owns(job_id)

    def routes(self, job_id: str) -> frozenset[Route]:
        """Return the routes that name a watched job (empty when it is not watched)."""
        return frozenset(Route(route) for route in self._watcher.routes(job_id) if route)

    def add(self, route: Route, job_ids: Iterable[str], api: Api | None = None) -> Outcome:
        """Watch the IDs a route names that pass the gate; say what became of each.

        `api` is the API the jobs live on, when the route knows it (discovery
        does); otherwise the first read finds it.
        """
        sorted_ids: dict[Verdict, list[str]] = {verdict: [] for verdict in Verdict}
        added = sorted_ids[Verdict.ADDED]
        for job_id in dict.fromkeys(job_ids):
            sorted_ids[self._admit(job_id, pending=len(added))].append(job_id)
        named = added + sorted_ids[Verdict.ALREADY_WATCHED]
        if named:
            self._watcher.watch(named, route, api)
        outcome = Outcome(**{verdict.value: tuple(ids) for verdict, ids in sorted_ids.items()})
        self._report(route, outcome)
        return outcome

    def adopt(self, route: Route, state: JobState) -> Outcome:
        """Watch a job whose state a route already knows, unless it is watched already."""
        verdict = self._admit(state.job_id, pending=0)
        if verdict is Verdict.ADDED:
            self._watcher.adopt(state, route)
        elif verdict is Verdict.ALREADY_WATCHED:
            self._watcher.watch([state.job_id], route, state.api)
        outcome = Outcome(**{verdict.value: (state.job_id,)})
        self._report(route, outcome)
        return outcome

    def release(self, route: Route, job_ids: Iterable[str]) -> list[str]:
        """Drop a route from these IDs; stop watching those that no other route names."""
        stopped = [job_id for job_id in job_ids if self._watcher.release(job_id, route)]
        if stopped:
            event(log, logging.INFO, "jobs_unwatched", route=route.value, count=len(stopped))
        return stopped

    def remove(self, job_id: str) -> bool:
        """Stop watching a job whichever routes name it; return whether it was watched."""
        return self._watcher.unwatch(job_id)

    def _admit(self, job_id: str, *, pending: int) -> Verdict:
        """Decide on one ID, `pending` others being about to be added."""
        if not isinstance(job_id, str) or not is_valid_id(job_id):
            self._instruments.rejected_jobs.labels("invalid_id").inc()
            return Verdict.INVALID
        if not self._shard.owns(job_id):
            return Verdict.OTHER_SHARD
        if job_id in self._watcher:
            return Verdict.ALREADY_WATCHED
        if len(self._watcher) + pending >= self._max_jobs:
            self._instruments.rejected_jobs.labels("max_jobs").inc()
            return Verdict.REFUSED
        return Verdict.ADDED

    def _report(self, route: Route, outcome: Outcome) -> None:
        if outcome.added:
            event(log, logging.INFO, "jobs_watched", route=route.value, count=len(outcome.added))
        if outcome.refused:
            self._refused.add(
                len(outcome.refused),
                route=route.value,
                reason="max_jobs",
                max_jobs=self._max_jobs,
            )
        if outcome.invalid:
            self._refused.add(len(outcome.invalid), route=route.value, reason="invalid_id")
