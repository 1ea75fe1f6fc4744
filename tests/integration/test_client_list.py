import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from exporter.cce.auth.base import TokenAuth
from exporter.cce.client import CCEClient
from exporter.errors import ApiError, ErrorKind
from exporter.metrics.cce_exporter import Instruments
from tests.standins.jobs import v2_job


class _Answer:
    """What the stand-in list endpoint answers next, and the headers it was asked with."""

    def __init__(self) -> None:
        self.status = 200
        self.body = "[]"
        self.seen: list[tuple[str, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.path, dict(request.headers)))
        return web.Response(status=self.status, text=self.body, content_type="application/json")


@pytest.fixture
def answer() -> _Answer:
    """Return the stand-in's next answer."""
    return _Answer()


@pytest.fixture
async def client(
    answer: _Answer, aiohttp_server: Any, instruments: Instruments
) -> AsyncIterator[CCEClient]:
    """Yield a client against a loopback server that answers the job list."""
    app = web.Application()
    app.router.add_get("/api/v2/projects/{project}/jobs", answer.handle)
    server: TestServer = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        yield CCEClient(
            session,
            str(server.make_url("")).rstrip("/"),
            TokenAuth(SecretStr("tok")),
            instruments,
            timeout=5,
        )


async def test_list_jobs_reads_the_v2_list(
    client: CCEClient, answer: _Answer, instruments: Instruments
) -> None:
    """The list is read into listed jobs and counted as a list_jobs request."""
    answer.body = json.dumps([v2_job("job-a", created=1_750_000_000), v2_job("job-b", created=1)])
    listed = await client.list_jobs("p1")
    assert [job.job_id for job in listed] == ["job-a", "job-b"]
    path, headers = answer.seen[0]
    assert path == "/api/v2/projects/p1/jobs"
    assert headers["X-Auth-Token"] == "tok"
    count = instruments.registry.get_sample_value(
        "cce_exporter_api_requests_total",
        {"target": "default", "operation": "list_jobs", "code": "200"},
    )
    assert count == 1


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (403, '{"error_code": "APIG.0101", "error_msg": "no cce:job:list"}', ErrorKind.FORBIDDEN),
        (429, '{"error_code": "APIG.0308"}', ErrorKind.THROTTLED),
        (500, "<html>oops</html>", ErrorKind.SERVER_ERROR),
        (200, '{"not": "a list"}', ErrorKind.INVALID_RESPONSE),
        (200, "[{]", ErrorKind.INVALID_RESPONSE),
    ],
)
async def test_list_jobs_failures_are_typed(
    client: CCEClient, answer: _Answer, status: int, body: str, kind: ErrorKind
) -> None:
    """Every failure of the list maps to one error kind, as for show_job."""
    answer.status, answer.body = status, body
    with pytest.raises(ApiError) as excinfo:
        await client.list_jobs("p1")
    assert excinfo.value.kind == kind


async def test_list_jobs_refuses_an_invalid_project(client: CCEClient, answer: _Answer) -> None:
    """A project ID that may not go into a URL is refused before any request."""
    with pytest.raises(ValueError, match="not a valid ID"):
        await client.list_jobs("../p1")
    assert answer.seen == []


async def test_a_list_403_leaves_job_reads_alone(
    aiohttp_server: Any,
    instruments: Instruments,
    example_job: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With cce:job:list refused and cce:job:get granted, jobs are still read; listing backs off."""
    seen: list[str] = []

    async def list_jobs(request: web.Request) -> web.Response:
        seen.append("list")
        body = {"errorCode": "CCE.01403001", "errorMessage": "Forbidden"}
        return web.json_response(body, status=403)

    async def show_job(request: web.Request) -> web.Response:
        seen.append("show")
        return web.json_response(example_job)

    app = web.Application()
    app.router.add_get("/api/v2/projects/{project}/jobs", list_jobs)
    app.router.add_get("/api/v3/projects/{project}/jobs/{job}", show_job)
    server: TestServer = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        client = CCEClient(
            session, str(server.make_url("")), TokenAuth(SecretStr("tok")), instruments, timeout=5
        )
        for _ in range(3):
            with pytest.raises(ApiError) as refused:
                await client.list_jobs("p1")
            assert refused.value.kind is ErrorKind.FORBIDDEN
            tree = await client.show_job("p1", "job-a")
            assert tree.nodes
    assert seen == ["list", "show", "show", "show"]
    assert "refused cce:job:list" in str(refused.value)
    [line] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.getMessage() == "authentication_failed"
    assert line.fields["action"] == "cce:job:list"  # type: ignore[attr-defined]
