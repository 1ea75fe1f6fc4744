import asyncio
import base64
import logging
import ssl
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import trustme
from aiohttp import web

from exporter.cli import main
from exporter.jobs.state import JobStore
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.exposition import Renderer
from exporter.server.endpoints import WebContext, create_app
from exporter.server.webconfig.basic_auth import WAITING_CHECKS, BasicAuth, basic_auth_middleware
from exporter.server.webconfig.format import WebConfigError, load_web_config
from exporter.server.webconfig.live import LiveWebConfig, secure

PASSWORD = "scrape-password"
# Cost 4 keeps the tests quick; the server accepts any cost.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> Path:
    """The server's certificate and key, and the CA for client certificates, in tmp_path."""
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "clients-ca.crt"))
    return tmp_path


def _write(path: Path, text: str) -> Path:
    config = path / "web.yml"
    config.write_text(text)
    return config


async def _serve(config: Path) -> tuple[web.AppRunner, int]:
    instruments = Instruments()
    app = create_app(WebContext(JobStore(), Renderer(instruments.registry), lambda: True))
    context = secure(app, LiveWebConfig(config))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return runner, runner.addresses[0][1]


@pytest.fixture
async def server(tls_files: Path) -> AsyncIterator[int]:
    """An HTTPS server with basic auth, on an ephemeral loopback port."""
    config = _write(
        tls_files,
        f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        f"basic_auth_users:\n  prometheus: {HASH}\n",
    )
    runner, port = await _serve(config)
    yield port
    await runner.cleanup()


def _client_context(ca: trustme.CA, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    return context


@pytest.mark.parametrize("path", ["/metrics", "/", "/healthz", "/readyz"])
@pytest.mark.parametrize(
    ("auth", "status"),
    [
        (None, 401),
        (("prometheus", "wrong"), 401),
        (("nobody", PASSWORD), 401),
        (("prometheus", PASSWORD), 200),
        (("prometheus", PASSWORD + "x"), 401),
    ],
)
async def test_every_endpoint_needs_the_right_credentials_over_tls(
    server: int, ca: trustme.CA, path: str, auth: tuple[str, str] | None, status: int
) -> None:
    """Over HTTPS, every endpoint answers 401 without or with wrong credentials, 200 with them."""
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"https://127.0.0.1:{server}{path}", headers=headers, ssl=_client_context(ca)
        ) as response,
    ):
        assert response.status == status
        if status == 401:
            assert response.headers["WWW-Authenticate"].startswith("Basic ")


async def test_plain_http_to_the_tls_port_fails(server: int) -> None:
    """The server does not answer plain HTTP."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{server}/metrics"):
                pass


def test_tls_1_2_is_the_oldest_version_served(tls_files: Path) -> None:
    """Without min_version the server still refuses anything older than TLS 1.2."""
    config = load_web_config(
        _write(tls_files, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    )
    assert config.ssl_context is not None
    assert config.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_2


async def test_a_tls_1_2_client_is_served(server: int, ca: trustme.CA) -> None:
    """A client limited to TLS 1.2 completes the handshake (and meets basic auth)."""
    context = _client_context(ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"https://127.0.0.1:{server}/healthz", ssl=context) as response,
    ):
        assert response.status == 401


async def test_mutual_tls_requires_a_client_certificate(tls_files: Path, ca: trustme.CA) -> None:
    """With RequireAndVerifyClientCert, a client without a certificate from the CA is refused."""
    config = _write(
        tls_files,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients-ca.crt\n",
    )
    runner, port = await _serve(config)
    url = f"https://127.0.0.1:{port}/metrics"
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.get(url, ssl=_client_context(ca)) as response:
                    await response.read()
            stranger = trustme.CA().issue_cert("prometheus@example.com")
            with pytest.raises(aiohttp.ClientError):
                async with session.get(url, ssl=_client_context(ca, stranger)) as response:
                    await response.read()
            client = ca.issue_cert("prometheus@example.com")
            async with session.get(url, ssl=_client_context(ca, client)) as response:
                assert response.status == 200
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config:\n  cert_file: server.crt\n", "needs both cert_file and key_file"),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: missing.key\n",
            "missing.key is not a readable file",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  min_version: TLS11\n",
            "TLS11 is refused; TLS 1.2 is the oldest allowed",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "needs client_ca_file",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_auth_type: RequireAnyClientCert\n",
            "is not supported",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_allowed_sans: [a]\n",
            "client_allowed_sans: not supported",
        ),
        (
            "tls_server_config:\n  cert_file: server.key\n  key_file: server.crt\n",
            "cannot load the certificate",
        ),
        ("basic_auth_users:\n  prometheus: secret\n", "is not a bcrypt hash"),
        ("basic_auth_users: [a]\n", "must be a mapping"),
        ("http_server_config:\n  headers: {}\n", "http_server_config.headers: not supported"),
        ("tls_config: {}\n", "tls_config: unknown option"),
        ("a: [\n", "is not valid YAML"),
    ],
)
def test_bad_web_configs_say_what_is_wrong(tls_files: Path, text: str, message: str) -> None:
    """Every unusable web config is refused with a message naming the option."""
    with pytest.raises(WebConfigError) as caught:
        load_web_config(_write(tls_files, text))
    assert message in str(caught.value)
    assert "secret" not in str(caught.value).replace("secret_", "")


TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            TLS + "  min_version: [TLS12]\n",
            "tls_server_config.min_version must be a string, not a list",
        ),
        (
            TLS + "  max_version: 13\n",
            "tls_server_config.max_version must be a string, not a number",
        ),
        (
            TLS + "  client_auth_type: {a: b}\n",
            "tls_server_config.client_auth_type must be a string, not a mapping",
        ),
        (TLS + "  client_ca_file: [a]\n", "tls_server_config.client_ca_file must be a string"),
        ("tls_server_config:\n  cert_file: true\n", "cert_file must be a string, not true/false"),
        (TLS + "  prefer_server_cipher_suites: yes please\n", "must be true or false"),
        ("tls_server_config: [a]\n", "tls_server_config must be a mapping, not a list"),
        ("tls_server_config:\n  1: a\n", "tls_server_config: the key 1 is not a string"),
        ("http_server_config: on\n", "http_server_config must be a mapping, not true/false"),
        ("http_server_config:\n  http2: [x]\n", "http2 must be true or false, not a list"),
        ("basic_auth_users: prometheus\n", "basic_auth_users must be a mapping, not a string"),
        ("basic_auth_users:\n  prometheus: [a]\n", "basic_auth_users.prometheus must be a string"),
        ("basic_auth_users:\n  prometheus: {a: b}\n", "(a bcrypt hash), not a mapping"),
        ("basic_auth_users:\n  7: x\n", "basic_auth_users: the key 7 is not a string"),
        ("- a\n", "web.yml must be a mapping, not a list"),
        ("null: 1\n", "the key None is not a string"),
    ],
)
def test_values_of_the_wrong_type_say_what_is_wrong(
    tls_files: Path, text: str, message: str
) -> None:
    """Each option of the wrong type is refused with a message naming it, not a TypeError."""
    with pytest.raises(WebConfigError) as caught:
        load_web_config(_write(tls_files, text))
    assert message in str(caught.value)


def test_check_config_reports_a_wrongly_typed_value_in_one_line(
    clean_env: pytest.MonkeyPatch, tls_files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--check-config on a list for min_version prints one configuration error and exits 2."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    config = _write(tls_files, TLS + "  min_version: [TLS12]\n")
    flags = ["--project-id", "p", "--endpoint", "http://127.0.0.1:1"]
    status = main(["--check-config", *flags, "--web-config-file", str(config)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.splitlines() == [
        "cce-job-exporter: configuration error: web_config_file (flag --web-config-file): "
        "tls_server_config.min_version must be a string, not a list"
    ]


def test_web_config_accepts_the_toolkit_forms(tls_files: Path) -> None:
    """$2y$ hashes, VerifyClientCertIfGiven and http2 from an existing file are accepted."""
    hashed = "$2y$" + HASH[4:]
    config = load_web_config(
        _write(
            tls_files,
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: clients-ca.crt\n"
            f"  min_version: TLS13\nhttp_server_config:\n  http2: true\n"
            f"basic_auth_users:\n  prometheus: '{hashed}'\n",
        )
    )
    assert config.ssl_context is not None
    assert config.ssl_context.verify_mode == ssl.CERT_OPTIONAL
    assert config.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert hashed not in repr(config)


def test_yaml_errors_name_the_place_not_the_content(tmp_path: Path) -> None:
    """A YAML syntax error says where it is, without quoting the file (hashes and all)."""
    config = _write(tmp_path, f"basic_auth_users:\n  prometheus: {HASH}\n  bad: [\n")
    with pytest.raises(WebConfigError) as caught:
        load_web_config(config)
    message = str(caught.value)
    assert "is not valid YAML at line" in message
    assert HASH[7:20] not in message
    assert "\n" not in message


async def test_unknown_users_cost_as_much_as_known_ones(tmp_path: Path) -> None:
    """Unknown users cost the costliest hash's check, and are refused even with its password."""
    costly = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=6)).decode()
    auth = BasicAuth({"a": HASH.encode(), "b": costly.encode()})
    assert auth._dummy is not None
    assert auth._dummy[4:6] == b"06"
    assert not await auth.check(_basic("nobody", "pw"))
    assert await auth.check(_basic("b", "pw"))


class HeldChecks:
    """Stands in for bcrypt.checkpw: each check waits until released, and is counted."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.calls: list[bytes] = []

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        """Wait for the release, then check for real."""
        self.calls.append(password)
        self.released.wait()
        return bcrypt.checkpw(password, hashed)


async def _ok(request: web.Request) -> web.Response:
    """A handler that answers 200."""
    return web.Response(text="ok")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_checks_beyond_the_queue_are_refused_at_once(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """With both bcrypt slots held and the queue full, more requests get 401 without a check."""
    held = HeldChecks()
    auth = BasicAuth({"prometheus": HASH.encode()}, checkpw=held)
    held.released.set()
    assert await auth.check(_basic("prometheus", PASSWORD))  # remembered from now on
    held.released.clear()
    app = web.Application(middlewares=[basic_auth_middleware(auth)])
    app.router.add_get("/metrics", _ok)
    client = await aiohttp_client(app)
    queued = [
        asyncio.create_task(auth.verdict(_basic("prometheus", f"wrong-{n}")))
        for n in range(2 + WAITING_CHECKS)
    ]
    try:
        await asyncio.sleep(0)  # each task takes a slot or its place in the queue
        assert not any(task.done() for task in queued)
        # A timeout only so that a regression fails instead of hanging the run.
        async with asyncio.timeout(30):
            assert await auth.verdict(_basic("prometheus", "one-more")) == "busy"
            with caplog.at_level(logging.DEBUG, logger="exporter"):
                refused = await client.get(
                    "/metrics", headers={"Authorization": _basic("prometheus", "flood")}
                )
                served = await client.get(
                    "/metrics", headers={"Authorization": _basic("prometheus", PASSWORD)}
                )
        assert refused.status == 401
        assert served.status == 200
        [record] = [r for r in caplog.records if r.getMessage() == "basic_auth_refused"]
        assert record.fields["reason"] == "busy"  # type: ignore[attr-defined]
    finally:
        held.released.set()
        verdicts = await asyncio.gather(*queued)
    assert verdicts == ["refused"] * (2 + WAITING_CHECKS)
    # The right password once, then the queued ones: the refused extras never reached bcrypt.
    assert len(held.calls) == 1 + 2 + WAITING_CHECKS
    assert b"one-more" not in held.calls
    assert b"flood" not in held.calls


async def test_replacing_users_forgets_passwords_of_changed_and_removed_users_only() -> None:
    """After new users, a remembered password of an unchanged hash needs no check; others do."""
    held = HeldChecks()
    held.released.set()
    kept = bcrypt.hashpw(b"kept-pw", bcrypt.gensalt(rounds=4))
    changed = bcrypt.hashpw(b"old-pw", bcrypt.gensalt(rounds=4))
    auth = BasicAuth({"kept": kept, "changed": changed, "gone": HASH.encode()}, checkpw=held)
    for user, password in (("kept", "kept-pw"), ("changed", "old-pw"), ("gone", PASSWORD)):
        assert await auth.check(_basic(user, password))
    auth.replace({"kept": kept, "changed": bcrypt.hashpw(b"new-pw", bcrypt.gensalt(rounds=4))})
    held.calls.clear()
    assert await auth.check(_basic("kept", "kept-pw"))
    assert held.calls == []  # still remembered
    assert not await auth.check(_basic("changed", "old-pw"))
    assert await auth.check(_basic("changed", "new-pw"))
    assert not await auth.check(_basic("gone", PASSWORD))
    assert held.calls == [b"old-pw", b"new-pw", PASSWORD.encode()]


async def test_a_check_that_outlasts_its_users_removal_lets_nobody_in() -> None:
    """A right password whose user was removed while bcrypt ran is refused."""
    held = HeldChecks()
    auth = BasicAuth({"prometheus": HASH.encode()}, checkpw=held)
    checking = asyncio.create_task(auth.check(_basic("prometheus", PASSWORD)))
    await asyncio.sleep(0)  # the check takes its slot and waits for bcrypt
    auth.replace({"grafana": HASH.encode()})
    held.released.set()
    assert not await checking
    assert held.calls == [PASSWORD.encode()]  # bcrypt found it right, for the old users


async def test_without_users_every_request_is_served(tmp_path: Path, aiohttp_client: Any) -> None:
    """A web config without basic_auth_users asks for no credentials."""
    app = web.Application()
    app.router.add_get("/metrics", _ok)
    secure(app, LiveWebConfig(_write(tmp_path, "http_server_config:\n  http2: true\n")))
    client = await aiohttp_client(app)
    response = await client.get("/metrics")
    assert response.status == 200
