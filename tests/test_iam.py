import aiohttp
import pytest
from pydantic import SecretStr
from yarl import URL

from exporter.auth import OutgoingRequest
from exporter.errors import ApiError, ErrorKind
from exporter.iam import IamAuth
from exporter.instruments import Instruments
from tests.conftest import Clock

PROJECT_ID = "0123456789abcdef0123456789abcdef"
REQUEST = OutgoingRequest("GET", URL("https://cce.example/api"), {})


def _iam(
    session: aiohttp.ClientSession, url: str, instruments: Instruments, clock: Clock
) -> IamAuth:
    return IamAuth(
        session,
        url,
        domain="example-domain",
        username="exporter",
        password=SecretStr("password-secret"),
        project_id=PROJECT_ID,
        instruments=instruments,
        timeout=5,
        clock=clock,
    )


async def test_a_token_request_aiohttp_cannot_send_is_a_connection_error(
    instruments: Instruments,
) -> None:
    """A token request aiohttp refuses (a closed session) is an ApiError naming only the error."""
    session = aiohttp.ClientSession()
    await session.close()
    auth = _iam(session, "https://iam.example", instruments, Clock())
    with pytest.raises(ApiError) as caught:
        await auth.authenticate(REQUEST)
    assert caught.value.kind is ErrorKind.CONNECTION
    assert str(caught.value) == "connection: IAM: the request could not be sent (RuntimeError)"
