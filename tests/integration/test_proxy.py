"""HTTPS_PROXY, HTTP_PROXY and NO_PROXY, with a real forward proxy on loopback.

The stand-in APIs answer as `cce.test` and `iam.test`: names no DNS knows.
The proxy reaches them (as a corporate proxy resolves names its clients
cannot), and so does the client's own resolver where a test gives it one: a
request reaches the stand-in through the proxy or directly, and the proxy's
record tells which.
"""

import base64
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from exporter.app import exporter
from exporter.cce.auth.base import TokenAuth
from exporter.cce.auth.iam import IamAuth
from exporter.cce.client import CCEClient, RetryPolicy
from exporter.errors import ApiError, ErrorKind
from exporter.metrics.cce_exporter import Instruments
from exporter.settings.load import load_settings
from tests.standins.cce import PROJECT_ID, TOKEN, FakeCCE
from tests.standins.iam import StandIn
from tests.standins.proxy import ForwardProxy, Passed, StaticResolver

HOSTS = {"cce.test": "127.0.0.1", "iam.test": "127.0.0.1"}
DOMAIN, USER, PASSWORD = "acme", "poller", "iam-secret-password"
PROXY_USER, PROXY_PASSWORD = "proxy-user", "pr0xy-s3cret"


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardProxy]:
    """A running forward proxy that knows the stand-ins' names."""
    forward = ForwardProxy(hosts=dict(HOSTS))
    await forward.start()
    yield forward
    await forward.close()


@pytest.fixture
def cce() -> FakeCCE:
    """A stand-in project with two running jobs."""
    api = FakeCCE()
    api.add_job("job-a")
    api.add_job("job-b")
    return api


@pytest.fixture
async def server(cce: FakeCCE, aiohttp_server: AiohttpServer) -> TestServer:
    """The stand-in CCE API over plain HTTP."""
    served: TestServer = await aiohttp_server(cce.app())
    return served


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A session whose own resolver knows the stand-ins' names too."""
    connector = aiohttp.TCPConnector(resolver=StaticResolver(dict(HOSTS)))
    async with aiohttp.ClientSession(connector=connector) as opened:
        yield opened


@dataclass(frozen=True)
class Plain:
    """The plain-HTTP stand-in at cce.test: its port, and a session to reach it with."""

    session: aiohttp.ClientSession
    port: int

    def client(self) -> CCEClient:
        """A client that tries each request once; made after the test sets the environment."""
        return CCEClient(
            self.session,
            f"http://cce.test:{self.port}",
            TokenAuth(SecretStr(TOKEN)),
            Instruments(),
            timeout=10,
            retry=RetryPolicy(attempts=1),
        )


@pytest.fixture
def plain(server: TestServer, session: aiohttp.ClientSession) -> Plain:
    """The stand-in's port and the session."""
    return Plain(session, server.port)


def _dead_port() -> int:
    """A port of 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy"])
async def test_with_http_proxy_set_the_requests_go_through_the_proxy(
    variable: str,
    proxy: ForwardProxy,
    cce: FakeCCE,
    plain: Plain,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP_PROXY, in either case: every job read passes through the proxy, in absolute form."""
    monkeypatch.setenv(variable, proxy.url())
    client = plain.client()
    for job_id in ("job-a", "job-b", "job-a"):
        await client.show_job(PROJECT_ID, job_id)
    base = f"http://cce.test:{plain.port}/api/v3/projects/{PROJECT_ID}/jobs"
    assert proxy.passed == [
        Passed("GET", f"{base}/job-a", None),
        Passed("GET", f"{base}/job-b", None),
        Passed("GET", f"{base}/job-a", None),
    ]
    assert cce.requests == {"job-a": 2, "job-b": 1}


async def test_iam_requests_go_through_the_proxy_with_its_credentials(
    proxy: ForwardProxy, aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The IAM token request and the job read both pass the proxy, which gets its credentials."""
    api = StandIn(users={(DOMAIN, USER): PASSWORD})
    server = await aiohttp_server(api.app())
    monkeypatch.setenv("HTTP_PROXY", proxy.url(f"{PROXY_USER}:{PROXY_PASSWORD}"))
    instruments = Instruments()
    async with aiohttp.ClientSession() as session:
        auth = IamAuth(
            session,
            f"http://iam.test:{server.port}",
            domain=DOMAIN,
            username=USER,
            password=SecretStr(PASSWORD),
            project_id=PROJECT_ID,
            instruments=instruments,
            timeout=10,
        )
        client = CCEClient(session, f"http://cce.test:{server.port}", auth, instruments, timeout=10)
        await client.show_job(PROJECT_ID, "job-1")
    basic = "Basic " + base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
    assert proxy.passed == [
        Passed("POST", f"http://iam.test:{server.port}/v3/auth/tokens?nocatalog=true", basic),
        Passed(
            "GET", f"http://cce.test:{server.port}/api/v3/projects/{PROJECT_ID}/jobs/job-1", basic
        ),
    ]
    assert (api.seen["iam_token"], api.seen["show_job"]) == (1, 1)


@pytest.mark.parametrize(
    "no_proxy",
    [
        ("NO_PROXY", "cce.test"),
        ("no_proxy", ".test"),
        ("NO_PROXY", "example.com, *.test"),
        ("NO_PROXY", "*"),
        ("NO_PROXY", "cce.test:{port}"),
    ],
)
async def test_no_proxy_covering_the_host_goes_directly(
    no_proxy: tuple[str, str],
    proxy: ForwardProxy,
    cce: FakeCCE,
    plain: Plain,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A host NO_PROXY covers (by name, domain, wildcard, or name and port) skips the proxy."""
    name, value = no_proxy
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    monkeypatch.setenv(name, value.format(port=plain.port))
    await plain.client().show_job(PROJECT_ID, "job-a")
    assert proxy.passed == []
    assert cce.requests == {"job-a": 1}


async def test_no_proxy_for_another_port_or_host_still_proxies(
    proxy: ForwardProxy,
    cce: FakeCCE,
    plain: Plain,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NO_PROXY entries not covering the host (another port, a look-alike name) change nothing."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    monkeypatch.setenv("NO_PROXY", f"cce.test:{plain.port + 1},xcce.test,10.0.0.0/8")
    await plain.client().show_job(PROJECT_ID, "job-a")
    assert [passed.method for passed in proxy.passed] == ["GET"]
    assert cce.requests == {"job-a": 1}


async def test_a_dead_proxy_is_a_connection_error_that_hides_its_credentials(
    cce: FakeCCE,
    plain: Plain,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A proxy nothing listens on: `connection`, naming the proxy but never its password."""
    port = _dead_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}")
    with pytest.raises(ApiError) as caught:
        await plain.client().show_job(PROJECT_ID, "job-a")
    assert caught.value.kind is ErrorKind.CONNECTION
    assert str(caught.value).startswith(
        f"connection: cannot reach the proxy http://127.0.0.1:{port}: "
    )
    assert PROXY_PASSWORD not in str(caught.value)
    assert PROXY_PASSWORD not in caplog.text
    assert cce.requests.total() == 0


async def test_a_proxy_asking_for_credentials_is_a_connection_error(
    proxy: ForwardProxy,
    cce: FakeCCE,
    plain: Plain,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A proxy's own 407 to a plain-HTTP request is `connection`, not an answer of the API."""
    proxy.refuse = 407
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    with pytest.raises(ApiError) as caught:
        await plain.client().show_job(PROJECT_ID, "job-a")
    assert caught.value.kind is ErrorKind.CONNECTION
    assert "refused the request: HTTP 407" in str(caught.value)
    assert cce.requests.total() == 0


# Over HTTPS: a CONNECT tunnel, the exporter built as the service builds it.


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A CA that signs the stand-in's certificate for cce.test."""
    return trustme.CA()


@pytest.fixture
async def tls_standin(
    ca: trustme.CA, tmp_path: Path, aiohttp_server: AiohttpServer
) -> tuple[StandIn, int, Path]:
    """The CCE and IAM stand-in over HTTPS as cce.test: it, its port, and the CA's file."""
    api = StandIn(users={(DOMAIN, USER): PASSWORD})
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("cce.test").configure_cert(context)
    server = await aiohttp_server(api.app(), ssl=context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return api, server.port, ca_file


def _service_flags(port: int, ca_file: Path) -> dict[str, Any]:
    """Settings polling job-1 at https://cce.test with IAM authentication, trusting the CA."""
    url = f"https://cce.test:{port}"
    return {
        "endpoint": url,
        "project_id": PROJECT_ID,
        "job_ids": "job-1",
        "ca_bundle": str(ca_file),
        "iam_endpoint": url,
        "iam_domain": DOMAIN,
        "iam_username": USER,
        "iam_password": PASSWORD,
    }


async def test_https_requests_tunnel_through_the_proxy(
    tls_standin: tuple[StandIn, int, Path],
    proxy: ForwardProxy,
    clean_env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With HTTPS_PROXY, IAM and CCE are reached through CONNECT tunnels with the credentials."""
    api, port, ca_file = tls_standin
    caplog.set_level(logging.INFO)
    clean_env.setenv("HTTPS_PROXY", proxy.url(f"{PROXY_USER}:{PROXY_PASSWORD}"))
    async with exporter(load_settings(_service_flags(port, ca_file))) as ex:
        await ex.scheduler.poll_due(jitter=False)
        state = ex.store.get("job-1")
    assert state is not None
    assert state.last_ok, state.last_error
    assert (api.seen["iam_token"], api.seen["show_job"]) == (1, 1)
    basic = "Basic " + base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
    assert proxy.passed
    assert set(proxy.passed) == {Passed("CONNECT", f"cce.test:{port}", basic)}
    [line] = [r for r in caplog.records if r.getMessage() == "proxies"]
    assert getattr(line, "fields", {}) == {"https_proxy": proxy.url()}
    assert PROXY_PASSWORD not in caplog.text


async def test_a_proxy_refusing_the_tunnel_is_a_connection_error(
    tls_standin: tuple[StandIn, int, Path], proxy: ForwardProxy, clean_env: pytest.MonkeyPatch
) -> None:
    """A proxy answering CONNECT with 403 fails the poll as `connection`; no request reaches CCE."""
    api, port, ca_file = tls_standin
    proxy.refuse = 403
    clean_env.setenv("HTTPS_PROXY", proxy.url())
    flags = _service_flags(port, ca_file)
    del flags["iam_endpoint"], flags["iam_domain"], flags["iam_username"], flags["iam_password"]
    api.tokens["static"] = float("inf")
    async with exporter(load_settings(flags | {"auth_token": "static"})) as ex:
        await ex.scheduler.poll_due(jitter=False)
        state = ex.store.get("job-1")
    assert state is not None
    assert state.last_error_kind is ErrorKind.CONNECTION
    assert state.last_error is not None
    assert f"the proxy {proxy.url()} refused the tunnel: HTTP 403" in state.last_error
    assert api.seen["show_job"] == 0
    assert [passed.method for passed in proxy.passed] == ["CONNECT"] * len(proxy.passed)
