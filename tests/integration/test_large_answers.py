"""Large and odd answers through the real client: the loop stays free, values cost only themselves.

The job list has no paging: a list of tens of MB must be decoded without
blocking the event loop, with a cap on the jobs read. Values the exporter
does not read (a 5,000-digit number, a byte that is not UTF-8) must not fail
an answer, and every label value read from the API is cut.
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from exporter.cce.auth.base import TokenAuth
from exporter.cce.client import CCEClient, RetryPolicy
from exporter.errors import ApiError, ErrorKind
from exporter.metrics.cce_exporter import Instruments
from tests.standins.cce import TOKEN, FakeCCE, Fault
from tests.standins.jobs import CREATED, job_object, v2_job

PROJECT = "proj"
MIB = 1024 * 1024
# The label limit of docs/metrics.md.
LABEL_CHARS = 200
# About 20 MB of job list: the event loop took half a second to decode it.
LISTED = 24_000
KEPT = 20_000


@dataclass
class Rig:
    """The real client against a fake API whose job list answers `list_body`."""

    api: FakeCCE
    client: CCEClient
    list_body: list[bytes]


@pytest.fixture
async def rig(aiohttp_server: AiohttpServer, instruments: Instruments) -> AsyncIterator[Rig]:
    """Yield the client and its fake API."""
    api = FakeCCE()
    list_body = [b"[]"]

    async def list_jobs(_request: web.Request) -> web.Response:
        return web.Response(body=list_body[0], content_type="application/json")

    app = api.app()
    app.router.add_get("/api/v2/projects/{project_id}/big", list_jobs)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        client = CCEClient(
            session, str(server.make_url("")), TokenAuth(SecretStr(TOKEN)), instruments,
            timeout=60, retry=RetryPolicy(attempts=1),
        )  # fmt: skip
        yield Rig(api, client, list_body)


def _big_list() -> bytes:
    """LISTED v2 jobs with a sub-job and a reason each: about 0.9 KB a job."""
    jobs = []
    for index in range(LISTED):
        job = v2_job(f"listed-{index:05d}", created=CREATED, subjobs=1)
        job["status"]["reason"] = "r" * 200
        jobs.append(job)
    return json.dumps(jobs).encode()


async def _max_gap_while(work: Any) -> tuple[Any, float]:
    """Await `work` while a heartbeat ticks; return its result and the longest gap between ticks."""
    gaps = [0.0]
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    try:
        result = await work
    finally:
        done.set()
        await beat
    return result, max(gaps)


async def test_a_large_job_list_leaves_the_loop_free_and_is_capped(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A 20 MB list never stalls the loop for long; jobs past the cap are ignored and logged."""
    rig.list_body[0] = _big_list()
    assert len(rig.list_body[0]) > 19 * MIB
    big = rig.client.jobs_url(PROJECT).with_path(f"/api/v2/projects/{PROJECT}/big")
    monkeypatch.setattr(rig.client, "jobs_url", lambda _project, _api=None: big)
    with caplog.at_level(logging.WARNING):
        listed, gap = await _max_gap_while(rig.client.list_jobs(PROJECT))
    # Decoding it on the loop took half a second here; in a thread, a few ms a
    # step (the longest: turning 20 MB of bytes into text). Generous for a busy machine.
    assert gap < 0.3
    assert len(listed) == KEPT
    assert listed[-1].job_id == f"listed-{KEPT - 1:05d}"
    [line] = [r for r in caplog.records if r.getMessage() == "job_list_truncated"]
    assert line.fields == {"kept": KEPT, "ignored": LISTED - KEPT}  # type: ignore[attr-defined]


async def test_a_job_list_over_its_cap_is_refused_unread(rig: Rig) -> None:
    """A job list declaring more than 64 MiB is an invalid response, refused for its size."""
    rig.list_body[0] = b" " * (64 * MIB + 1)
    big = rig.client.jobs_url(PROJECT).with_path(f"/api/v2/projects/{PROJECT}/big")
    rig.client.jobs_url = lambda _project, _api=None: big  # type: ignore[method-assign]
    with pytest.raises(ApiError) as info:
        await rig.client.list_jobs(PROJECT)
    assert info.value.kind is ErrorKind.INVALID_RESPONSE
    assert "cap" in info.value.detail


async def test_a_huge_number_in_an_unread_field_costs_nothing(rig: Rig) -> None:
    """A 5,000-digit number in a field the exporter does not read leaves the job readable."""
    job = job_object("numbers", "Running")
    text = json.dumps(job).replace('"spec": {', '"spec": {"nodeCount": ' + "7" * 5000 + ", ", 1)
    rig.api.faults["numbers"] = Fault(200, text)
    tree = await rig.client.show_job(PROJECT, "numbers")
    assert tree.root.phase == "Running"
    assert tree.parse_errors == ()


async def test_a_huge_number_in_a_read_field_costs_only_that_field(rig: Rig) -> None:
    """A 5,000-digit number where the job type belongs empties the type alone."""
    job = job_object("typed", "Running")
    job["spec"]["type"] = "PLACEHOLDER"
    rig.api.faults["typed"] = Fault(200, json.dumps(job).replace('"PLACEHOLDER"', "9" * 5000))
    tree = await rig.client.show_job(PROJECT, "typed")
    assert (tree.root.phase, tree.root.job_type) == ("Running", "")
    assert tree.parse_errors == ("spec.type",)


async def test_an_invalid_utf8_byte_costs_only_itself(rig: Rig) -> None:
    """A reason with a byte that is not UTF-8 is read with U+FFFD in its place."""
    job = job_object("bytes", "Failed", reason="PLACEHOLDER")
    body = json.dumps(job).encode().replace(b"PLACEHOLDER", b"disk \xff full")
    rig.api.faults["bytes"] = Fault(200, body)
    tree = await rig.client.show_job(PROJECT, "bytes")
    assert tree.root.reason == "disk \ufffd full"


async def test_every_label_value_from_the_api_is_cut(rig: Rig) -> None:
    """A 2 MB type, cluster, resource, phase or sub-job ID becomes a 200-character label."""
    long = "x" * (2 * MIB)
    sub = job_object("y" * 1000, "Running", job_type=long)
    job = job_object(
        "long", "Running", [sub], job_type=long, cluster=long, resource_name=long,
        resource_id=long,
    )  # fmt: skip
    job["status"]["phase"] = long
    rig.api.faults["long"] = Fault(200, json.dumps(job))
    tree = await rig.client.show_job(PROJECT, "long")
    root, child = tree.nodes
    for value in (root.job_type, root.cluster_id, root.resource_id, root.resource_name):
        assert len(value) == LABEL_CHARS
    assert len(child.job_type) == LABEL_CHARS
    assert root.phase is not None
    assert len(root.phase) == LABEL_CHARS
    assert child.job_id == "y" * LABEL_CHARS
