"""The project's clusters, read every `cluster_refresh_interval`: the cluster directory.

Both lists (CCE and Autopilot) are read at each refresh. A list that cannot be
read keeps what it last gave, so a failed refresh changes nothing; its
requests are counted like any other in `cce_exporter_api_requests_total`. A
cluster that a list no longer shows leaves the directory, and its series with
it. The first failure of a run is logged, and the recovery; a refusal (403)
says which permission is missing, and job polling goes on regardless.

Other code reads `ClusterRefresher.directory` (the `Clusters` protocol): the
latest `ClusterDirectory`, replaced whole at each refresh.
"""

import asyncio
import logging
import operator
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from exporter.errors import ApiError, ErrorKind
from exporter.jobs.clusters import (
    EMPTY_DIRECTORY,
    MAX_CLUSTERS,
    Cluster,
    ClusterDirectory,
    ClusterKind,
    ClusterList,
)
from exporter.jobs.state import DEFAULT_TARGET
from exporter.logs import about_target, event
from exporter.metrics.cce_exporter import Instruments

log = logging.getLogger(__name__)


class ClusterLister(Protocol):
    """What the refresher needs of the client."""

    async def list_clusters(self, project_id: str, kind: ClusterKind) -> ClusterList:
        """Read the project's clusters of one kind."""
        ...


class Clusters(Protocol):
    """Where the cluster directory is read: the refresher, or anything that holds one."""

    @property
    def directory(self) -> ClusterDirectory:
        """The latest directory."""
        ...

    async def first_read(self) -> ClusterDirectory:
        """Return the directory once the lists have been read (or tried) once."""
        ...


@dataclass(frozen=True, slots=True)
class ClusterRefreshSettings:
    """What the refresher reads, and how often."""

    project_id: str
    interval: float = 300.0
    kinds: tuple[ClusterKind, ...] = (ClusterKind.CCE, ClusterKind.AUTOPILOT)
    target: str = DEFAULT_TARGET  # whose project: named in the log lines


class ClusterRefresher:
    """Reads the cluster lists now and then, and keeps the latest directory."""

    def __init__(
        self,
        lister: ClusterLister,
        instruments: Instruments,
        settings: ClusterRefreshSettings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._lister = lister
        self._instruments = instruments
        self._settings = settings
        self._sleep = sleep
        self._lists: dict[ClusterKind, tuple[Cluster, ...]] = {}
        # The error kind of each list's current run of failures (absent: none).
        self._failing: dict[ClusterKind, ErrorKind] = {}
        self._directory = EMPTY_DIRECTORY
        self._tried = asyncio.Event()  # set once every list has been read or has failed once

    @property
    def directory(self) -> ClusterDirectory:
        """The clusters as last read: an immutable snapshot, replaced whole at each refresh."""
        return self._directory

    @property
    def project_id(self) -> str:
        """The project whose clusters these are."""
        return self._settings.project_id

    def current(self) -> ClusterDirectory:
        """Return the directory in force (for a collector that reads it at each scrape)."""
        return self._directory

    async def refresh(self) -> bool:
        """Read every cluster list once; return whether all were read."""
        with about_target(self._settings.target):
            try:
                return await self._refresh()
            finally:
                self._tried.set()  # even after a bug: discovery must not wait for ever

    async def _refresh(self) -> bool:
        kinds = self._settings.kinds
        results = await asyncio.gather(*map(self._read, kinds), return_exceptions=True)
        ok = True
        for kind, result in zip(kinds, results, strict=True):
            if isinstance(result, ApiError):
                self._failed(kind, result)
                ok = False
            elif isinstance(result, BaseException):
                raise result
            else:
                self._read_well(kind, result)
        self._directory = ClusterDirectory(
            cluster for kind in kinds for cluster in self._lists.get(kind, ())
        )
        return ok

    async def first_read(self) -> ClusterDirectory:
        """Return the directory once the lists have been read (or tried) once."""
        await self._tried.wait()
        return self._directory

    async def run(self) -> None:
        """Refresh every interval for ever; cancel to stop."""
        while True:
            await self.refresh()
            await self._sleep(self._settings.interval)

    async def _read(self, kind: ClusterKind) -> ClusterList:
        return await self._lister.list_clusters(self._settings.project_id, kind)

    def _read_well(self, kind: ClusterKind, listed: ClusterList) -> None:
        self._lists[kind] = listed.clusters
        for field in listed.parse_errors:
            self._instruments.parse_errors.labels(field).inc()
        if listed.ignored:
            event(
                log,
                logging.WARNING,
                "cluster_list_truncated",
                kind=kind.value,
                kept=MAX_CLUSTERS,
                ignored=listed.ignored,
            )
        if self._failing.pop(kind, None) is not None:
            event(
                log,
                logging.INFO,
                "cluster_list_recovered",
                kind=kind.value,
                clusters=len(listed.clusters),
            )

    def _failed(self, kind: ClusterKind, exc: ApiError) -> None:
        if self._failing.get(kind) is exc.kind:
            event(log, logging.DEBUG, "cluster_list_still_failing", kind=kind.value)
            return
        self._failing[kind] = exc.kind
        fields: dict[str, object] = {}
        if exc.kind is ErrorKind.FORBIDDEN:
            fields["hint"] = (
                "the credentials may not list clusters: grant cce:cluster:list for cluster"
                " names and phases; jobs are polled all the same"
            )
        event(
            log,
            logging.WARNING,
            "cluster_list_failed",
            kind=kind.value,
            error=exc.kind.value,
            detail=str(exc),
            kept=len(self._lists.get(kind, ())),
            **fields,
        )


class AllClusters:
    """The clusters of every target as one directory (cluster IDs are unique across projects).

    For the status page, which names the clusters of jobs of every target, and
    filters by cluster name across them. The merged directory is made again
    only when a target's directory was replaced.
    """

    def __init__(self, sources: Sequence[Clusters]) -> None:
        self._sources = tuple(sources)
        self._seen: tuple[ClusterDirectory, ...] = ()
        self._merged = EMPTY_DIRECTORY

    @property
    def directory(self) -> ClusterDirectory:
        """Every target's clusters, as last read."""
        current = tuple(source.directory for source in self._sources)
        if len(current) == 1:
            return current[0]
        if len(current) != len(self._seen) or not all(map(operator.is_, current, self._seen)):
            self._seen = current
            self._merged = ClusterDirectory(c for directory in current for c in directory)
        return self._merged

    async def first_read(self) -> ClusterDirectory:
        """Return the merged directory once every target's lists have been read (or tried)."""
        await asyncio.gather(*(source.first_read() for source in self._sources))
        return self.directory
