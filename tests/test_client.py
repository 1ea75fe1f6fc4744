import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yarl
from aioresponses import aioresponses
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import SecretStr

from exporter.auth import TokenAuth
from exporter.client import MAX_BODY_BYTES, CCEClient
from exporter.errors import ApiError, ErrorKind
from exporter.instruments import Instruments
from tests.conftest import EXAMPLE_JOB_ID

ENDPOINT = "https://cce.cn-north-4.myhuaweicloud.com"
PROJECT = "0123456789abcdef0123456789abcdef"
URL = f"{ENDPOINT}/api/v3/projects/{PROJECT}/jobs/{EXAMPLE_JOB_ID}"


@pytest.fixture
async def client(instruments: Instruments) -> AsyncIterator[CCEClient]:
    """A client with a static token, over a real aiohttp session."""
    async with aiohttp.ClientSession() as session:
        yield CCEClient(session, ENDPOINT, TokenAuth(SecretStr("tok-123")), instruments, timeout=5)


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
            "cce_exporter_api_requests_total", {"operation": "show_job", "code": "200"}
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
            "cce_exporter_api_requests_total", {"operation": "show_job", "code": "error"}
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
