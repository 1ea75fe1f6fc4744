import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer
from yarl import URL

from exporter.cce.auth.base import OutgoingRequest
from exporter.cce.auth.iam import IamAuth
from exporter.errors import ApiError, ErrorKind
from exporter.metrics.cce_exporter import Instruments
from tests.standins.cce import PROJECT_ID
from tests.standins.clocks import Clock
from tests.standins.iam import rfc3339

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


class Iam:
    """A stand-in IAM token endpoint on the test's clock: it issues tokens, or fails with 503."""

    def __init__(self, clock: Clock, token_life: float = 100.0) -> None:
        self.clock = clock
        self.token_life = token_life
        self.down = False
        self.requests = 0

    async def issue(self, request: web.Request) -> web.Response:
        """Answer one token request."""
        self.requests += 1
        if self.down:
            return web.json_response({"error": {"code": 503, "message": "down"}}, status=503)
        now = self.clock()
        body = {"token": {"issued_at": rfc3339(now), "expires_at": rfc3339(now + self.token_life)}}
        token = f"token-{self.requests}"
        return web.json_response(body, status=201, headers={"X-Subject-Token": token})


@pytest.fixture
async def iam(
    aiohttp_server: AiohttpServer, instruments: Instruments
) -> AsyncIterator[tuple[Iam, IamAuth]]:
    """The stand-in IAM on loopback, and an authenticator using it on the same fake clock."""
    clock = Clock()
    standin = Iam(clock)
    app = web.Application()
    app.router.add_post("/v3/auth/tokens", standin.issue)
    server = await aiohttp_server(app, host="127.0.0.1")
    async with aiohttp.ClientSession() as session:
        yield standin, _iam(session, str(server.make_url("")), instruments, clock)


async def _tokens(auth: IamAuth, callers: int) -> list[str | BaseException]:
    """Ask for the token header from `callers` tasks at once."""
    results = await asyncio.gather(
        *(auth.authenticate(REQUEST) for _ in range(callers)), return_exceptions=True
    )
    return [r if isinstance(r, BaseException) else r["X-Auth-Token"] for r in results]


async def test_a_failing_renewal_is_one_request_for_all_callers(
    iam: tuple[Iam, IamAuth], caplog: pytest.LogCaptureFixture
) -> None:
    """Eight callers in the renewal window while IAM fails: one request, all keep the old token."""
    standin, auth = iam
    assert await _tokens(auth, 1) == ["token-1"]
    standin.down = True
    standin.clock.now += 80  # past the renewal point (75 s), before expiry (100 s)
    assert await _tokens(auth, 8) == ["token-1"] * 8
    assert standin.requests == 2
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "iam_token_renewal_failed"
    ]
    # The next renewal waits a while (a quarter of the life left, here 5 s).
    standin.clock.now += 4.9
    assert await _tokens(auth, 8) == ["token-1"] * 8
    assert standin.requests == 2
    standin.clock.now += 0.1
    standin.down = False
    assert await _tokens(auth, 8) == ["token-3"] * 8
    assert standin.requests == 3


async def test_callers_without_a_token_share_one_failed_request(iam: tuple[Iam, IamAuth]) -> None:
    """With no token and IAM failing, concurrent callers get the one request's failure at once."""
    standin, auth = iam
    standin.down = True
    results = await _tokens(auth, 8)
    assert standin.requests == 1
    assert all(isinstance(r, ApiError) and r.kind is ErrorKind.SERVER_ERROR for r in results)
    standin.down = False
    assert await _tokens(auth, 8) == ["token-2"] * 8
