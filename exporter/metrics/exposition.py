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

import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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


def gzip_join(pieces: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Make one gzip member of (text, its deflate segment) pairs, in order."""
    crc = 0
    size = 0
    out = [_GZIP_HEADER]
    for raw, segment in pieces:
        crc = zlib.crc32(raw, crc)
        size += len(raw)
        out.append(segment)
    out.append(_FINAL_BLOCK)
    out.append(struct.pack("<II", crc, size & 0xFFFFFFFF))
    return b"".join(out)


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


class Renderer:
    """Renders the store's states and the exporter's registry for a scrape.

    Keeps the rendering of each job until its state is replaced; jobs that are
    no longer passed in are forgotten, and their series with them.
    """

    def __init__(self, project_id: str, registry: CollectorRegistry) -> None:
        self._project_id = project_id
        self._registry = registry
        self._cache: dict[str, RenderedJob] = {}

    def _rendered(self, states: Iterable[JobState]) -> list[RenderedJob]:
        cache = self._cache
        fresh: dict[str, RenderedJob] = {}
        for state in states:
            rendered = cache.get(state.job_id)
            if rendered is None or rendered.state is not state:
                rendered = RenderedJob(state, render_job(state, self._project_id))
            fresh[state.job_id] = rendered
        self._cache = fresh
        return list(fresh.values())

    def render(self, states: Iterable[JobState], *, openmetrics: bool = False) -> bytes:
        """Return the whole exposition."""
        return b"".join(self.render_parts(states, openmetrics=openmetrics))

    def render_parts(self, states: Iterable[JobState], *, openmetrics: bool = False) -> list[bytes]:
        """Return the whole exposition as its cached parts, in order, to be sent as they are."""
        return [raw for raw, _ in self._pieces(states, openmetrics=openmetrics, gzip=False)]

    def render_gzip(self, states: Iterable[JobState], *, openmetrics: bool = False) -> bytes:
        """Return the whole exposition as one gzip member."""
        return gzip_join(self._pieces(states, openmetrics=openmetrics, gzip=True))

    def _pieces(
        self, states: Iterable[JobState], *, openmetrics: bool, gzip: bool
    ) -> list[tuple[bytes, bytes]]:
        """List the exposition's parts in order, each as (text, deflated text or b"")."""

        def fresh(raw: bytes) -> tuple[bytes, bytes]:
            return raw, deflate_segment(raw) if gzip else b""

        jobs = self._rendered(states)
        pieces = [fresh(self._registry_text(openmetrics=openmetrics))]
        for index, family in enumerate(FAMILIES):
            present = [job for job in jobs if job.chunks[index]]
            if present:
                pieces.append(fresh(family.header(openmetrics=openmetrics).encode()))
                if gzip:
                    pieces += [(job.chunks[index], job.segment(index)) for job in present]
                else:
                    pieces += [(job.chunks[index], b"") for job in present]
        if openmetrics:
            pieces.append(fresh(b"# EOF\n"))
        return pieces

    def _registry_text(self, *, openmetrics: bool) -> bytes:
        if openmetrics:
            return _openmetrics_latest(self._registry).removesuffix(b"# EOF\n")
        return text_latest(self._registry)
