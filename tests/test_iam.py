"""The IAM authenticator against a mocked IAM: what it makes of the answers it reads."""

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aioresponses import aioresponses
from pydantic import SecretStr
from yarl import URL

from exporter.auth import OutgoingRequest
from exporter.errors import ApiError, ErrorKind
from exporter.iam import IamAuth, iam_error_detail
from exporter.instruments import Instruments

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
    assert iam_error_detail(body.encode()) == "APIG.\ufffd: wrong \ufffd password"
    with aioresponses() as mock:
        mock.post(TOKEN_URL, status=401, body=body)
        with pytest.raises(ApiError) as caught:
            await iam.authenticate(REQUEST)
    assert caught.value.kind is ErrorKind.UNAUTHORIZED
    assert str(caught.value) == "unauthorized: HTTP 401: IAM: APIG.\ufffd: wrong \ufffd password"
