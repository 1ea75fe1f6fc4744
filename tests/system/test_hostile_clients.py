"""The real process under 1,024 open files, against more half-sent requests than that."""

import asyncio
import resource
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.standins.processes import start_server, stop

HALF_HEAD = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n"
OPEN_FILES = 1024
HELD = 1100


async def _hold(url: str) -> list[asyncio.StreamWriter]:
    """Open HELD connections that send part of a request head and never the rest."""
    host, port = url.removeprefix("http://").split(":")

    async def one() -> asyncio.StreamWriter | None:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
        except (OSError, TimeoutError):
            return None  # refused or not accepted: it holds nothing either
        writer.write(HALF_HEAD)
        return writer

    opened = await asyncio.gather(*(one() for _ in range(HELD)))
    return [writer for writer in opened if writer is not None]


async def _scrapes(url: str) -> list[int]:
    """Scrape /metrics and /healthz ten times each, on fresh connections, 5 s at most each."""
    statuses = []
    timeout = aiohttp.ClientTimeout(total=5)
    for _ in range(10):
        for path in ("/metrics", "/healthz"):
            try:
                async with (
                    aiohttp.ClientSession(timeout=timeout) as session,
                    session.get(url + path) as response,
                ):
                    await response.read()
                    statuses.append(response.status)
            except (aiohttp.ClientError, TimeoutError):
                statuses.append(0)
    return statuses


async def _attack(url: str) -> list[int]:
    held = await _hold(url)
    try:
        return await _scrapes(url)
    finally:
        for writer in held:
            writer.close()


def test_half_sent_requests_past_the_open_files_limit(tmp_path: Path) -> None:
    """1,100 half-sent requests under 1,024 open files: /metrics answers, the log stays short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * HELD:  # the test's own side of the connections
        if hard != resource.RLIM_INFINITY and hard < 2 * HELD:
            pytest.skip(f"the test needs {2 * HELD} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (2 * HELD, hard))
    log = tmp_path / "exporter.log"

    def command(port: int) -> list[str]:
        return [
            "prlimit",
            f"--nofile={OPEN_FILES}:{OPEN_FILES}",
            "--",
            sys.executable,
            "-m",
            "exporter",
            "--demo",
            "--listen-address",
            f"127.0.0.1:{port}",
        ]

    process, url = start_server(command, log, "/healthz")
    try:
        statuses = asyncio.run(_attack(url))
    finally:
        stop(process)
    assert statuses == [200] * 20
    lines = log.read_text(errors="replace").splitlines()
    assert len(lines) < 200, lines[-20:]
