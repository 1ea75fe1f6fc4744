"""The IAM authenticator against a mocked IAM: what it makes of the answers it reads."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from aioresponses import aioresponses
from pydantic import SecretStr
from yarl import URL

from exporter.cce.auth.base import OutgoingRequest
from exporter.cce.auth.iam import IamAuth
from exporter.cce.transport import error_detail
from exporter.errors import ApiError, ErrorKind
from exporter.metrics.cce_exporter import Instruments

IAM = "https://iam.example.com"
TOKEN_URL = f"{IAM}/v3/auth/tokens?nocatalog=true"
NOW = 1_700_000_000.0
REQUEST = OutgoingRequest("GET", URL("https://cce.example.com/api/v3/projects/p/jobs/j"), {})


@pytest.fixture
async def iam(instruments: Instruments) -> AsyncIterator[IamAuth]:
    """An IAM authenticator over a real session, its clock standing at NOW."""
    async with aiohttp.ClientSession() as session:
        yield IamAuth(
            session,
            IAM,
            domain="example-domain",
            username="exporter",
            password=SecretStr("right-password"),
            project_id="proj",
            instruments=instruments,
            timeout=5,
            clock=lambda: NOW,
        )


async def test_lone_surrogates_in_an_iam_error_become_replacement_characters(
    iam: IamAuth,
) -> None:
    """An IAM error whose code and message hold lone surrogates is told with U+FFFD for them."""
    body = r'{"error": {"code": "APIG.\ud800", "message": "wrong \udc00 password"}}'
    assert error_detail(body.encode()) == "APIG.\ufffd: wrong \ufffd password"
    with aioresponses() as mock:
        mock.post(TOKEN_URL, status=401, body=body)
        with pytest.raises(ApiError) as caught:
            await iam.authenticate(REQUEST)
    assert caught.value.kind is ErrorKind.UNAUTHORIZED
    assert str(caught.value) == "unauthorized: HTTP 401: IAM: APIG.\ufffd: wrong \ufffd password"


def _token_answer(mock: aioresponses, **times: str) -> None:
    """Let IAM issue a token whose answer carries these times."""
    mock.post(
        TOKEN_URL, status=201, payload={"token": times}, headers={"X-Subject-Token": "MIItok"}
    )


async def test_a_zero_issued_at_reads_as_absent(iam: IamAuth) -> None:
    """Go's zero time as issued_at is absent: the token's life counts from now, not year 1."""
    with aioresponses() as mock:
        _token_answer(
            mock, issued_at="0001-01-01T00:00:00.000000Z", expires_at=_rfc3339(NOW + 3600)
        )
        assert await iam.authenticate(REQUEST) == {"X-Auth-Token": "MIItok"}
    token = iam.token
    assert token is not None
    assert (token.valid_until, token.renew_at) == (NOW + 3600, NOW + 2700)


async def test_a_zero_expires_at_is_no_expiry(iam: IamAuth) -> None:
    """Go's zero time as expires_at is a token answer without an expiry: an invalid response."""
    with aioresponses() as mock:
        _token_answer(mock, issued_at=_rfc3339(NOW), expires_at="0001-01-01T00:00:00Z")
        with pytest.raises(ApiError) as caught:
            await iam.authenticate(REQUEST)
    assert caught.value.kind is ErrorKind.INVALID_RESPONSE
    assert caught.value.detail == (
        "IAM: token answer without token.expires_at (absent or Go's zero time)"
    )


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


async def test_a_404_from_iam_is_an_invalid_response_not_a_vanished_job(iam: IamAuth) -> None:
    """A 404 from IAM (a wrong iam_endpoint) is invalid_response, which never ages a job out."""
    with aioresponses() as mock:
        mock.post(TOKEN_URL, status=404, body='{"error": {"code": "APIG.0101", "message": "nope"}}')
        with pytest.raises(ApiError) as caught:
            await iam.authenticate(REQUEST)
    assert caught.value.kind is ErrorKind.INVALID_RESPONSE
    assert str(caught.value) == "invalid_response: HTTP 404: IAM: APIG.0101: nope"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"error": {"code": "IAM.0001", "message": "bad"}}', "IAM.0001: bad"),
        (b'{"errorCode": "CCE.01", "errorMessage": "gone"}', "CCE.01: gone"),
        (b'{"password": "hunter2", "user": "x"}', "unexpected body with keys: password, user"),
        (b'["hunter2"]', "unexpected body: a JSON list"),
    ],
)
def test_error_bodies_are_read_alike_for_both_apis(body: bytes, detail: str) -> None:
    """IAM and CCE error bodies are read alike; an odd body is told by its shape only."""
    assert error_detail(body) == detail
