"""The real HTTP server of the exporter on loopback, against clients that hold it up."""

import asyncio
import base64
import contextlib
import logging
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
from aiohttp import web

from exporter import app as app_module
from exporter.app import _serve_http, exporter
from exporter.jobs.state import JobState
from exporter.jobs.tree import flatten
from exporter.server.statuspage import model, page, views
from exporter.settings.load import load_settings
from tests.standins.jobs import wide_job
from tests.standins.processes import free_port

HALF_HEAD = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n"
SCRAPE = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\nAccept-Encoding: gzip\r\n\r\n"


@pytest.fixture(autouse=True)
def _token(clean_env: pytest.MonkeyPatch) -> None:
    """Give the exporter a token to start with (it never polls here)."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "bounds-test-token")


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path,
    *,
    jobs: int = 0,
    subjobs: int = 0,
    web_config: str | None = None,
    **settings: str,
) -> AsyncIterator[tuple[str, web.AppRunner]]:
    """Serve the exporter's HTTP side (its store holding `jobs` wide jobs); yield its URL."""
    port = free_port()
    flags: dict[str, Any] = {
        "endpoint": "http://127.0.0.1:9",
        "project_id": "bounds",
        "listen_address": f"127.0.0.1:{port}",
        **settings,
    }
    if web_config is not None:
        (tmp_path / "web.yml").write_text(web_config)
        flags["web_config_file"] = str(tmp_path / "web.yml")
    async with exporter(load_settings(flags)) as ex:
        for index in range(jobs):
            job_id = f"job-{index:04d}"
            tree = flatten(wide_job(job_id, subjobs), job_id)
            ex.store.put(JobState(job_id).succeeded(tree, time.time()))
        runner, _ = await _serve_http(ex)
        try:
            yield f"http://127.0.0.1:{port}", runner
        finally:
            await runner.cleanup()


def short_limits(monkeypatch: pytest.MonkeyPatch, **limits: float) -> None:
    """Make the server's connection limits these, for one test."""
    made = app_module.Limits

    def limits_for_test() -> Any:
        return made(**limits)  # type: ignore[arg-type]

    monkeypatch.setattr(app_module, "Limits", limits_for_test)


async def connect(url: str, *, receive_buffer: int | None = None) -> socket.socket:
    """Open a raw connection to the server."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setblocking(False)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return sock


async def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Tell whether the server closes the connection within `within` seconds (reading all)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    try:
        while loop.time() < deadline:
            data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), deadline - loop.time())
            if not data:
                return True
    except (TimeoutError, ConnectionError):
        return loop.time() < deadline
    return False


async def get(url: str, path: str = "/metrics", **kwargs: Any) -> int:
    """GET a page on a fresh connection, within 5 s; return the status."""
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url + path, **kwargs) as response,
    ):
        await response.read()
        return response.status


async def test_a_half_sent_request_head_is_closed_after_the_head_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection that sends part of a head is closed; a kept-alive one idle too long as well."""
    short_limits(monkeypatch, head_timeout=0.5)
    async with serving(tmp_path) as (url, _):
        half = await connect(url)
        await asyncio.get_running_loop().sock_sendall(half, HALF_HEAD)
        silent = await connect(url)
        kept = await connect(url)
        await asyncio.get_running_loop().sock_sendall(kept, SCRAPE)
        for sock in (half, silent, kept):
            with sock:
                assert await closed_by_server(sock, within=10)
        # A whole request is answered, and the server keeps up with a client that is fast.
        assert await get(url) == 200


async def test_connections_past_the_cap_close_the_oldest_idle_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the cap taken by half-sent heads, /metrics still answers; the oldest idle ones go."""
    short_limits(monkeypatch, max_connections=20, head_timeout=60)
    async with serving(tmp_path) as (url, _):
        loop = asyncio.get_running_loop()
        held = [await connect(url) for _ in range(40)]
        for sock in held:
            await loop.sock_sendall(sock, HALF_HEAD)
        for _ in range(5):
            assert await get(url) == 200
            assert await get(url, "/healthz") == 200
        # The first ones were the oldest idle: closed for the newcomers.
        assert await closed_by_server(held[0], within=10)
        for sock in held:
            sock.close()


async def test_clients_that_never_read_metrics_hold_no_copy_of_the_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Clients that ask for a large /metrics and never read add little memory, and are dropped."""
    short_limits(monkeypatch, write_timeout=2)
    caplog.set_level(logging.INFO)
    async with serving(tmp_path, jobs=40, subjobs=500) as (url, _):
        assert await get(url, headers={"Accept-Encoding": "identity"}) == 200
        assert await get(url) == 200  # the gzip body, warmed as well
        loop = asyncio.get_running_loop()
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            stuck = []
            for index in range(60):
                sock = await connect(url, receive_buffer=4096)
                request = SCRAPE if index % 2 else SCRAPE.replace(b"gzip", b"identity")
                await loop.sock_sendall(sock, request)
                stuck.append(sock)
            await asyncio.sleep(0.5)  # let every request reach its first blocked write
            grown = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
        assert await get(url) == 200
        # About 64 KiB each: a copy of the body (some MB) each would be far more.
        assert grown < 20 * 2**20, f"{grown / 2**20:.0f} MiB for 60 clients"
        deadline = loop.time() + 30
        while not [r for r in caplog.records if r.getMessage() == "http_connections_dropped"]:
            assert loop.time() < deadline, "no client was dropped"
            await asyncio.sleep(0.1)
        for sock in stuck:
            sock.close()
        [dropped] = [r for r in caplog.records if r.getMessage() == "http_connections_dropped"]
        assert dropped.fields == {"count": 1, "reason": "write_timeout"}  # type: ignore[attr-defined]


async def test_accept_errors_are_counted_not_logged_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Out of file descriptors, the accept error is one line a minute with its count."""
    async with serving(tmp_path) as (url, runner):
        loop = asyncio.get_running_loop()
        [site] = runner.sites
        listening = site.sockets  # type: ignore[attr-defined]
        error = OSError(24, "Too many open files")
        with caplog.at_level(logging.DEBUG):
            for _ in range(1000):
                loop.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": error,
                        "socket": listening[0],
                    }
                )
            # An error of something else still reaches the log, as asyncio writes it.
            loop.call_exception_handler({"message": "something else broke"})
        lines = [r.getMessage() for r in caplog.records]
        assert lines.count("http_accept_failed") == 1
        assert "something else broke" in lines
        assert not any("out of system resource" in line for line in lines)
        assert await get(url) == 200


async def test_refused_admin_tokens_are_counted_not_logged_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A flood of wrong bearer tokens on the job API is one log line, and /metrics answers."""
    caplog.set_level(logging.INFO)
    async with serving(tmp_path, admin_token="the-right-admin-token") as (url, _):
        headers = {"Authorization": "Bearer a-wrong-token"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

            async def refused() -> int:
                async with session.post(f"{url}/api/v1/jobs", headers=headers, json={}) as r:
                    return r.status

            for _ in range(20):
                assert set(await asyncio.gather(*(refused() for _ in range(25)))) == {401}
        assert await get(url) == 200
    lines = [r for r in caplog.records if r.getMessage() == "admin_unauthorized"]
    assert len(lines) == 1
    assert lines[0].fields == {"count": 1, "remote": "127.0.0.1"}  # type: ignore[attr-defined]
    assert "a-wrong-token" not in caplog.text


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_the_right_password_gets_through_a_wrong_password_flood(tmp_path: Path) -> None:
    """Under a flood of wrong passwords from one address, the right one from another gets in."""
    users = {f"prometheus-{n}": f"password-{n}" for n in range(3)}
    hashes = {
        user: bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=8)).decode()
        for user, password in users.items()
    }
    config = "basic_auth_users:\n" + "".join(f"  {u}: '{h}'\n" for u, h in hashes.items())
    async with serving(tmp_path, web_config=config) as (url, _):
        sent = 0
        flooding = asyncio.Event()

        async def flood() -> None:
            nonlocal sent
            async with aiohttp.ClientSession() as session:
                while True:
                    wrong = {"Authorization": _basic("prometheus-0", f"wrong-{sent}")}
                    async with session.get(f"{url}/metrics", headers=wrong) as response:
                        assert response.status == 401
                    sent += 1
                    if sent >= 200:
                        flooding.set()

        flooders = [asyncio.create_task(flood()) for _ in range(32)]
        try:
            await asyncio.wait_for(flooding.wait(), 30)
            # Prometheus scrapes from another address, with a password not yet remembered.
            connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
            timeout = aiohttp.ClientTimeout(total=5)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as prometheus:
                for user, password in users.items():
                    right = {"Authorization": _basic(user, password)}
                    async with prometheus.get(f"{url}/metrics", headers=right) as response:
                        assert response.status == 200, user
        finally:
            for task in flooders:
                task.cancel()
            await asyncio.gather(*flooders, return_exceptions=True)


async def test_status_views_are_built_once_per_snapshot_and_never_hold_up_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients looping both views of large trees cost one build each; /metrics answers."""
    monkeypatch.setattr(views, "VIEW_MAX_AGE", 3600)  # however slow the machine
    built: list[str] = []
    for module, name in ((model, "job_json"), (page, "job_card")):  # once a job a build
        real = getattr(module, name)

        def counting(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            built.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, counting)
    async with serving(tmp_path, jobs=8, subjobs=2000) as (url, _):
        assert await get(url) == 200
        done = asyncio.Event()
        paths = ["/jobs", "/api/v1/jobs"] * 2
        served = [0] * len(paths)

        async def loop_views(index: int) -> None:
            async with aiohttp.ClientSession() as session:
                while not done.is_set():
                    async with session.get(url + paths[index]) as response:
                        assert response.status == 200
                        await response.read()
                    served[index] += 1

        viewers = [asyncio.create_task(loop_views(i)) for i in range(len(paths))]
        loop = asyncio.get_running_loop()
        waits = []
        deadline = loop.time() + 120  # only a stuck view ends the test here
        try:
            # Scrape all along, until every viewer was served twice (once from the cache).
            while len(waits) < 10 or min(served) < 2:
                assert loop.time() < deadline, f"views served {served}"
                start = loop.time()
                assert await get(url) == 200
                waits.append(loop.time() - start)
        finally:
            done.set()
            await asyncio.gather(*viewers)
    assert max(waits) < 5, f"/metrics took up to {max(waits):.1f} s"
    assert min(served) >= 2
    # Nothing changed: one build of each view served every request.
    assert sorted(built) == ["job_card"] * 8 + ["job_json"] * 8
