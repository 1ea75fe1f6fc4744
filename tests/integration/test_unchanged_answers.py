import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from pydantic import SecretStr

from exporter.cce.auth.base import TokenAuth
from exporter.cce.client import CCEClient, RetryPolicy
from exporter.errors import ApiError, ErrorKind
from exporter.jobs.state import JobStore
from exporter.metrics.cce_exporter import Instruments
from exporter.scheduler import PollSettings, Scheduler
from tests.standins.jobs import job_object

ENDPOINT = "https://cce.example.test"
PROJECT = "0123456789abcdef0123456789abcdef"
JOB = "job-1"
URL = f"{ENDPOINT}/api/v3/projects/{PROJECT}/jobs/{JOB}"


@pytest.fixture
async def client(instruments: Instruments) -> AsyncIterator[CCEClient]:
    """A client with a static token that tries each request once, over a real session."""
    async with aiohttp.ClientSession() as session:
        yield CCEClient(
            session,
            ENDPOINT,
            TokenAuth(SecretStr("tok")),
            instruments,
            timeout=5,
            retry=RetryPolicy(attempts=1),
        )


def _job(phase: str, step: str = "Running") -> dict[str, Any]:
    return job_object(JOB, phase, [job_object("s-1", "Success"), job_object("s-2", step)])


async def test_an_unchanged_answer_gives_the_tree_of_the_last_poll(client: CCEClient) -> None:
    """The same answer twice gives the very same tree; a changed one gives a new, right one."""
    with aioresponses() as mock:
        mock.get(URL, body=json.dumps(_job("Running")))
        mock.get(URL, body=json.dumps(_job("Running")))
        mock.get(URL, body=json.dumps(_job("Running", "Success")))
        first = await client.show_job(PROJECT, JOB)
        second = await client.show_job(PROJECT, JOB)
        third = await client.show_job(PROJECT, JOB)
    assert second is first
    assert third is not first
    assert [node.phase for node in third.nodes] == ["Running", "Success", "Success"]
    assert [node.phase for node in first.nodes] == ["Running", "Success", "Running"]


async def test_an_unchanged_bad_answer_fails_every_time(client: CCEClient) -> None:
    """An answer that is not a job is refused at every poll, however often it repeats."""
    with aioresponses() as mock:
        for _ in range(2):
            mock.get(URL, body=b'{"kind": "Job"}')
        for _ in range(2):
            with pytest.raises(ApiError) as caught:
                await client.show_job(PROJECT, JOB)
            assert caught.value.kind is ErrorKind.INVALID_RESPONSE


async def test_polls_of_an_unchanged_job_still_count_and_stamp(
    client: CCEClient, instruments: Instruments
) -> None:
    """Unchanged answers make new states: polls counted, success stamped, parse errors counted."""
    now = [1_000.0]
    store = JobStore()
    scheduler = Scheduler(
        client,
        store,
        instruments,
        PollSettings(PROJECT, poll_interval=30, poll_concurrency=1, finished_retention=60),
        clock=lambda: now[0],
        monotonic=lambda: now[0],
    )
    scheduler.watch([JOB])
    job = _job("Running")
    job["metadata"]["creationTimestamp"] = "not a time"
    with aioresponses() as mock:
        for _ in range(2):
            mock.get(URL, body=json.dumps(job))
        await scheduler.poll_due(jitter=False)
        first = store.get(JOB)
        now[0] += 30
        await scheduler.poll_due(jitter=False)
        second = store.get(JOB)
    assert first is not None
    assert second is not None
    assert second.tree is first.tree
    assert (second.polls, second.last_success) == (2, 1_030.0)
    errors = instruments.registry.get_sample_value(
        "cce_exporter_parse_errors_total", {"field": "metadata.creationTimestamp"}
    )
    assert errors == 2.0
