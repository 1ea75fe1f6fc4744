"""The discovery route: watch the jobs that the project's v2 job lists show.

Every `discover_interval` both job lists are read, CCE's and CCE Autopilot's;
a job created within `discover_max_age` whose type matches
`discover_job_types` is handed to the watch list once, with the API it lives
on. A job a list already shows finished, with everything the metrics need, is
stored from the list as it is: it costs no v3 request. Its tree, though, is
in the list only when the item carries `spec.subjobs` (even empty); an item
without the key (as the published example of the list) is read by ID once,
for its whole tree, as a job first seen finished through any other route. A failed read of one
list changes nothing of that list's jobs, and nothing of the other's. An
endpoint that does not offer Autopilot (its list answers 404) lists no
Autopilot jobs: that is said once, and is no failure.

With `discover_clusters`, only jobs of those clusters are offered: names are
resolved to IDs through the cluster lists (`exporter.watch.clusters`), read
once before the first pass; a name no list shows is said once (it may be an
ID, which matches as it is, or a cluster not yet created).

Each target that discovers has a Discovery of its own, reading its project's
lists (and resolving its cluster names through its own cluster lists) with its
own client: a target whose lists cannot be read holds back no other's.
"""

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from exporter.errors import ApiError, ErrorKind
from exporter.jobs.ids import Api, is_valid_id
from exporter.jobs.state import DEFAULT_TARGET, JobState, ended_at
from exporter.jobs.tree import InvalidJobError
from exporter.jobs.v2 import ListedJob
from exporter.logs import about_target, event
from exporter.metrics.cce_exporter import Instruments
from exporter.watch.clusters import Clusters
from exporter.watch.watchlist import Outcome, Route, WatchList

log = logging.getLogger(__name__)


class JobLister(Protocol):
    """What discovery needs of the client."""

    async def list_jobs(self, project_id: str, api: Api = Api.CCE) -> list[ListedJob]:
        """Read the project's job list on `api`."""
        ...


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    """How discovery picks jobs."""

    project_id: str
    interval: float = 60.0
    max_age: float = 86400.0
    job_types: re.Pattern[str] | None = None
    # Seconds a finished job keeps its series: a job listed as finished longer
    # ago than this is not watched at all.
    finished_retention: float = 3600.0
    target: str = DEFAULT_TARGET  # whose project this is: the jobs found are its
    # Cluster names or IDs whose jobs are offered; empty: every cluster's.
    clusters: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Pass:
    """What one read of the job list did."""

    listed: int
    watched: int  # handed to the watch list for polling
    stored_finished: int  # stored from the list, with no v3 request
    failed: tuple[Api, ...] = ()  # the APIs whose list could not be read

    @property
    def ok(self) -> bool:
        """Tell whether every list was read."""
        return not self.failed


class Discovery:
    """Reads the job list now and then and feeds the jobs that qualify to the watch list."""

    def __init__(
        self,
        lister: JobLister,
        watchlist: WatchList,
        instruments: Instruments,
        settings: DiscoverySettings,
        *,
        clock: Callable[[], float] = time.time,
        clusters: Clusters | None = None,
    ) -> None:
        self._lister = lister
        self._clusters = clusters
        self._unresolved: tuple[str, ...] = ()  # names of `discover_clusters` no list shows
        self._watchlist = watchlist
        # Whether the list has been read (or tried) once: until then, readiness waits.
        self.tried = False
        self._instruments = instruments
        self._settings = settings
        self._clock = clock
        # Jobs already handed over (or judged) that a list still shows, by API:
        # they are not offered again, so a job that expired or was removed
        # through the job API stays away. Forgotten once the list no longer
        # shows them (a list that could not be read forgets nothing).
        self._done: dict[Api, set[str]] = {api: set() for api in Api}
        self._invalid: dict[Api, set[str]] = {api: set() for api in Api}
        self._autopilot_offered = True

    async def refresh(self) -> Pass:
        """Read both job lists once and act on them."""
        with about_target(self._settings.target):
            return await self._refresh()

    async def _refresh(self) -> Pass:
        wanted = await self._wanted_clusters()
        readings = await asyncio.gather(*(self._read(api) for api in Api))
        self.tried = True
        now = self._clock()
        listed = watched = stored = 0
        failed = []
        for api, jobs in zip(Api, readings, strict=True):
            if jobs is None:
                failed.append(api)
                continue
            listed += len(jobs)
            handed, kept = self._act(api, jobs, now, wanted)
            watched, stored = watched + handed, stored + kept
        event(
            log,
            logging.DEBUG,
            "discovery_pass",
            listed=listed,
            watched=watched,
            stored_finished=stored,
        )
        return Pass(listed, watched, stored, tuple(failed))

    async def _read(self, api: Api) -> list[ListedJob] | None:
        """Read one job list; None when it could not be read (which is logged)."""
        try:
            jobs = await self._lister.list_jobs(self._settings.project_id, api)
        except ApiError as exc:
            if api is Api.AUTOPILOT and exc.kind is ErrorKind.NOT_FOUND:
                if self._autopilot_offered:
                    self._autopilot_offered = False
                    event(log, logging.INFO, "autopilot_not_offered", detail=str(exc))
                return []
            event(
                log,
                logging.WARNING,
                "discovery_failed",
                api=api.value,
                error=exc.kind.value,
                detail=str(exc),
                kept=len(self._done[api]),
            )
            return None
        if api is Api.AUTOPILOT:
            self._autopilot_offered = True
        return jobs

    async def _wanted_clusters(self) -> frozenset[str] | None:
        """Return the IDs of the clusters whose jobs are offered; None for every cluster."""
        names = self._settings.clusters
        if not names:
            return None
        directory = None if self._clusters is None else await self._clusters.first_read()
        wanted: set[str] = set()
        unresolved = []
        for name in names:
            ids = () if directory is None else directory.resolve(name)
            if not ids:
                unresolved.append(name)
            # An entry no list shows still matches as an ID (the lists may be refused).
            wanted.update(ids or (name,))
        if tuple(unresolved) != self._unresolved:
            self._unresolved = tuple(unresolved)
            if unresolved:
                event(
                    log,
                    logging.WARNING,
                    "discover_clusters_unresolved",
                    clusters=",".join(unresolved),
                    known=0 if directory is None else len(directory),
                    hint="no cluster list shows these names: they match only as cluster IDs",
                )
        return frozenset(wanted)

    def _act(
        self, api: Api, listed: list[ListedJob], now: float, wanted: frozenset[str] | None = None
    ) -> tuple[int, int]:
        """Offer the jobs of one list that qualify; return (watched, stored from the list)."""
        done = self._done[api]
        present: set[str] = set()
        invalid: set[str] = set()
        watched = stored = 0
        for job in listed:
            job_id = job.job_id
            if job_id is None:
                continue
            present.add(job_id)
            if job_id in done or not self._qualifies(job, now):
                continue
            if wanted is not None and job.cluster_id not in wanted:
                continue  # judged again next pass: the cluster's name may come to resolve
            if not is_valid_id(job_id):
                invalid.add(job_id)
                continue
            if self._watchlist.owns(job_id):
                offered = self._offer(api, job, job_id, now)
                if offered is not None:
                    outcome, from_list = offered
                    if outcome.refused:
                        continue  # offered again next time, when there may be room
                    stored += len(outcome.added) if from_list else 0
                    watched += 0 if from_list else len(outcome.added)
            done.add(job_id)
        # An invalid ID is counted once while the list shows it.
        if invalid - self._invalid[api]:
            self._watchlist.add(
                Route.DISCOVERY, sorted(invalid - self._invalid[api]), self._settings.target
            )
        self._invalid[api] = invalid
        done &= present
        return watched, stored

    async def run(self) -> None:
        """Read the job list every interval for ever; cancel to stop."""
        while True:
            await self.refresh()
            await asyncio.sleep(self._settings.interval)

    def _qualifies(self, job: ListedJob, now: float) -> bool:
        """Tell whether a listed job is recent enough and of a wanted type."""
        if job.created_ns is None or job.created_ns / 1e9 < now - self._settings.max_age:
            return False
        pattern = self._settings.job_types
        return pattern is None or pattern.fullmatch(job.job_type) is not None

    def _offer(
        self, api: Api, job: ListedJob, job_id: str, now: float
    ) -> tuple[Outcome, bool] | None:
        """Hand one job to the watch list: (what became of it, whether stored from the list).

        None when the job ended too long ago to be watched at all.
        """
        if not job.finished:
            return self._watchlist.add(
                Route.DISCOVERY, [job_id], self._settings.target, api=api
            ), False
        # The same rule as a job polled finished at its first read: retention
        # counts from its end, and a job past it is not watched at all.
        ended = ended_at(job.completed_ns, now)
        if ended + self._settings.finished_retention <= now:
            return None
        state = self._finished_state(job, job_id, now, ended, api)
        if state is None:
            return self._watchlist.add(
                Route.DISCOVERY, [job_id], self._settings.target, api=api
            ), False
        return self._watchlist.adopt(Route.DISCOVERY, state), True

    def _finished_state(
        self, job: ListedJob, job_id: str, now: float, ended: float, api: Api
    ) -> JobState | None:
        """Build the state of a job listed finished, if the list says all the metrics need.

        None when it does not: its tree (no `spec.subjobs`), its times, or any
        field that did not parse. Such a job is read by ID, once.
        """
        if not job.tree_listed:
            return None
        try:
            tree = job.tree()
        except InvalidJobError:
            return None
        root = tree.root
        if tree.parse_errors or not root.finished or root.created_ns is None:
            return None
        if root.updated_ns is None:
            return None
        settings = self._settings
        state = JobState(job_id, target=settings.target, project_id=settings.project_id)
        return replace(state.succeeded(tree, now, api), finished_at=ended)
