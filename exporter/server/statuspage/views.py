"""Both status views, built off the event loop, one build at a time, kept per snapshot."""

import asyncio
import gzip
import json
import operator
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from exporter.jobs.clusters import EMPTY_DIRECTORY, ClusterDirectory
from exporter.jobs.state import JobState
from exporter.server.statuspage.model import NO_FILTERS, Filters, job_document, jobs_json
from exporter.server.statuspage.page import render_html

# Seconds a view is served again while no job changed, before it is built
# anew for its durations and ages.
VIEW_MAX_AGE = 10.0
# Views kept at once, one per kind, filters and page; the oldest goes first.
MAX_VIEWS = 16
# Bytes those views may hold together (the newest is kept whatever its size):
# clients asking for many filters of a large JSON cannot grow memory past it.
MAX_VIEW_BYTES = 32 << 20
# Fast enough to compress in the build, and within a few % of the best size.
GZIP_LEVEL = 6

ViewKey = tuple[str, Filters, int]


@dataclass(frozen=True, slots=True)
class Body:
    """A view's bytes, and the same gzipped."""

    plain: bytes
    gzipped: bytes

    @property
    def size(self) -> int:
        """Bytes held, both forms."""
        return len(self.plain) + len(self.gzipped)

    def pick(self, *, gzipped: bool) -> bytes:
        """Return the body to send."""
        return self.gzipped if gzipped else self.plain


def _compressed(plain: bytes) -> Body:
    return Body(plain, gzip.compress(plain, GZIP_LEVEL, mtime=0))


@dataclass(slots=True)
class _Built:
    states: tuple[JobState, ...]
    at: float
    body: Body = field(repr=False)
    clusters: ClusterDirectory = EMPTY_DIRECTORY


class StatusViews:
    """Both views, built off the event loop, one build at a time, kept per snapshot of the store.

    Job states never change, so a view of the very same states is served
    again (for up to `VIEW_MAX_AGE` seconds) at no cost; a request that finds
    a build under way waits for it. A view of thousands of large trees takes
    a while to build: in a thread, it cannot hold up a scrape.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # One build at a time, of any view: a thread that builds takes its
        # share of the interpreter from the event loop.
        self._lock = asyncio.Lock()
        self._built: dict[ViewKey, _Built] = {}

    async def html(
        self,
        states: Iterable[JobState],
        project_id: str,
        filters: Filters = NO_FILTERS,
        page: int = 1,
        clusters: ClusterDirectory = EMPTY_DIRECTORY,
    ) -> Body:
        """Return the `/jobs` page of these states, UTF-8."""
        filters = filters.resolved(clusters)

        def build(snapshot: tuple[JobState, ...], now: float) -> Body:
            page_text = render_html(snapshot, project_id, now, filters, page, clusters=clusters)
            return _compressed(page_text.encode())

        return await self._view(("html", filters, page), build, tuple(states), clusters)

    async def json(
        self,
        states: Iterable[JobState],
        project_id: str,
        filters: Filters = NO_FILTERS,
        clusters: ClusterDirectory = EMPTY_DIRECTORY,
    ) -> Body:
        """Return the `/api/v1/jobs` document of these states, UTF-8."""
        filters = filters.resolved(clusters)

        def build(snapshot: tuple[JobState, ...], now: float) -> Body:
            document = jobs_json(snapshot, project_id, now, filters, clusters)
            return _compressed(json.dumps(document).encode())

        return await self._view(("json", filters, 0), build, tuple(states), clusters)

    async def one(
        self, state: JobState, project_id: str, clusters: ClusterDirectory = EMPTY_DIRECTORY
    ) -> Body:
        """Return the `/api/v1/jobs/{job_id}` document of one job, UTF-8 (never kept)."""

        def build() -> Body:
            document = job_document(state, project_id, self._clock(), clusters)
            return _compressed(json.dumps(document).encode())

        async with self._lock:
            return await asyncio.to_thread(build)

    async def _view(
        self,
        key: ViewKey,
        build: Callable[[tuple[JobState, ...], float], Body],
        states: tuple[JobState, ...],
        clusters: ClusterDirectory,
    ) -> Body:
        async with self._lock:
            built = self._built.get(key)
            now = self._clock()
            if (
                built is not None
                and len(built.states) == len(states)
                and built.clusters is clusters  # the names shown are those of the same lists
                and all(map(operator.is_, built.states, states))
                and 0 <= now - built.at < VIEW_MAX_AGE
            ):
                return built.body
            body = await asyncio.to_thread(build, states, now)
            self._built.pop(key, None)
            self._built[key] = _Built(states, now, body, clusters)
            held = sum(view.body.size for view in self._built.values())
            while len(self._built) > 1 and (len(self._built) > MAX_VIEWS or held > MAX_VIEW_BYTES):
                held -= self._built.pop(next(iter(self._built))).body.size
            return body
