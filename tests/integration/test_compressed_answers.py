"""Compressed answers through the real client: inflated step by step, under the body cap.

A gzip bomb (a small body that inflates to hundreds of MiB) must stop at the
cap, count as `invalid_response` without a retry, and leave no memory behind.
"""

import gc
import gzip
import json
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from exporter.cce.auth.base import TokenAuth
from exporter.cce.client import CCEClient, RetryPolicy
from exporter.cce.transport import MAX_BODY_BYTES
from exporter.errors import ApiError, ErrorKind
from exporter.metrics.cce_exporter import Instruments
from tests.standins.cce import TOKEN, FakeCCE, Fault
from tests.standins.clocks import Sleeps
from tests.standins.jobs import job_object

PROJECT = "proj"
MIB = 1024 * 1024
# Far past the cap, and past the 32 MiB aiohttp inflates of one chunk at once.
BOMB_MIB = 256


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A gzip body of about 250 KB that inflates to 256 MiB of spaces."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * MIB
    return b"".join([*(packer.compress(block) for _ in range(BOMB_MIB)), packer.flush()])


@dataclass
class Rig:
    """The real client (3 attempts, instant retry waits) against a fake API."""

    api: FakeCCE
    client: CCEClient


@pytest.fixture
async def rig(aiohttp_server: AiohttpServer, instruments: Instruments) -> AsyncIterator[Rig]:
    """Yield the client and its fake API."""
    api = FakeCCE()
    server = await aiohttp_server(api.app())
    sleeps = Sleeps()
    async with aiohttp.ClientSession() as session:
        client = CCEClient(
            session, str(server.make_url("")), TokenAuth(SecretStr(TOKEN)), instruments,
            timeout=30, retry=RetryPolicy(attempts=3), sleep=sleeps.sleep, clock=sleeps.clock,
        )  # fmt: skip
        yield Rig(api, client)


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Turn the cyclic garbage collector off, so that memory held by a cycle shows."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _kind_of_failure(rig: Rig, job_id: str) -> ErrorKind:
    try:
        await rig.client.show_job(PROJECT, job_id)
    except ApiError as exc:
        return exc.kind
    msg = "the poll was expected to fail"
    raise AssertionError(msg)


@pytest.mark.usefixtures("no_gc")
async def test_a_gzip_bomb_stops_at_the_cap_and_leaves_no_memory(rig: Rig, bomb: bytes) -> None:
    """A body inflating past the cap is invalid_response, tried once, and held nowhere after."""
    rig.api.faults["bomb"] = Fault(200, bomb, headers={"Content-Encoding": "gzip"})
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kind = await _kind_of_failure(rig, "bomb")
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kind is ErrorKind.INVALID_RESPONSE
    assert rig.api.requests["bomb"] == 1
    # Inflated in steps: never much past the cap at once (aiohttp took 32 MiB a chunk).
    assert peak - before < MAX_BODY_BYTES + 8 * MIB
    # Nothing read stays alive once the failure is handled, garbage collector or not.
    assert after - before < 2 * MIB


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),
    ],
    ids=["gzip", "deflate-zlib", "deflate-raw"],
)
async def test_a_compressed_job_is_read(rig: Rig, encoding: str, pack: object) -> None:
    """A job sent gzip or deflate (with or without the zlib header) reads like a plain one."""
    assert callable(pack)
    body = pack(json.dumps(job_object("zipped", "Success")).encode())
    rig.api.faults["zipped"] = Fault(200, body, headers={"Content-Encoding": encoding})
    tree = await rig.client.show_job(PROJECT, "zipped")
    assert tree.root.phase == "Success"


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("br", b"\x1b\x00\x00"),
        ("gzip", b"not gzip at all"),
        ("gzip", gzip.compress(json.dumps(job_object("cut")).encode())[:-12]),
    ],
    ids=["not-asked-for", "not-gzip", "cut-short"],
)
async def test_a_body_that_does_not_inflate_is_an_invalid_response(
    rig: Rig, encoding: str, body: bytes
) -> None:
    """An encoding not asked for, or data that does not inflate whole, is invalid_response."""
    rig.api.faults["odd"] = Fault(200, body, headers={"Content-Encoding": encoding})
    assert await _kind_of_failure(rig, "odd") is ErrorKind.INVALID_RESPONSE
    assert rig.api.requests["odd"] == 1
