"""The one watched set that every route feeds: settings, the jobs file, discovery, the job API.

A job ID is watched once however many routes name it, for one target.
Every route passes the same gate: a valid ID, owned by this instance's shard,
not watched for another target already, and room under `max_jobs`; refusals
are counted in `cce_exporter_rejected_jobs_total` under the target that
offered the ID. The watch list only decides: what is watched, for which
target, and which routes name each job, is the scheduler's to keep (`Watcher`).

Routes name the target of the jobs they offer; one that names none means the
only target, and is refused when there are several (`UnknownTargetError`).
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

    @property
    def targets(self) -> tuple[str, ...]:
        """The names of the targets."""
        ...

    def target_of(self, job_id: str) -> str | None:
        """Return the target a watched job belongs to, None when it is not watched."""
        ...

    def routes(self, job_id: str) -> frozenset[str]:
        """Return the routes that name a watched job."""
        ...

    def watch(
        self, job_ids: Iterable[str], route: str, target: str | None, api: Api | None = None
    ) -> list[str]:
        """Watch jobs of `target` for `route` (a route added to those watched); return new ones.

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
    OTHER_TARGET = "other_target"
    REFUSED = "refused"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of the job IDs a route offered."""

    added: tuple[str, ...] = ()
    already_watched: tuple[str, ...] = ()
    other_shard: tuple[str, ...] = ()
    other_target: tuple[str, ...] = ()  # watched for another target already
    refused: tuple[str, ...] = ()  # no room under max_jobs
    invalid: tuple[str, ...] = ()


class UnknownTargetError(ValueError):
    """A route named a target that does not exist, or none when there are several."""


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

    @property
    def targets(self) -> tuple[str, ...]:
        """The names of the targets, in the order of the settings."""
        return self._watcher.targets

    def target(self, name: str | None) -> str:
        """Return the target a route names; None names the only one.

        Raise UnknownTargetError, whose message says what to name, for a
        name that is no target's, or for None when there are several.
        """
        targets = self._watcher.targets
        if name is None:
            if len(targets) == 1:
                return targets[0]
            msg = f"name the target of the jobs: one of {', '.join(targets)}"
            raise UnknownTargetError(msg)
        if name not in targets:
            shown = name if len(name) <= 64 else name[:64] + "..."
            msg = f"unknown target {shown!r}: one of {', '.join(targets)}"
            raise UnknownTargetError(msg)
        return name

    def owns(self, job_id: str) -> bool:
        """Tell whether this instance's shard watches `job_id`."""
        return self._shard.owns(job_id)

    def routes(self, job_id: str) -> frozenset[Route]:
        """Return the routes that name a watched job (empty when it is not watched)."""
        return frozenset(Route(route) for route in self._watcher.routes(job_id) if route)

    def add(
        self,
        route: Route,
        job_ids: Iterable[str],
        target: str | None = None,
        *,
        api: Api | None = None,
    ) -> Outcome:
        """Watch the IDs a route names for `target` that pass the gate; say what became of each.

        `target` None names the only target (UnknownTargetError when there
        are several). `api` is the API the jobs live on, when the route knows
        it (discovery does); otherwise the first read finds it.
        """
        target = self.target(target)
        sorted_ids: dict[Verdict, list[str]] = {verdict: [] for verdict in Verdict}
        added = sorted_ids[Verdict.ADDED]
        for job_id in dict.fromkeys(job_ids):
            sorted_ids[self._admit(job_id, target, pending=len(added))].append(job_id)
        named = added + sorted_ids[Verdict.ALREADY_WATCHED]
        if named:
            self._watcher.watch(named, route, target, api)
        outcome = Outcome(**{verdict.value: tuple(ids) for verdict, ids in sorted_ids.items()})
        self._report(route, target, outcome)
        return outcome

    def adopt(self, route: Route, state: JobState) -> Outcome:
        """Watch a job of its state's target whose state a route knows, unless watched already."""
        target = self.target(state.target)
        verdict = self._admit(state.job_id, target, pending=0)
        if verdict is Verdict.ADDED:
            self._watcher.adopt(state, route)
        elif verdict is Verdict.ALREADY_WATCHED:
            self._watcher.watch([state.job_id], route, target, state.api)
        outcome = Outcome(**{verdict.value: (state.job_id,)})
        self._report(route, target, outcome)
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

    def _admit(self, job_id: str, target: str, *, pending: int) -> Verdict:
        """Decide on one ID offered for `target`, `pending` others being about to be added."""
        rejected = self._instruments.target(target).rejected_jobs
        if not isinstance(job_id, str) or not is_valid_id(job_id):
            rejected.labels("invalid_id").inc()
            return Verdict.INVALID
        if not self._shard.owns(job_id):
            return Verdict.OTHER_SHARD
        if job_id in self._watcher:
            if self._watcher.target_of(job_id) != target:
                rejected.labels("other_target").inc()
                return Verdict.OTHER_TARGET
            return Verdict.ALREADY_WATCHED
        if len(self._watcher) + pending >= self._max_jobs:
            rejected.labels("max_jobs").inc()
            return Verdict.REFUSED
        return Verdict.ADDED

    def _report(self, route: Route, target: str, outcome: Outcome) -> None:
        where = {"route": route.value, "target": target}
        if outcome.added:
            event(log, logging.INFO, "jobs_watched", **where, count=len(outcome.added))
        if outcome.refused:
            self._refused.add(
                len(outcome.refused), **where, reason="max_jobs", max_jobs=self._max_jobs
            )
        if outcome.invalid:
            self._refused.add(len(outcome.invalid), **where, reason="invalid_id")
        if outcome.other_target:
            # A job ID belongs to one project: the same ID under a second
            # target is a mistake in the settings, the file or the request.
            first = outcome.other_target[0]
            event(
                log,
                logging.WARNING,
                "job_target_conflict",
                **where,
                count=len(outcome.other_target),
                job_id=first,
                watched_by=self._watcher.target_of(first) or "",
                hint="a job ID is watched for one target only: name its own target",
            )
