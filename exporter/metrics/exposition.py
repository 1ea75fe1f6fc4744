"""Render job states as Prometheus text or OpenMetrics, plain or gzip.

prometheus-client's collectors cost about 14 microseconds a sample, too slow for
hundreds of thousands of job series. A JobState never changes, so each job is
rendered once per new state into one chunk per metric family and, when a
scraper asks for gzip, each chunk is deflated once on its own and ends on a
byte boundary (a sync flush). A scrape then only joins what is cached: the
deflated chunks in a row form one deflate stream, which becomes a single gzip
member with a header, an empty final block, and the CRC-32 of the whole text
(zlib computes that at gigabytes a second). One member rather than many,
because some clients (aiohttp's among them) read only the first member of a
gzip body. The text is exactly what prometheus-client writes for the same
families.
"""

import functools
import operator
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import cast

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as text_latest
from prometheus_client.openmetrics import exposition as openmetrics

from exporter.jobs.state import JobState
from exporter.metrics.cce_job import FAMILIES, render_job

# prometheus-client ships this without annotations.
_openmetrics_latest = cast(Callable[[CollectorRegistry], bytes], openmetrics.generate_latest)

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_GZIP_LEVEL = 6
# A gzip header without name or time (RFC 1952): deflate, no flags, mtime 0, OS unknown.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
# The last block of a deflate stream: final, fixed Huffman, empty.
_FINAL_BLOCK = b"\x03\x00"


def deflate_segment(data: bytes) -> bytes:
    """Deflate `data` on its own into a byte-aligned, non-final piece of a deflate stream."""
    compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


@dataclass(slots=True)
class RenderedJob:
    """One job state rendered: a chunk per family, and its deflate segments on demand."""

    state: JobState
    chunks: tuple[bytes, ...]
    _segments: list[bytes | None] = field(default_factory=list)

    def segment(self, index: int) -> bytes:
        """Return chunk `index` deflated, compressing it the first time."""
        if not self._segments:
            self._segments = [None] * len(self.chunks)
        segment = self._segments[index]
        if segment is None:
            segment = deflate_segment(self.chunks[index])
            self._segments[index] = segment
        return segment


@dataclass(frozen=True, slots=True)
class Body:
    """An exposition as pieces to send in order: fresh ones around the shared job part."""

    head: tuple[bytes, ...]
    jobs: tuple[bytes, ...]  # the cached chunks themselves, shared by every scrape
    tail: tuple[bytes, ...]

    def __iter__(self) -> Iterator[bytes]:
        """Iterate over the pieces, in order."""
        return chain(self.head, self.jobs, self.tail)

    def __len__(self) -> int:
        """Return the size of the whole body, in bytes."""
        return sum(map(len, self.head)) + sum(map(len, self.jobs)) + sum(map(len, self.tail))


@dataclass(frozen=True, slots=True)
class _JobPart:
    """The job part of one kind of body, for one list of states: texts and their segments."""

    states: tuple[JobState, ...]
    raw: tuple[bytes, ...]
    segments: tuple[bytes, ...]  # empty unless gzip


def _same(a: tuple[JobState, ...], b: tuple[JobState, ...]) -> bool:
    """Tell whether two lists of states hold the very same objects (states compare by value)."""
    return len(a) == len(b) and all(map(operator.is_, a, b))


class Renderer:
    """Renders the store's states and the exporter's registry for a scrape.

    Keeps the rendering of each job until its state is replaced; jobs that are
    no longer passed in are forgotten, and their series with them. The job
    part of each kind of body is kept as one tuple of the cached chunks until
    the states change, so a scrape copies no job text and holds nothing of
    its own but that tuple's reference and the registry's few lines.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._cache: dict[str, RenderedJob] = {}
        self._parts: dict[tuple[bool, bool], _JobPart] = {}

    def _rendered(self, states: Iterable[JobState]) -> list[RenderedJob]:
        cache = self._cache
        fresh: dict[str, RenderedJob] = {}
        for state in states:
            rendered = cache.get(state.job_id)
            if rendered is None or rendered.state is not state:
                rendered = RenderedJob(state, render_job(state))
            fresh[state.job_id] = rendered
        self._cache = fresh
        return list(fresh.values())

    def render(self, states: Iterable[JobState], *, openmetrics: bool = False) -> bytes:
        """Return the whole exposition."""
        return b"".join(self.body(states, openmetrics=openmetrics))

    def render_parts(self, states: Iterable[JobState], *, openmetrics: bool = False) -> list[bytes]:
        """Return the whole exposition as its cached parts, in order, to be sent as they are."""
        return list(self.body(states, openmetrics=openmetrics))

    def render_gzip(self, states: Iterable[JobState], *, openmetrics: bool = False) -> bytes:
        """Return the whole exposition as one gzip member."""
        return b"".join(self.body(states, openmetrics=openmetrics, gzip=True))

    def body(
        self, states: Iterable[JobState], *, openmetrics: bool = False, gzip: bool = False
    ) -> Body:
        """Return the whole exposition as pieces, plain or as one gzip member."""
        part = self._job_part(tuple(states), openmetrics=openmetrics, gzip=gzip)
        registry = self._registry_text(openmetrics=openmetrics)
        end = (b"# EOF\n",) if openmetrics else ()
        if not gzip:
            return Body((registry,), part.raw, end)
        crc = zlib.crc32(registry)
        for raw in part.raw:
            crc = zlib.crc32(raw, crc)
        crc = zlib.crc32(b"".join(end), crc)
        size = len(registry) + sum(map(len, part.raw)) + sum(map(len, end))
        trailer = _FINAL_BLOCK + struct.pack("<II", crc, size & 0xFFFFFFFF)
        end_segments = tuple(map(deflate_segment, end))
        return Body(
            (_GZIP_HEADER, deflate_segment(registry)), part.segments, (*end_segments, trailer)
        )

    def _job_part(self, states: tuple[JobState, ...], *, openmetrics: bool, gzip: bool) -> _JobPart:
        """Return the job part for these states, from the cache while they are the same."""
        cached = self._parts.get((openmetrics, gzip))
        if cached is not None and _same(cached.states, states):
            return cached  # nothing changed: no job is looked up again
        jobs = self._rendered(states)
        raw: list[bytes] = []
        segments: list[bytes] = []
        for index, family in enumerate(FAMILIES):
            present = [job for job in jobs if job.chunks[index]]
            if present:
                header = family.header(openmetrics=openmetrics).encode()
                raw.append(header)
                raw += [job.chunks[index] for job in present]
                if gzip:
                    segments.append(_header_segment(header))
                    segments += [job.segment(index) for job in present]
        part = _JobPart(states, tuple(raw), tuple(segments))
        self._parts[(openmetrics, gzip)] = part
        return part

    def _registry_text(self, *, openmetrics: bool) -> bytes:
        if openmetrics:
            return _openmetrics_latest(self._registry).removesuffix(b"# EOF\n")
        return text_latest(self._registry)


@functools.cache
def _header_segment(header: bytes) -> bytes:
    """Return a family's header deflated (a few dozen headers, deflated once each)."""
    return deflate_segment(header)
