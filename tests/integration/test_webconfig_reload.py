"""The web config re-read while serving: real HTTPS (trustme), real basic auth, explicit checks."""

import asyncio
import base64
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import trustme
from aiohttp import web

from exporter.jobs.state import JobStore
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.exposition import Renderer
from exporter.server.endpoints import WebContext, create_app
from exporter.server.webconfig.live import CHECK_SECONDS, LiveWebConfig, secure

# Cost 4 keeps the tests quick; the server accepts any cost.
PROMETHEUS = bcrypt.hashpw(b"prometheus-pw", bcrypt.gensalt(rounds=4)).decode()
GRAFANA = bcrypt.hashpw(b"grafana-pw", bcrypt.gensalt(rounds=4)).decode()
TLS = "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
MTLS = TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients-ca.crt\n"


def _users(**hashes: str) -> str:
    return "basic_auth_users:\n" + "".join(f"  {user}: '{h}'\n" for user, h in hashes.items())


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A throwaway certificate authority for the server's certificates."""
    return trustme.CA()


def _put(path: Path, data: str | bytes) -> None:
    """Replace a file at once, as most tools that write certificates do (a new inode)."""
    new = path.with_name(path.name + ".new")
    new.write_bytes(data.encode() if isinstance(data, str) else data)
    new.replace(path)


def _put_cert(directory: Path, leaf: trustme.LeafCert) -> None:
    _put(directory / "tls.crt", leaf.cert_chain_pems[0].bytes())
    _put(directory / "tls.key", leaf.private_key_pem.bytes())


def _der(leaf: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


@contextlib.asynccontextmanager
async def _serving(config: Path) -> AsyncIterator[tuple[int, LiveWebConfig]]:
    """Serve the exporter's routes under the web config, on an ephemeral loopback port."""
    live = LiveWebConfig(config)
    app = create_app(WebContext(JobStore(), Renderer(Instruments().registry), lambda: True))
    context = secure(app, live)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    try:
        yield runner.addresses[0][1], live
    finally:
        await runner.cleanup()


def _client_context(
    ca: trustme.CA, cert: trustme.LeafCert | None = None, *, tls12: bool = False
) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


async def _served_cert(port: int, ca: trustme.CA) -> bytes:
    """Make a new TLS connection and return the certificate the server shows."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=_client_context(ca))
    der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()
    return der


async def _status(port: int, context: ssl.SSLContext, user: str = "", password: str = "") -> int:
    """GET /metrics over a new HTTPS connection, with these credentials if any."""
    headers = {}
    if user:
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        )
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"https://127.0.0.1:{port}/metrics", headers=headers, ssl=context) as response,
    ):
        return response.status


async def _settle(live: LiveWebConfig) -> bool:
    """Check twice: the first check notes the change, the second acts on it."""
    assert not await live.check()
    return await live.check()


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage() == name]


class SecretVolume:
    """A directory laid out as Kubernetes mounts a Secret: files behind a `..data` link."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.version = 0

    def write(self, files: dict[str, bytes]) -> None:
        """Write a new version of every file, then swap the `..data` link to it at once."""
        self.version += 1
        target = self.root / f"..v{self.version}"
        target.mkdir()
        for name, data in files.items():
            (target / name).write_bytes(data)
        swap = self.root / "..data_tmp"
        swap.symlink_to(target.name)
        swap.replace(self.root / "..data")
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(Path("..data") / name)


async def test_a_rotated_certificate_is_served_after_a_reload(
    ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A certificate rotated in a Secret volume (a link swap) is served on new connections."""
    old, new = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    volume = SecretVolume(tmp_path)
    config = (TLS + _users(prometheus=PROMETHEUS)).encode()

    def files(leaf: trustme.LeafCert) -> dict[str, bytes]:
        key = leaf.private_key_pem.bytes()
        return {"web.yml": config, "tls.crt": leaf.cert_chain_pems[0].bytes(), "tls.key": key}

    volume.write(files(old))
    async with _serving(tmp_path / "web.yml") as (port, live):
        server_context = live.ssl_context
        assert await _served_cert(port, ca) == _der(old)
        volume.write(files(new))
        with caplog.at_level(logging.INFO, logger="exporter"):
            assert not await live.check()
            assert await _served_cert(port, ca) == _der(old)  # noted, not yet acted on
            assert await live.check()
        assert live.ssl_context is server_context
        assert await _served_cert(port, ca) == _der(new)
        assert await _status(port, _client_context(ca), "prometheus", "prometheus-pw") == 200
        [record] = _events(caplog, "web_config_reloaded")
        assert record.fields == {  # type: ignore[attr-defined]
            "path": str(tmp_path / "web.yml"),
            "tls": True,
            "client_auth": "NoClientCert",
            "basic_auth_users": 1,
        }
        assert not await live.check()  # nothing changed since


async def test_removed_users_are_refused_and_added_users_let_in_after_a_reload(
    ca: trustme.CA, tmp_path: Path
) -> None:
    """After a reload a removed user is refused, though remembered, and an added one let in."""
    _put_cert(tmp_path, ca.issue_cert("127.0.0.1"))
    config = tmp_path / "web.yml"
    _put(config, TLS + _users(prometheus=PROMETHEUS))
    client = _client_context(ca)
    async with _serving(config) as (port, live):
        assert await _status(port, client, "prometheus", "prometheus-pw") == 200
        assert await _status(port, client, "grafana", "grafana-pw") == 401
        _put(config, TLS + _users(grafana=GRAFANA))
        assert await _settle(live)
        assert await _status(port, client, "prometheus", "prometheus-pw") == 401
        assert await _status(port, client, "grafana", "grafana-pw") == 200


BROKEN = [
    pytest.param("basic_auth_users: [\n", "is not valid YAML at line", id="bad-yaml"),
    pytest.param(
        "tls_server_config:\n  cert_file: tls.crt\n  key_file: missing.key\n",
        "missing.key is not a readable file",
        id="missing-file",
    ),
    pytest.param(
        TLS + _users(grafana=GRAFANA[:-1]), "grafana: the value is not a bcrypt hash", id="bad-hash"
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: tls.crt\n  key_file: other.key\n",
        "cannot load the certificate, key or client CA",
        id="key-of-another-certificate",
    ),
    pytest.param(
        _users(grafana=GRAFANA), "tls_server_config: turning TLS off takes a restart", id="tls-off"
    ),
]


@pytest.mark.parametrize(("text", "problem"), BROKEN)
async def test_an_unusable_new_config_is_logged_once_and_the_old_one_stays(
    ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str, problem: str
) -> None:
    """A new config that cannot be used is one warning; the old certificate and users serve on."""
    leaf = ca.issue_cert("127.0.0.1")
    _put_cert(tmp_path, leaf)
    ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(tmp_path / "other.key"))
    config = tmp_path / "web.yml"
    _put(config, TLS + _users(prometheus=PROMETHEUS))
    client = _client_context(ca)
    async with _serving(config) as (port, live):
        _put(config, text)
        with caplog.at_level(logging.INFO, logger="exporter"):
            assert not await _settle(live)
            assert not await live.check()
        [record] = _events(caplog, "web_config_reload_failed")
        assert record.levelno == logging.WARNING
        assert problem in record.fields["problem"]  # type: ignore[attr-defined]
        assert not _events(caplog, "web_config_reloaded")
        assert GRAFANA[7:29] not in caplog.text
        assert await _served_cert(port, ca) == _der(leaf)
        assert await _status(port, client, "prometheus", "prometheus-pw") == 200
        assert await _status(port, client, "grafana", "grafana-pw") == 401
        # Mended, it is taken.
        _put(config, TLS + _users(grafana=GRAFANA))
        assert await _settle(live)
        assert await _status(port, client, "grafana", "grafana-pw") == 200


async def test_turning_tls_on_takes_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, ca: trustme.CA
) -> None:
    """With TLS added to the file, a plain-HTTP server keeps serving plain HTTP to its users."""
    _put_cert(tmp_path, ca.issue_cert("127.0.0.1"))
    config = tmp_path / "web.yml"
    _put(config, _users(prometheus=PROMETHEUS))
    async with _serving(config) as (port, live):
        _put(config, TLS + _users(grafana=GRAFANA))
        with caplog.at_level(logging.WARNING, logger="exporter"):
            assert not await _settle(live)
        [record] = _events(caplog, "web_config_reload_failed")
        assert record.fields["problem"] == "tls_server_config: turning TLS on takes a restart"  # type: ignore[attr-defined]
        assert live.ssl_context is None
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{port}/metrics",
                auth=aiohttp.BasicAuth("prometheus", "prometheus-pw"),
            ) as response,
        ):
            assert response.status == 200


async def test_a_certificate_written_before_its_key_is_not_taken_alone(
    ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A check between the new certificate and its key waits: no failure, then the pair."""
    _put_cert(tmp_path, ca.issue_cert("127.0.0.1"))
    config = tmp_path / "web.yml"
    _put(config, TLS)
    new = ca.issue_cert("127.0.0.1")
    async with _serving(config) as (port, live):
        with caplog.at_level(logging.INFO, logger="exporter"):
            _put(tmp_path / "tls.crt", new.cert_chain_pems[0].bytes())
            assert not await live.check()
            _put(tmp_path / "tls.key", new.private_key_pem.bytes())
            assert not await live.check()
            assert await live.check()
        assert not _events(caplog, "web_config_reload_failed")
        assert await _served_cert(port, ca) == _der(new)


async def test_a_new_client_ca_is_trusted_after_a_reload_and_the_old_one_reported(
    ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Clients of a new client CA get in after a reload; a removed CA is reported still trusted."""
    old_clients, new_clients = trustme.CA(), trustme.CA()
    _put_cert(tmp_path, ca.issue_cert("127.0.0.1"))
    _put(tmp_path / "clients-ca.crt", old_clients.cert_pem.bytes())
    config = tmp_path / "web.yml"
    _put(config, MTLS)
    newcomer = _client_context(ca, new_clients.issue_cert("prometheus@example.com"))
    veteran = _client_context(ca, old_clients.issue_cert("prometheus@example.com"))
    async with _serving(config) as (port, live):
        with pytest.raises(aiohttp.ClientError):
            await _status(port, newcomer)
        _put(tmp_path / "clients-ca.crt", new_clients.cert_pem.bytes())
        with caplog.at_level(logging.INFO, logger="exporter"):
            assert await _settle(live)
        assert await _status(port, newcomer) == 200
        # A context can be told to trust more, never less: said in the log and README.
        assert await _status(port, veteran) == 200
        [record] = _events(caplog, "web_config_client_ca_kept")
        assert record.levelno == logging.WARNING
        assert record.fields["certificates"] == 1  # type: ignore[attr-defined]


async def test_a_raised_min_version_applies_to_new_connections(
    ca: trustme.CA, tmp_path: Path
) -> None:
    """After min_version is raised to TLS13 and reloaded, a TLS 1.2 client is refused."""
    _put_cert(tmp_path, ca.issue_cert("127.0.0.1"))
    config = tmp_path / "web.yml"
    _put(config, TLS)
    async with _serving(config) as (port, live):
        assert await _status(port, _client_context(ca, tls12=True)) == 200
        _put(config, TLS + "  min_version: TLS13\n")
        assert await _settle(live)
        with pytest.raises(aiohttp.ClientError):
            await _status(port, _client_context(ca, tls12=True))
        assert await _status(port, _client_context(ca)) == 200


class Steps:
    """A sleep that ends only when the test says, and tells when the loop sleeps again."""

    def __init__(self) -> None:
        self.asked: asyncio.Queue[float] = asyncio.Queue()
        self._go: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(self, seconds: float) -> None:
        """Wait for the test's go."""
        self.asked.put_nowait(seconds)
        await self._go.get()

    async def step(self) -> None:
        """End one sleep, and wait until the loop has checked and sleeps again."""
        self._go.put_nowait(None)
        await self.asked.get()


async def test_the_loop_checks_every_interval_and_reloads(tmp_path: Path) -> None:
    """run() sleeps CHECK_SECONDS between checks, and a change is in force two checks later."""
    config = tmp_path / "web.yml"
    _put(config, _users(prometheus=PROMETHEUS))
    steps = Steps()
    live = LiveWebConfig(config, sleep=steps.sleep)
    header = "Basic " + base64.b64encode(b"grafana:grafana-pw").decode()
    task = asyncio.create_task(live.run())
    try:
        assert await steps.asked.get() == CHECK_SECONDS
        _put(config, _users(grafana=GRAFANA))
        await steps.step()
        assert not await live.auth.check(header)
        await steps.step()
        assert await live.auth.check(header)
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    "broken",
    [
        "a: " + "[" * 5000 + "]" * 5000 + "\n",
        _users(prometheus=PROMETHEUS) + TLS.replace("tls.crt", '"a\\0b"'),
    ],
    ids=["nested too deeply", "a file name with a NUL"],
)
async def test_a_config_that_breaks_the_reader_keeps_the_one_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, broken: str
) -> None:
    """YAML nested too deeply, or a file name no stat() takes, is a reload problem, not a crash."""
    config = tmp_path / "web.yml"
    _put(config, _users(prometheus=PROMETHEUS))
    live = LiveWebConfig(config)
    header = "Basic " + base64.b64encode(b"prometheus:prometheus-pw").decode()
    _put(config, broken)
    with caplog.at_level(logging.WARNING, logger="exporter.server.webconfig.live"):
        assert not await _settle(live)
        assert not await live.check()
    assert await live.auth.check(header)
    assert len(_events(caplog, "web_config_reload_failed")) == 1


async def test_the_loop_outlives_a_check_that_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check that raises (a bug) is logged with its traceback, and the loop goes on checking."""
    config = tmp_path / "web.yml"
    _put(config, _users(prometheus=PROMETHEUS))
    steps = Steps()
    live = LiveWebConfig(config, sleep=steps.sleep)
    calls = 0

    async def broken_check() -> bool:
        nonlocal calls
        calls += 1
        raise RuntimeError("a bug")

    monkeypatch.setattr(live, "check", broken_check)
    task = asyncio.create_task(live.run())
    try:
        with caplog.at_level(logging.ERROR, logger="exporter.server.webconfig.live"):
            await steps.asked.get()
            for _ in range(2):  # a loop that died would never sleep again: fail, not hang
                await asyncio.wait_for(steps.step(), 10)
        assert calls == 2
        assert not task.done()
        [first, _] = _events(caplog, "web_config_reload_failed")
        assert first.exc_info is not None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
