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
from enum import Enum
from typing import cast

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as text_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.utils import floatToGoString

from exporter.jobs.state import ERROR_KINDS, JobState
from exporter.jobs.tree import PHASES, JobNode

# prometheus-client ships these without annotations.
_go_float = cast(Callable[[float], str], floatToGoString)
_openmetrics_latest = cast(Callable[[CollectorRegistry], bytes], openmetrics.generate_latest)

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
REASON_MAX_CHARS = 200
_GZIP_LEVEL = 6
# A gzip header without name or time (RFC 1952): deflate, no flags, mtime 0, OS unknown.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
# The last block of a deflate stream: final, fixed Huffman, empty.
_FINAL_BLOCK = b"\x03\x00"


class Family(Enum):
    """Every per-job metric family: (name, type, help). Output follows this order."""

    INFO = (
        "cce_job_info",
        "gauge",
        "Each job and sub-job with its place in the tree, type, cluster and resource; always 1.",
    )
    PHASE = (
        "cce_job_status_phase",
        "gauge",
        "Phase of a job: 1 for the current phase, 0 for the others.",
    )
    CREATED = (
        "cce_job_created_timestamp_seconds",
        "gauge",
        "When the job was created, in Unix seconds.",
    )
    UPDATED = (
        "cce_job_updated_timestamp_seconds",
        "gauge",
        "When the job was last updated, in Unix seconds.",
    )
    DURATION = (
        "cce_job_duration_seconds",
        "gauge",
        "Time from creation to last update of the job.",
    )
    SUBJOBS = (
        "cce_job_subjobs",
        "gauge",
        "Direct sub-jobs of a job by phase.",
    )
    PROGRESS = (
        "cce_job_progress_ratio",
        "gauge",
        "Share of the direct sub-jobs of a job that succeeded.",
    )
    REASON = (
        "cce_job_status_reason_info",
        "gauge",
        "Why a job is in its phase, while the API gives a reason; always 1.",
    )
    POLL_SUCCESS = (
        "cce_job_poll_success",
        "gauge",
        "1 if the last poll of a watched job returned a valid job, else 0.",
    )
    LAST_SUCCESS = (
        "cce_job_last_poll_success_timestamp_seconds",
        "gauge",
        "When a watched job was last polled successfully, in Unix seconds.",
    )
    POLL_ERRORS = (
        "cce_job_poll_errors_total",
        "counter",
        "Failed polls of a watched job by kind of error.",
    )

    def header(self, *, openmetrics: bool) -> str:
        """Return the HELP and TYPE lines of the family."""
        name, kind, text = self.value
        if openmetrics and kind == "counter":
            name = name.removesuffix("_total")
        return f"# HELP {name} {text}\n# TYPE {name} {kind}\n"


FAMILIES = tuple(Family)


def _escape(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _seconds(nanos: int) -> str:
    # int / int is correctly rounded; nanos / 1e9 would round nanos to a float first.
    return _go_float(nanos / 1_000_000_000)


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


def render_job(state: JobState, project_id: str) -> RenderedJob:
    """Render every series of one watched job."""
    lines: dict[Family, list[str]] = {family: [] for family in FAMILIES}
    p = _escape(project_id)
    root_id = _escape(state.job_id)
    if state.tree is not None:
        for node in state.tree.nodes:
            _render_node(lines, node, p, root_id)
    # Labels in sorted order, as prometheus-client writes them.
    poll = f'job_id="{root_id}",project_id="{p}"'
    if state.polls:
        lines[Family.POLL_SUCCESS].append(
            f"cce_job_poll_success{{{poll}}} {float(state.last_ok)}\n"
        )
    if state.last_success is not None:
        lines[Family.LAST_SUCCESS].append(
            f"cce_job_last_poll_success_timestamp_seconds{{{poll}}} "
            f"{_go_float(state.last_success)}\n"
        )
    lines[Family.POLL_ERRORS] = [
        f'cce_job_poll_errors_total{{error="{kind.value}",{poll}}} {float(count)}\n'
        for kind, count in zip(ERROR_KINDS, state.errors, strict=True)
    ]
    return RenderedJob(state, tuple("".join(lines[family]).encode() for family in FAMILIES))


def _render_node(lines: dict[Family, list[str]], node: JobNode, p: str, root_id: str) -> None:
    # Labels in sorted order, as prometheus-client writes them.
    job = f'job_id="{_escape(node.job_id)}",job_type="{_escape(node.job_type)}"'
    tail = f'project_id="{p}",root_job_id="{root_id}"'
    base = f"{job},{tail}"
    lines[Family.INFO].append(
        f'cce_job_info{{cluster_id="{_escape(node.cluster_id)}",depth="{node.depth}",{job},'
        f'parent_job_id="{_escape(node.parent_job_id)}",project_id="{p}",'
        f'resource_id="{_escape(node.resource_id)}",'
        f'resource_name="{_escape(node.resource_name)}",root_job_id="{root_id}"}} 1.0\n'
    )
    phase_lines = lines[Family.PHASE]
    for phase in PHASES:
        value = "1.0" if node.phase == phase else "0.0"
        phase_lines.append(f'cce_job_status_phase{{{job},phase="{phase}",{tail}}} {value}\n')
    if node.phase is not None and node.phase not in PHASES:
        phase_lines.append(
            f'cce_job_status_phase{{{job},phase="{_escape(node.phase)}",{tail}}} 1.0\n'
        )
    if node.created_ns is not None:
        lines[Family.CREATED].append(
            f"cce_job_created_timestamp_seconds{{{base}}} {_seconds(node.created_ns)}\n"
        )
    if node.updated_ns is not None:
        lines[Family.UPDATED].append(
            f"cce_job_updated_timestamp_seconds{{{base}}} {_seconds(node.updated_ns)}\n"
        )
    if node.created_ns is not None and node.updated_ns is not None:
        lines[Family.DURATION].append(
            f"cce_job_duration_seconds{{{base}}} {_seconds(node.updated_ns - node.created_ns)}\n"
        )
    for phase, count in node.subjob_phases or ():
        lines[Family.SUBJOBS].append(
            f'cce_job_subjobs{{{job},phase="{_escape(phase)}",{tail}}} {float(count)}\n'
        )
    progress = node.progress
    if progress is not None:
        lines[Family.PROGRESS].append(f"cce_job_progress_ratio{{{base}}} {_go_float(progress)}\n")
    if node.reason:
        reason = _escape(node.reason[:REASON_MAX_CHARS])
        lines[Family.REASON].append(
            f'cce_job_status_reason_info{{{job},project_id="{p}",reason="{reason}",'
            f'root_job_id="{root_id}"}} 1.0\n'
        )


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
                rendered = render_job(state, self._project_id)
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
