"""A stand-in CCE API and an alert webhook, served on loopback from a thread.

The end-to-end and browser tests run the real exporter as a subprocess; it
needs an API to poll while the test itself waits on other programs, so the
servers run on their own event loop in a background thread.
"""

import asyncio
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

PROJECT_ID = "0123456789abcdef0123456789abcdef"
TOKEN = "standin-token"
CLUSTER_A = "4d1ecb2c-229a-11e8-9c75-0255ac100ceb"
CLUSTER_B = "7ec8b73d-83db-11f0-8baa-0255ac10003e"
FAILURE_REASON = "Something bad happened at server, recycle resource"

# The scenario: what each watched job answers.
FAILED_JOB = "job-failed-1"
STUCK_JOB = "job-stuck-1"
FAILING_JOB = "job-unreadable-1"
THROTTLED_JOB = "job-throttled-1"
DONE_JOB = "job-done-1"
RUNNING_JOB = "job-running-1"
SCENARIO_JOBS = (FAILED_JOB, STUCK_JOB, FAILING_JOB, THROTTLED_JOB, DONE_JOB, RUNNING_JOB)


def go_time(moment: float) -> str:
    """Format Unix seconds the way CCE does (Go's time.Time.String())."""
    dt = datetime.fromtimestamp(moment, UTC)
    return f"{dt:%Y-%m-%d %H:%M:%S}.{dt.microsecond:06d}123 +0000 UTC"


def job(
    uid: str,
    job_type: str,
    phase: str,
    created: float,
    updated: float,
    *,
    cluster: str = CLUSTER_A,
    resource_name: str = "",
    reason: str = "",
    sub_jobs: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    """Build one v3 job object as the API answers it."""
    spec: dict[str, Any] = {"type": job_type, "clusterUID": cluster}
    if resource_name:
        spec |= {"resourceID": f"res-{uid}", "resourceName": resource_name}
    if sub_jobs:
        spec["subJobs"] = list(sub_jobs)
    status = {"phase": phase} | ({"reason": reason} if reason else {})
    return {
        "kind": "Job",
        "apiVersion": "v3",
        "metadata": {
            "uid": uid,
            "creationTimestamp": go_time(created),
            "updateTimestamp": go_time(updated),
        },
        "spec": spec,
        "status": status,
    }


def scenario(now: float) -> dict[str, tuple[int, Any]]:
    """Every scenario job's answer at `now`: (HTTP status, JSON body)."""
    hour = 3600.0
    return {
        FAILED_JOB: (
            200,
            job(
                FAILED_JOB,
                "CreateCluster",
                "Failed",
                now - 0.7 * hour,
                now - 0.2 * hour,
                resource_name="prod-cluster",
                reason=FAILURE_REASON,
                sub_jobs=(
                    job("sub-f-0", "CreatePSMCert", "Success", now - 0.7 * hour, now - 0.6 * hour),
                    job(
                        "sub-f-1",
                        "InstallMaster",
                        "Failed",
                        now - 0.7 * hour,
                        now - 0.2 * hour,
                        reason=FAILURE_REASON,
                    ),
                ),
            ),
        ),
        STUCK_JOB: (
            200,
            job(
                STUCK_JOB,
                "CreateNode",
                "Running",
                now - 3 * hour,
                now - 2.9 * hour,
                cluster=CLUSTER_B,
                resource_name="node-7",
                sub_jobs=(
                    job("sub-s-0", "CreateServer", "Success", now - 3 * hour, now - 2.9 * hour),
                    job("sub-s-1", "InstallNode", "Running", now - 3 * hour, now - 2.9 * hour),
                ),
            ),
        ),
        FAILING_JOB: (500, {"errorCode": "CCE.01500001", "errorMessage": "Internal error"}),
        THROTTLED_JOB: (
            429,
            {"error_code": "APIG.0308", "error_msg": "policy user over ratelimit,limit:60"},
        ),
        # Started long ago, finished within the retention: no alert may fire for it.
        DONE_JOB: (
            200,
            job(
                DONE_JOB,
                "UpgradeCluster",
                "Success",
                now - 9 * hour,
                now - 0.5 * hour,
                resource_name="prod-cluster",
                sub_jobs=(
                    job("sub-d-0", "UpgradeMaster", "Success", now - 9 * hour, now - 8.5 * hour),
                    job("sub-d-1", "UpgradeNodes", "Success", now - 9 * hour, now - 0.5 * hour),
                ),
            ),
        ),
        # Under way and young: no alert either.
        RUNNING_JOB: (
            200,
            job(
                RUNNING_JOB,
                "ScaleupCluster",
                "Running",
                now - 600,
                now - 60,
                cluster=CLUSTER_B,
                resource_name="node-pool-a",
                sub_jobs=(
                    job("sub-r-0", "CreateServer", "Success", now - 600, now - 300),
                    job("sub-r-1", "InstallNode", "Running", now - 300, now - 60),
                ),
            ),
        ),
    }


@dataclass
class Servers:
    """The running stand-in API and webhook, and what the webhook received."""

    api_url: str
    webhook_url: str
    notifications: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[dict[str, Any]]:
        """Return a copy of the webhook notifications received so far."""
        with self.lock:
            return list(self.notifications)


def _api_app() -> web.Application:
    async def show_job(request: web.Request) -> web.Response:
        if request.headers.get("X-Auth-Token") != TOKEN:
            return web.json_response({"errorCode": "CCE.01401001"}, status=401)
        if request.match_info["project_id"] != PROJECT_ID:
            return web.json_response({"errorCode": "CCE.01403001"}, status=403)
        answer = scenario(time.time()).get(request.match_info["job_id"])
        if answer is None:
            return web.json_response({"errorCode": "CCE.01404001"}, status=404)
        status, body = answer
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/api/v3/projects/{project_id}/jobs/{job_id}", show_job)
    return app


def _webhook_app(servers: list[Servers]) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        payload = await request.json()
        with servers[0].lock:
            servers[0].notifications.append(payload)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/webhook", receive)
    return app


@contextmanager
def serving() -> Iterator[Servers]:
    """Run the stand-in API and the webhook on loopback until the block ends."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="standin-servers", daemon=True)
    thread.start()
    holder: list[Servers] = []
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
        api = call(start(_api_app()))
        hook = call(start(_webhook_app(holder)))
        holder.append(Servers(api, f"{hook}/webhook"))
        yield holder[0]
    finally:
        for runner in runners:
            call(runner.cleanup())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


# Ports free_port handed out in this test session: none is handed out twice.
_HANDED_OUT: set[int] = set()
_HANDING_OUT = threading.Lock()
# Where free_port looks first: this many ports just below the kernel's range of
# ephemeral ports.
_BELOW_EPHEMERAL = 16384


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


def stop(process: subprocess.Popen[bytes]) -> None:
    """End a process the test started, politely first."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
