import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web
from aioresponses import aioresponses
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from exporter.cce.auth.base import TokenAuth
from exporter.cce.client import CCEClient, RetryPolicy
from exporter.cce.ratelimit import RateLimiter
from exporter.cce.transport import MAX_BODY_BYTES, error_detail, parse_retry_after
from exporter.errors import ApiError, ErrorKind
from exporter.jobs.state import ERROR_KINDS, JobStore
from exporter.metrics.cce_exporter import Instruments
from exporter.scheduler import PollSettings, Scheduler
from tests.standins.clocks import Sleeps
from tests.standins.jobs import EXAMPLE_JOB_ID

ENDPOINT = "https://cce.cn-north-4.myhuaweicloud.com"
PROJECT = "0123456789abcdef0123456789abcdef"
URL = f"{ENDPOINT}/api/v3/projects/{PROJECT}/jobs/{EXAMPLE_JOB_ID}"


@pytest.fixture
async def client(instruments: Instruments) -> AsyncIterator[CCEClient]:
    """A client with a static token that tries each request once, over a real session."""
    async with aiohttp.ClientSession() as session:
        yield CCEClient(
            session,
            ENDPOINT,
            TokenAuth(SecretStr("tok-123")),
            instruments,
            timeout=5,
            retry=RetryPolicy(attempts=1),
        )


async def test_reads_a_job_with_token_and_content_type(
    client: CCEClient, example_job: dict[str, Any], instruments: Instruments
) -> None:
    """A 200 answer gives the job tree; the request carries the token and JSON content type."""
    with aioresponses() as mock:
        mock.get(URL, payload=example_job)
        tree = await client.show_job(PROJECT, EXAMPLE_JOB_ID)
        [(method, url)] = list(mock.requests)
        [call] = mock.requests[(method, url)]
    assert (method, str(url)) == ("GET", URL)
    headers = call.kwargs["headers"]
    assert headers["X-Auth-Token"] == "tok-123"
    assert headers["Content-Type"] == "application/json"
    assert len(tree.nodes) == 3
    assert (
        instruments.registry.get_sample_value(
            "cce_exporter_api_requests_total",
            {"target": "default", "operation": "show_job", "code": "200"},
        )
        == 1.0
    )


def test_ids_are_checked_and_encoded(client: CCEClient) -> None:
    """IDs outside the spec's pattern are refused before any URL is built."""
    url = client.job_url(PROJECT, "a-b_c")
    assert str(url).endswith(f"/projects/{PROJECT}/jobs/a-b_c")
    for bad in ("../x", "a/b", "", "a" * 65, "a?b", "-a"):
        with pytest.raises(ValueError, match="not a valid ID"):
            client.job_url(PROJECT, bad)


@pytest.mark.parametrize(
    ("status", "body", "kind", "detail"),
    [
        (401, {"error_code": "APIG.0301", "error_msg": "Incorrect token"}, "unauthorized",
         "APIG.0301: Incorrect token"),
        (403, {"errorCode": "CCE.01403001", "errorMessage": "Forbidden"}, "forbidden",
         "CCE.01403001: Forbidden"),
        (404, {"errorCode": "CCE.01404001", "errorMessage": "Job not found"}, "not_found",
         "CCE.01404001"),
        (429, {"error_code": "APIG.0308", "error_msg": "over ratelimit"}, "throttled",
         "APIG.0308"),
        (500, {"code": "CCE.01500001", "message": "Internal"}, "server_error", "Internal"),
        (503, {"kind": "Status", "reason": "ServiceUnavailable"}, "server_error",
         "ServiceUnavailable"),
        (409, {"errorCode": "CCE.01409001"}, "invalid_response", "CCE.01409001"),
        (400, "", "invalid_response", "empty body"),
    ],
)  # fmt: skip
async def test_http_errors_map_to_kinds(
    client: CCEClient, status: int, body: object, kind: str, detail: str
) -> None:
    """Each HTTP error status becomes its error kind, with what the body says."""
    with aioresponses() as mock:
        mock.get(URL, status=status, body=json.dumps(body) if body else "",
                 headers={"X-Request-Id": "req-9"})  # fmt: skip
        with pytest.raises(ApiError) as caught:
            await client.show_job(PROJECT, EXAMPLE_JOB_ID)
    assert caught.value.kind == ErrorKind(kind)
    assert caught.value.status == status
    assert detail in str(caught.value)
    assert caught.value.request_id == "req-9"


async def test_error_texts_with_lone_surrogates_become_encodable(instruments: Instruments) -> None:
    """Lone surrogates in an error body or in X-Request-Id become U+FFFD in the error."""
    body = rb'{"error_code": "CCE.\ud800", "error_msg": "no \udc00 job"}'
    assert error_detail(body) == "CCE.\ufffd: no \ufffd job"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer 404 with a request ID byte that is not UTF-8: aiohttp reads it as a surrogate."""
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 404 Not Found\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        writer.write(head.encode() + b"X-Request-Id: req-\xff\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            client = CCEClient(session, f"http://127.0.0.1:{port}", TokenAuth(SecretStr("t")),
                               instruments, timeout=5, retry=RetryPolicy(attempts=1))  # fmt: skip
            with pytest.raises(ApiError) as caught:
                await client.show_job(PROJECT, EXAMPLE_JOB_ID)
    finally:
        server.close()
        await server.wait_closed()
    assert caught.value.kind is ErrorKind.NOT_FOUND
    assert caught.value.request_id == "req-\ufffd"
    assert (
        str(caught.value) == "not_found: HTTP 404: CCE.\ufffd: no \ufffd job (request req-\ufffd)"
    )


async def test_html_error_page_is_summarised(client: CCEClient) -> None:
    """A proxy's HTML page is reported briefly, as a server error."""
    page = "<html><body><h1>502 Bad Gateway</h1>" + "x" * 5000 + "</body></html>"
    with aioresponses() as mock:
        mock.get(URL, status=502, body=page, content_type="text/html")
        with pytest.raises(ApiError) as caught:
            await client.show_job(PROJECT, EXAMPLE_JOB_ID)
    assert caught.value.kind is ErrorKind.SERVER_ERROR
    assert "502 Bad Gateway" in caught.value.detail
    assert len(caught.value.detail) < 300


@pytest.mark.parametrize(
    ("exception", "kind"),
    [
        (TimeoutError(), ErrorKind.TIMEOUT),
        (aiohttp.ServerTimeoutError("read timeout"), ErrorKind.TIMEOUT),
        (aiohttp.ClientConnectionError("reset by peer"), ErrorKind.CONNECTION),
        (aiohttp.ServerDisconnectedError(), ErrorKind.CONNECTION),
        (aiohttp.ClientPayloadError("truncated"), ErrorKind.CONNECTION),
        (
            aiohttp.ClientResponseError(
                aiohttp.RequestInfo(yarl.URL(URL), "GET", CIMultiDictProxy(CIMultiDict())),
                (),
                status=400,
                message="malformed status line",
            ),
            ErrorKind.INVALID_RESPONSE,
        ),
    ],
)
async def test_transport_failures_map_to_kinds(
    client: CCEClient, instruments: Instruments, exception: Exception, kind: ErrorKind
) -> None:
    """Timeouts, broken connections and broken answers become their error kinds."""
    with aioresponses() as mock:
        mock.get(URL, exception=exception)
        with pytest.raises(ApiError) as caught:
            await client.show_job(PROJECT, EXAMPLE_JOB_ID)
    assert caught.value.kind is kind
    assert (
        instruments.registry.get_sample_value(
            "cce_exporter_api_requests_total",
            {"target": "default", "operation": "show_job", "code": "error"},
        )
        == 1.0
    )


@pytest.mark.parametrize(
    "body",
    [
        '{"kind": "Job", "metadata": {"uid": "x"',
        "<html>ok</html>",
        "[]",
        '"Job"',
        '{"unrelated": true}',
        "[" * 5000 + "]" * 5000,
    ],
)
async def test_bodies_that_are_not_jobs_are_invalid(client: CCEClient, body: str) -> None:
    """Truncated JSON, HTML, the wrong shape or absurd nesting is an invalid response."""
    with aioresponses() as mock:
        mock.get(URL, status=200, body=body)
        with pytest.raises(ApiError) as caught:
            await client.show_job(PROJECT, EXAMPLE_JOB_ID)
    assert caught.value.kind is ErrorKind.INVALID_RESPONSE


async def test_body_over_the_cap_is_refused(client: CCEClient) -> None:
    """A body larger than the cap is refused as an invalid response."""
    with aioresponses() as mock:
        mock.get(URL, status=200, body=b" " * (MAX_BODY_BYTES + 1))
        with pytest.raises(ApiError) as caught:
            await client.show_job(PROJECT, EXAMPLE_JOB_ID)
    assert caught.value.kind is ErrorKind.INVALID_RESPONSE
    assert "cap" in caught.value.detail


@pytest.fixture
async def retrying(instruments: Instruments) -> AsyncIterator[tuple[CCEClient, Sleeps]]:
    """A client that retries 3 times, with a rate limiter, on a fake clock."""
    sleeps = Sleeps()
    limiter = RateLimiter(1000, clock=sleeps.clock, sleep=sleeps.sleep)
    async with aiohttp.ClientSession() as session:
        yield (
            CCEClient(
                session, ENDPOINT, TokenAuth(SecretStr("t")), instruments, timeout=5,
                limiter=limiter, retry=RetryPolicy(attempts=3, initial=0.5, cap=8),
                sleep=sleeps.sleep, clock=sleeps.clock,
            ),
            sleeps,
        )  # fmt: skip


@pytest.mark.parametrize("jitter", [0.0, 0.0001, 0.5, 1.0])
@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_transient_failures_are_retried(
    retrying: tuple[CCEClient, Sleeps],
    example_job: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    jitter: float,
) -> None:
    """5xx and 429 are tried again after a wait, then the job is read.

    A 5xx waits a jittered backoff (the jitter pinned here to a fraction of its
    range); a 429 without Retry-After pauses every request for the limiter's
    first throttle pause (1 s), the retry waits just that, and requests resume
    at the steady rate (one token, 1 ms at 1000/s). A backoff shorter than that
    1 ms is topped up by the limiter to a whole token.
    """
    monkeypatch.setattr(random, "uniform", lambda low, high: low + (high - low) * jitter)
    client, sleeps = retrying
    with aioresponses() as mock:
        mock.get(URL, status=status, body="{}")
        mock.get(URL, exception=TimeoutError())
        mock.get(URL, payload=example_job)
        tree = await client.show_job(PROJECT, EXAMPLE_JOB_ID)
    assert len(tree.nodes) == 3
    backoff = 1.0 * jitter  # the second wait's range is [0, 2 x 0.5 s]
    if status == 429:
        pause, token, *rest = sleeps.calls
        assert pause == 1.0
        assert token == pytest.approx(0.001)
        assert rest[0] == pytest.approx(backoff)
        if backoff < 0.001:
            assert sum(rest) == pytest.approx(0.001)
        else:
            assert len(rest) == 1
    else:
        assert sleeps.calls == pytest.approx([0.5 * jitter, backoff])


async def test_retries_stop_after_the_last_attempt(retrying: tuple[CCEClient, Sleeps]) -> None:
    """After the last attempt the last failure is raised, its kind intact."""
    client, _ = retrying
    with aioresponses() as mock:
        for _ in range(3):
            mock.get(URL, status=503, body="{}")
        mock.get(URL, status=200, body="{}")
        with pytest.raises(ApiError) as caught:
            await client.show_job(PROJECT, EXAMPLE_JOB_ID)
        assert sum(len(calls) for calls in mock.requests.values()) == 3
    assert caught.value.kind is ErrorKind.SERVER_ERROR


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409])
async def test_client_errors_are_not_retried(
    retrying: tuple[CCEClient, Sleeps], status: int
) -> None:
    """A 4xx other than 429 fails at once, without a second request."""
    client, sleeps = retrying
    with aioresponses() as mock:
        mock.get(URL, status=status, body="{}")
        mock.get(URL, status=200, body="{}")
        with pytest.raises(ApiError):
            await client.show_job(PROJECT, EXAMPLE_JOB_ID)
        assert sum(len(calls) for calls in mock.requests.values()) == 1
    assert sleeps.calls == []


async def test_retry_after_seconds_is_honoured_exactly(
    retrying: tuple[CCEClient, Sleeps], example_job: dict[str, Any]
) -> None:
    """A 429 with Retry-After: 7 waits exactly 7 s before the next request."""
    client, sleeps = retrying
    with aioresponses() as mock:
        mock.get(URL, status=429, body="{}", headers={"Retry-After": "7"})
        mock.get(URL, payload=example_job)
        await client.show_job(PROJECT, EXAMPLE_JOB_ID)
    assert sleeps.calls[0] == 7.0
    assert sum(sleeps.calls[1:]) == pytest.approx(0.001)  # resuming at the steady rate


async def test_retry_after_date_is_honoured(
    retrying: tuple[CCEClient, Sleeps], example_job: dict[str, Any]
) -> None:
    """A 503 with Retry-After as an HTTP date waits until that moment."""
    client, sleeps = retrying
    sleeps.now = 1_700_000_000.0  # 2023-11-14 22:13:20 GMT
    with aioresponses() as mock:
        mock.get(URL, status=503, body="{}",
                 headers={"Retry-After": "Tue, 14 Nov 2023 22:13:32 GMT"})  # fmt: skip
        mock.get(URL, payload=example_job)
        await client.show_job(PROJECT, EXAMPLE_JOB_ID)
    assert sleeps.calls[0] == 12.0
    assert sum(sleeps.calls[1:]) == pytest.approx(0.001)


async def test_long_retry_after_ends_the_poll_but_holds_all_requests(
    retrying: tuple[CCEClient, Sleeps], example_job: dict[str, Any]
) -> None:
    """A Retry-After past the policy's limit fails the poll; no request goes before it."""
    client, sleeps = retrying
    with aioresponses() as mock:
        mock.get(URL, status=429, body="{}", headers={"Retry-After": "120"})
        mock.get(URL, payload=example_job)
        with pytest.raises(ApiError) as caught:
            await client.show_job(PROJECT, EXAMPLE_JOB_ID)
        assert caught.value.kind is ErrorKind.THROTTLED
        assert caught.value.retry_after == 120
        assert sleeps.calls == []
        await client.show_job(PROJECT, EXAMPLE_JOB_ID)
    assert sleeps.calls[0] == 120.0
    assert sum(sleeps.calls[1:]) == pytest.approx(0.001)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("5", 5.0),
        (" 0 ", 0.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("soon", None),
        ("²", None),
        ("99999999999999999999999", 1e23),
        ("-3", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    """Retry-After is read as seconds or as an HTTP date; nonsense is ignored."""
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(header, now) == expected


async def test_redirects_are_not_followed(client: CCEClient) -> None:
    """A 3xx is an invalid response: the token is never sent where a redirect points."""
    with aioresponses() as mock:
        mock.get(URL, status=302, headers={"Location": "http://elsewhere.example/steal"})
        with pytest.raises(ApiError) as caught:
            await client.show_job(PROJECT, EXAMPLE_JOB_ID)
        assert [str(url) for _, url in mock.requests] == [URL]
    assert caught.value.kind is ErrorKind.INVALID_RESPONSE
    assert caught.value.status == 302


async def test_a_request_aiohttp_refuses_to_send_fails_the_poll_as_connection(
    aiohttp_server: AiohttpServer, instruments: Instruments
) -> None:
    """A token with a line break fails its poll as `connection`, naming the error, not the token."""
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/v3/projects/{project}/jobs/{job}", answer)
    server = await aiohttp_server(app, host="127.0.0.1")
    store = JobStore()
    async with aiohttp.ClientSession() as session:
        client = CCEClient(
            session, str(server.make_url("")), TokenAuth(SecretStr("tok\nsecret-part")),
            instruments, timeout=5, retry=RetryPolicy(attempts=1),
        )  # fmt: skip
        with pytest.raises(ApiError) as caught:
            await client.show_job(PROJECT, EXAMPLE_JOB_ID)
        scheduler = Scheduler(
            client, store, instruments,
            PollSettings(PROJECT, poll_interval=30, poll_concurrency=4, finished_retention=60),
        )  # fmt: skip
        scheduler.watch([EXAMPLE_JOB_ID])
        await scheduler.poll_due(jitter=False)
    assert caught.value.kind is ErrorKind.CONNECTION
    assert "ValueError" in str(caught.value)
    assert "secret-part" not in str(caught.value)
    assert seen == []
    state = store.get(EXAMPLE_JOB_ID)
    assert state is not None
    assert state.last_error_kind is ErrorKind.CONNECTION
    assert state.errors[ERROR_KINDS.index(ErrorKind.CONNECTION)] == 1
    assert scheduler.ready
    unsent = instruments.registry.get_sample_value(
        "cce_exporter_api_requests_total",
        {"target": "default", "operation": "show_job", "code": "error"},
    )
    assert unsent == 2.0


class _Together:
    """A job endpoint that holds requests until `together` have arrived, then answers all."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.expect(200, together=1)

    def expect(self, status: int, *, together: int) -> None:
        """Answer `status` from now on, once `together` requests have arrived."""
        self.status = status
        self.together = together
        self.arrived = 0
        self._all_in = asyncio.Event()

    async def answer(self, request: web.Request) -> web.Response:
        """Wait for the others, then answer with the current status."""
        self.arrived += 1
        if self.arrived >= self.together:
            self._all_in.set()
        await self._all_in.wait()
        if self.status == 200:
            return web.json_response(self.job)
        return web.json_response({"error_code": "APIG.0308"}, status=self.status)


async def test_a_burst_of_throttled_answers_pauses_once(
    aiohttp_server: AiohttpServer, instruments: Instruments, example_job: dict[str, Any]
) -> None:
    """Sixteen polls in flight together, all answered 429, pause 1 s; later 429s double it."""
    endpoint = _Together(example_job)
    app = web.Application()
    app.router.add_get("/api/v3/projects/{project}/jobs/{job}", endpoint.answer)
    server = await aiohttp_server(app, host="127.0.0.1")
    sleeps = Sleeps()
    limiter = RateLimiter(100, clock=sleeps.clock, sleep=sleeps.sleep)
    async with aiohttp.ClientSession() as session:
        client = CCEClient(
            session, str(server.make_url("")), TokenAuth(SecretStr("t")), instruments,
            timeout=5, limiter=limiter, retry=RetryPolicy(attempts=1), sleep=sleeps.sleep,
        )  # fmt: skip
        await client.show_job(PROJECT, EXAMPLE_JOB_ID)  # the credentials work: no probing
        endpoint.expect(429, together=16)
        results = await asyncio.gather(
            *(client.show_job(PROJECT, EXAMPLE_JOB_ID) for _ in range(16)),
            return_exceptions=True,
        )
        assert endpoint.arrived == 16
        assert all(isinstance(r, ApiError) and r.kind is ErrorKind.THROTTLED for r in results)
        assert limiter.paused_for == 1.0
        pauses = []
        for _ in range(2):
            with pytest.raises(ApiError):
                await client.show_job(PROJECT, EXAMPLE_JOB_ID)
            pauses.append(limiter.paused_for)
    assert pauses == [2.0, 4.0]
