"""Render job states as Prometheus text or OpenMetrics, plain or gzip.

prometheus-client's collectors cost about 14 microseconds a sample, too slow for
hundreds of thousands of job series. A JobState never changes, so each job is
rendered once per new state into one chunk per metric family (the chunks of
its tree once per new tree), and each chunk is deflated at once on its own,
ending on a byte boundary (a sync flush). Only the deflated chunks are kept,
with the CRC-32 and size of their text: the text is eight times larger.

A gzip scrape only joins what is cached: the deflated chunks in a row form
one deflate stream, which becomes a single gzip member with a header, an
empty final block, and the CRC-32 of the whole text, combined from the CRCs
kept (see exporter.metrics.crc32) and computed once per family while its
chunks are the same. One member rather than many, because some clients
(aiohttp's among them) read only the first member of a gzip body. A plain
scrape inflates the same stream as it is sent. The text is exactly what
prometheus-client writes for the same families.
"""

import functools
import operator
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import cast

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as text_latest
from prometheus_client.openmetrics import exposition as openmetrics

from exporter.jobs.state import JobState
from exporter.metrics import crc32
from exporter.metrics.cce_job import FAMILIES, TREE_FAMILIES, render_polls, render_tree

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


@dataclass(frozen=True, slots=True)
class Piece:
    """The series of one family of one job: its text deflated, and the text's CRC-32 and size."""

    segment: bytes
    crc: int
    size: int


def _pieces(chunks: Iterable[bytes]) -> tuple[Piece | None, ...]:
    """Deflate each chunk of text on its own; None for a chunk without series."""
    return tuple(
        Piece(deflate_segment(chunk), zlib.crc32(chunk), len(chunk)) if chunk else None
        for chunk in chunks
    )


@dataclass(frozen=True, slots=True)
class RenderedJob:
    """One job state rendered: a piece per family, those of its tree kept while the tree is."""

    state: JobState
    pieces: tuple[Piece | None, ...]


@dataclass(frozen=True, slots=True)
class Body:
    """An exposition as pieces to send in order: fresh ones around the shared job part.

    The job part is kept deflated only: a plain body inflates it as it is sent.
    """

    head: tuple[bytes, ...]
    jobs: bytes  # the cached deflate stream itself, shared by every scrape
    tail: tuple[bytes, ...]
    jobs_size: int  # of the job part as it is sent
    inflate: bool = False

    def __iter__(self) -> Iterator[bytes]:
        """Iterate over the pieces, in order."""
        jobs = _inflated(self.jobs) if self.inflate else (self.jobs,)
        return chain(self.head, jobs, self.tail)

    def __len__(self) -> int:
        """Return the size of the whole body, in bytes."""
        return sum(map(len, self.head)) + self.jobs_size + sum(map(len, self.tail))


# Deflated bytes inflated at a time, and the most text one step gives: a
# client that reads slowly holds one step's text, not the body's.
_INFLATE_BYTES = 1 << 14
_TEXT_BYTES = 1 << 16


def _inflated(stream: bytes) -> Iterator[bytes]:
    """Inflate a deflate stream (without its end), at most _TEXT_BYTES of text at a time."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    view = memoryview(stream)
    for start in range(0, len(view), _INFLATE_BYTES):
        data: bytes | memoryview = view[start : start + _INFLATE_BYTES]
        while True:
            text = inflater.decompress(data, _TEXT_BYTES)
            if text:
                yield text
            data = inflater.unconsumed_tail
            if not data and len(text) < _TEXT_BYTES:
                break


@dataclass(frozen=True, slots=True)
class _Block:
    """The series of one family of every job, as their pieces, with the CRC-32 and size of all."""

    pieces: tuple[Piece, ...]
    crc: int
    size: int


@dataclass(frozen=True, slots=True)
class _JobPart:
    """The job part of one form of body, for one list of states: deflated, with CRC and size."""

    states: tuple[JobState, ...]
    # The deflated pieces joined once, so that a scrape sends a few large writes.
    stream: bytes
    crc: int  # of the text
    size: int  # of the text


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    """Tell whether two tuples hold the very same objects (states compare by value)."""
    return len(a) == len(b) and all(map(operator.is_, a, b))


class Renderer:
    """Renders the store's states and the exporter's registry for a scrape.

    Keeps the rendering of each job until its state is replaced, and that of
    its tree until its tree is; jobs that are no longer passed in are
    forgotten, and their series with them. The job part of each form of body
    (text, OpenMetrics) is kept as one deflate stream until the states
    change: a gzip scrape copies no job text and holds nothing of its own but
    the registry's few lines; a plain one inflates the stream a piece at a
    time as it sends it. `sparse` renders the sparse form (see
    exporter.metrics.cce_job).
    """

    def __init__(self, registry: CollectorRegistry, *, sparse: bool = False) -> None:
        self._registry = registry
        self._sparse = sparse
        self._cache: dict[str, RenderedJob] = {}
        self._blocks: dict[int, _Block] = {}
        self._parts: dict[bool, _JobPart] = {}

    def _rendered(self, states: Iterable[JobState]) -> list[RenderedJob]:
        cache = self._cache
        fresh: dict[str, RenderedJob] = {}
        trees = len(TREE_FAMILIES)
        for state in states:
            rendered = cache.get(state.job_id)
            if rendered is None or rendered.state is not state:
                if (
                    rendered is not None
                    and rendered.state.tree is state.tree
                    and rendered.state.api is state.api
                    and rendered.state.project_id == state.project_id
                ):
                    tree = rendered.pieces[:trees]  # the same tree, read again by a poll
                else:
                    api = state.api.value if state.api is not None else ""
                    text = render_tree(
                        state.tree, state.job_id, state.project_id, api=api, sparse=self._sparse
                    )
                    tree = _pieces(text)
                polls = _pieces(render_polls(state, sparse=self._sparse))
                rendered = RenderedJob(state, tree + polls)
            fresh[state.job_id] = rendered
        self._cache = fresh
        return list(fresh.values())

    def render(self, states: Iterable[JobState], *, openmetrics: bool = False) -> bytes:
        """Return the whole exposition."""
        return b"".join(self.body(states, openmetrics=openmetrics))

    def render_parts(self, states: Iterable[JobState], *, openmetrics: bool = False) -> list[bytes]:
        """Return the whole exposition as pieces, in order, to be sent as they are."""
        return list(self.body(states, openmetrics=openmetrics))

    def render_gzip(self, states: Iterable[JobState], *, openmetrics: bool = False) -> bytes:
        """Return the whole exposition as one gzip member."""
        return b"".join(self.body(states, openmetrics=openmetrics, gzip=True))

    def body(
        self, states: Iterable[JobState], *, openmetrics: bool = False, gzip: bool = False
    ) -> Body:
        """Return the whole exposition as pieces, plain or as one gzip member."""
        part = self._job_part(tuple(states), openmetrics=openmetrics)
        registry = self._registry_text(openmetrics=openmetrics)
        end = b"# EOF\n" if openmetrics else b""
        if not gzip:
            return Body((registry,), part.stream, (end,) if end else (), part.size, inflate=True)
        crc = crc32.combine(zlib.crc32(registry), part.crc, part.size)
        crc = zlib.crc32(end, crc)
        size = len(registry) + part.size + len(end)
        trailer = _FINAL_BLOCK + struct.pack("<II", crc, size & 0xFFFFFFFF)
        end_segments = (deflate_segment(end),) if end else ()
        return Body(
            (_GZIP_HEADER, deflate_segment(registry)),
            part.stream,
            (*end_segments, trailer),
            len(part.stream),
        )

    def _job_part(self, states: tuple[JobState, ...], *, openmetrics: bool) -> _JobPart:
        """Return the job part for these states, from the cache while they are the same."""
        cached = self._parts.get(openmetrics)
        if cached is not None and _same(cached.states, states):
            return cached  # nothing changed: no job is looked up again
        jobs = self._rendered(states)
        segments: list[bytes] = []
        crc = size = 0
        for index, family in enumerate(FAMILIES):
            pieces = tuple(piece for job in jobs if (piece := job.pieces[index]) is not None)
            if not pieces:
                continue
            block = self._block(index, pieces)
            header = family.header(openmetrics=openmetrics).encode()
            segments.append(_header_segment(header))
            segments += (piece.segment for piece in pieces)
            crc = crc32.combine(zlib.crc32(header, crc), block.crc, block.size)
            size += len(header) + block.size
        part = _JobPart(states, b"".join(segments), crc, size)
        self._parts[openmetrics] = part
        return part

    def _block(self, index: int, pieces: tuple[Piece, ...]) -> _Block:
        """Return the block of family `index`: its CRC-32 is computed once for the same pieces."""
        block = self._blocks.get(index)
        if block is None or not _same(block.pieces, pieces):
            crc = crc32.join((piece.crc, piece.size) for piece in pieces)
            block = _Block(pieces, crc, sum(piece.size for piece in pieces))
            self._blocks[index] = block
        return block

    def _registry_text(self, *, openmetrics: bool) -> bytes:
        if openmetrics:
            return _openmetrics_latest(self._registry).removesuffix(b"# EOF\n")
        return text_latest(self._registry)


@functools.cache
def _header_segment(header: bytes) -> bytes:
    """Return a family's header deflated (a few dozen headers, deflated once each)."""
    return deflate_segment(header)
