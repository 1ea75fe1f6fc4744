"""Servers in other processes and threads: free ports, starting, waiting, stopping.

The system tests run real programs (the exporter, Prometheus, Alertmanager) as
subprocesses on loopback ports, and serve their stand-ins from a thread while
the test itself waits on those programs.
"""

import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.standins.cce import PROJECT_ID, TOKEN

# Ports free_port handed out in this test session: none is handed out twice.
_HANDED_OUT: set[int] = set()
_HANDING_OUT = threading.Lock()
# Where free_port looks first: this many ports just below the kernel's range of
# ephemeral ports.
_BELOW_EPHEMERAL = 16384


def require_program(name: str) -> str:
    """Return the path of a real program the test needs; skip without it, fail in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (make system-deps installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _ephemeral_floor() -> int:
    """The lowest port the kernel picks for `bind(0)` and outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """Return a loopback port that is free now and that no other caller in this session got.

    A server started later binds it, so it is chosen outside the kernel's
    ephemeral range where there is room: no `bind(0)` and no outgoing
    connection (the tests' own servers and clients, the exporter's polls,
    Prometheus' scrapes) can take it meanwhile. Another program can still
    bind it first; `start_server` then starts the server again on a new port.
    """
    with _HANDING_OUT:
        top = _ephemeral_floor()
        candidates = list(range(max(1024, top - _BELOW_EPHEMERAL), top))
        random.shuffle(candidates)
        for port in candidates[:1000]:
            if port not in _HANDED_OUT and _bindable(port):
                _HANDED_OUT.add(port)
                return port
        while True:  # no room below the ephemeral range: let the kernel choose
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                chosen: int = sock.getsockname()[1]
            if chosen not in _HANDED_OUT:
                _HANDED_OUT.add(chosen)
                return chosen


@contextmanager
def reserved_port() -> Iterator[int]:
    """Hold a loopback port that refuses connections: bound, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


def wait_for(url: str, deadline: float, *, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until `url` answers 200, failing when `process` ends first or time runs out."""
    while True:
        if process is not None and process.poll() is not None:
            msg = f"{process.args!r} exited with {process.returncode} before {url} answered"
            raise RuntimeError(msg)
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            msg = f"{url} did not answer 200 in time"
            raise TimeoutError(msg)
        time.sleep(0.2)


def port_taken(output: str) -> bool:
    """Tell whether a server's output says its listening port was in use."""
    return "address already in use" in output.lower()


def start_server(
    command: Callable[[int], list[str]],
    log: Path,
    ready_path: str,
    *,
    env: dict[str, str] | None = None,
    attempts: int = 3,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `command(port)` on a free port; wait until `ready_path` answers 200.

    Return the process and its base URL. A server that exits because another
    program took its port in the meantime is started again on a new port.
    """
    for attempt in range(1, attempts + 1):
        port = free_port()
        args = command(port)
        with log.open("wb") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)  # noqa: S603
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(f"{base}{ready_path}", time.monotonic() + 30, process=process)
        except RuntimeError:  # it exited
            if attempt < attempts and port_taken(log.read_text(errors="replace")):
                continue
            raise
        except BaseException:
            stop(process)
            raise
        return process, base
    msg = "unreachable: the last attempt returns or raises"
    raise AssertionError(msg)


def stop(process: subprocess.Popen[bytes]) -> None:
    """End a process the test started, politely first."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def running_exporter(api_url: str, job_ids: tuple[str, ...], log: Path) -> Iterator[str]:
    """Run the real exporter (`python -m exporter`) against `api_url`; yield its base URL."""
    env = {
        "PATH": "/usr/bin:/bin",
        "CCE_EXPORTER_AUTH_TOKEN": TOKEN,
        "PYTHONUNBUFFERED": "1",
    }

    def command(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "exporter",
            "--endpoint",
            api_url,
            "--project-id",
            PROJECT_ID,
            "--job-ids",
            ",".join(job_ids),
            "--poll-interval",
            "1",
            "--request-timeout",
            "5",
            "--listen-address",
            f"127.0.0.1:{port}",
        ]

    process, base = start_server(command, log, "/readyz", env=env)
    try:
        yield base
    finally:
        stop(process)


@contextmanager
def serving_in_thread(*apps: web.Application) -> Iterator[list[str]]:
    """Serve `apps` on loopback from an event loop of their own; yield their base URLs."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="standin-servers", daemon=True)
    thread.start()
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def call(coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, loop)
        return future.result(timeout=30)

    try:
        yield [call(start(app)) for app in apps]
    finally:
        for runner in runners:
            call(runner.cleanup())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
