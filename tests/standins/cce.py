"""A real local HTTP server that plays the CCE job API: show-job (v3) and the job list (v2).

It serves CCE's paths (`/api/...`) and CCE Autopilot's (`/autopilot/...`)
side by side: a job lives on one of them (CCE unless it was added on
Autopilot), and the other answers 404 `CCE.01404001` for it, as the cloud does.

Run as `python -m tests.standins.cce --jobs N --seed S` it serves N running
jobs that answer with random faults (see `soak_faults`), prints its port and
serves until it is terminated: the soak test's stand-in API, kept out of the
process whose memory the soak measures.
"""

import argparse
import asyncio
import contextlib
import json
import random
import signal
import socket
import struct
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from exporter.cce.transport import MAX_BODY_BYTES
from exporter.jobs.ids import Api
from tests.standins.clusters import FakeClusters
from tests.standins.jobs import CREATED, as_v2, deep_job_body, job_object, v3_job, wide_job

PROJECT_ID = "0123456789abcdef0123456789abcdef"
TOKEN = "test-token"
CCE_NOT_FOUND = {"error_code": "CCE.01404001", "error_msg": "Job not found"}
# Error bodies as the real API writes them, the official SDK's test cases: the
# code each one reports is the first of its `expected` (see transport.error_detail).
SDK_ERROR_BODIES: dict[str, dict[str, Any]] = {
    # A real body with two codes: the SDK reports CCE_CM.0201.
    "two_codes": {
        "error_code": "CCE_CM.0201",
        "error_msg": "Request body invalid",
        "errorCode": "E.CFE.4000201",
        "errorMessage": "Invalid request body: spec.type is required",
    },
    "cce": {"errorCode": "CCE.01404001", "errorMessage": "Job not found"},
    "gateway": {
        "error_code": "APIG.0308",
        "error_msg": "policy user over ratelimit,limit:20,time:1 minute",
        "request_id": "8e4f1b2c0a9d4e6f",
    },
    "iam": {"error": {"code": "APIG.0301", "message": "Incorrect IAM authentication information"}},
    "generic": {"code": "CCE.01500001", "message": "Internal error"},
    "policy": {
        "error_code": "CCE.01403001",
        "error_msg": "Forbidden: no permission for cce:job:get",
        "encoded_authorization_message": "4A9Fb2cZ" * 40,
    },
}


@dataclass
class Fault:
    """How the server misbehaves for one job.

    `status` and `body` replace the answer (the job itself when `body` is None);
    `delay` comes first. `reset` drops the connection with a TCP reset before
    answering; `abort_after` sends the headers (declaring the whole body) and
    that many bytes of it, then resets; `chunked` streams the body without a
    Content-Length. `times` limits the fault to the job's next that-many requests.
    `hold` keeps the answer back until the event is set.
    """

    status: int = 200
    body: str | bytes | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False
    abort_after: int | None = None
    chunked: bool = False
    times: int | None = None
    hold: asyncio.Event | None = None


class FakeCCE:
    """Serves v3 jobs from `jobs` and the v2 list from `listing`; counts requests; injects faults.

    Jobs whose IDs are in `autopilot` live on Autopilot, listed in
    `autopilot_listing`; the others on CCE. Faults are per job (`faults`), or
    picked per request by `chooser` for jobs without one; they apply on the
    API the job lives on. With `project_id` set, other projects are refused
    with 403.
    """

    def __init__(self, project_id: str | None = None) -> None:
        self.project_id = project_id
        self.jobs: dict[str, dict[str, Any]] = {}
        self.listing: list[Any] = []
        self.list_status = 200
        self.faults: dict[str, Fault] = {}
        # Show-job requests by job ID, and job list requests: CCE's, then Autopilot's.
        self.requests: Counter[str] = Counter()
        self.lists = 0
        self.autopilot: set[str] = set()
        self.autopilot_listing: list[Any] = []
        self.autopilot_list_status = 200
        self.autopilot_requests: Counter[str] = Counter()
        self.autopilot_lists = 0
        # When each request of a job arrived (time.monotonic()).
        self.arrivals: defaultdict[str, list[float]] = defaultdict(list)
        self.in_flight = 0
        self.max_in_flight = 0
        self.in_flight_by_job: Counter[str] = Counter()
        self.delay = 0.0
        self.on_request: Callable[[web.Request], None] | None = None
        # Picks a fault for a request of a job without a fixed one (None: answer well).
        self.chooser: Callable[[str], Fault | None] | None = None
        self.clusters = FakeClusters()  # the cluster lists, CCE and Autopilot: empty at first

    def add_job(
        self,
        job_id: str,
        phase: str = "Running",
        *,
        job_type: str = "CreateNode",
        updated: float | None = None,
        reason: str | None = None,
        api: Api = Api.CCE,
    ) -> None:
        """Serve a simple job with that ID and phase (last updated at `updated`, a Unix time)."""
        if api is Api.AUTOPILOT:
            self.autopilot.add(job_id)
        self.jobs[job_id] = job_object(
            job_id,
            phase,
            job_type=job_type,
            created=CREATED + 0.5,
            updated=CREATED + 300 if updated is None else updated,
            reason=reason,
        )

    def add_listed(
        self, job_id: str, *, api: Api = Api.CCE, listed_subjobs: bool = True, **kwargs: Any
    ) -> None:
        """Serve `v3_job(job_id, **kwargs)` by its ID on `api`, and list it there (v2 spelling).

        Without `listed_subjobs` its list item has no `spec.subjobs` key, as
        the published example of the list: its sub-jobs are served by ID only.
        """
        self.jobs[job_id] = v3_job(job_id, **kwargs)
        listing = self.listing
        if api is Api.AUTOPILOT:
            self.autopilot.add(job_id)
            listing = self.autopilot_listing
        item = as_v2(self.jobs[job_id])
        if not listed_subjobs:
            del item["spec"]["subjobs"]
        listing.append(item)

    def _fault_for(self, job_id: str) -> Fault | None:
        fault = self.faults.get(job_id)
        if fault is not None and fault.times is not None:
            if fault.times <= 0:
                return None
            fault.times -= 1
        if fault is None and self.chooser is not None:
            return self.chooser(job_id)
        return fault

    def _refusal(self, request: web.Request) -> web.Response | None:
        """Return the answer to a request without the token or for another project, else None."""
        if request.headers.get("X-Auth-Token") != TOKEN:
            return _error(401, "APIG.0301", "Incorrect IAM authentication information")
        if self.project_id is not None and request.match_info["project_id"] != self.project_id:
            return _error(403, "CCE.01403001", "Forbidden")
        return None

    async def show_job(self, request: web.Request) -> web.StreamResponse:
        """Answer one GET of a job on CCE."""
        return await self._show(request, Api.CCE)

    async def show_autopilot_job(self, request: web.Request) -> web.StreamResponse:
        """Answer one GET of a job on Autopilot."""
        return await self._show(request, Api.AUTOPILOT)

    async def _show(self, request: web.Request, api: Api) -> web.StreamResponse:
        """Answer one GET of a job on `api`: 404 for a job that lives on the other."""
        job_id = request.match_info["job_id"]
        counted = self.requests if api is Api.CCE else self.autopilot_requests
        counted[job_id] += 1
        home = Api.AUTOPILOT if job_id in self.autopilot else Api.CCE
        if api is not home:
            return self._refusal(request) or _error(
                404, CCE_NOT_FOUND["error_code"], CCE_NOT_FOUND["error_msg"]
            )
        self.arrivals[job_id].append(time.monotonic())
        if self.on_request is not None:
            self.on_request(request)
        self.in_flight += 1
        self.in_flight_by_job[job_id] += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            fault = self._fault_for(job_id)
            delay = fault.delay if fault and fault.delay else self.delay
            if delay:
                await asyncio.sleep(delay)
            if fault is not None and fault.hold is not None:
                await fault.hold.wait()
            refusal = self._refusal(request)
            if refusal is not None:
                return refusal
            if fault is not None and fault.reset:
                _reset(request)
                return web.Response()  # never sent: the connection is gone
            if fault is not None and fault.body is not None:
                return await _answer(request, fault)
            job = self.jobs.get(job_id)
            if job is None:
                return _error(404, CCE_NOT_FOUND["error_code"], CCE_NOT_FOUND["error_msg"])
            return web.json_response(job)
        finally:
            self.in_flight -= 1
            self.in_flight_by_job[job_id] -= 1

    async def list_jobs(self, request: web.Request) -> web.Response:
        """Answer one GET of the job list."""
        self.lists += 1
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        if self.list_status != 200:
            return _error(self.list_status, "CCE.01500001", "Internal error")
        return web.json_response(self.listing)

    async def list_autopilot_jobs(self, request: web.Request) -> web.Response:
        """Answer one GET of the Autopilot job list (404 as an endpoint without Autopilot)."""
        self.autopilot_lists += 1
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        if self.autopilot_list_status == 404:
            return _error(404, "APIG.0101", "The API does not exist or has not been published")
        if self.autopilot_list_status != 200:
            return _error(self.autopilot_list_status, "CCE.01500001", "Internal error")
        return web.json_response(self.autopilot_listing)

    def app(self) -> web.Application:
        """Build the aiohttp application."""
        app = web.Application()
        app.router.add_get("/api/v3/projects/{project_id}/jobs/{job_id}", self.show_job)
        app.router.add_get("/api/v2/projects/{project_id}/jobs", self.list_jobs)
        self.clusters.add_routes(app, self._refusal)
        app.router.add_get(
            "/autopilot/v3/projects/{project_id}/jobs/{job_id}", self.show_autopilot_job
        )
        app.router.add_get("/autopilot/v2/projects/{project_id}/jobs", self.list_autopilot_jobs)
        return app


async def _answer(request: web.Request, fault: Fault) -> web.StreamResponse:
    """Send the fault's body: whole, streamed in chunks, or cut off by a reset."""
    body = fault.body.encode() if isinstance(fault.body, str) else fault.body
    assert body is not None
    if fault.abort_after is None and not fault.chunked:
        return web.Response(status=fault.status, body=body, headers=fault.headers)
    response = web.StreamResponse(status=fault.status, headers=fault.headers)
    if fault.chunked:
        response.enable_chunked_encoding()
    else:
        response.content_length = len(body)
    await response.prepare(request)
    end = len(body) if fault.abort_after is None else fault.abort_after
    step = 1024 * 1024
    try:
        for start in range(0, end, step):
            await response.write(body[start : min(end, start + step)])
    except ConnectionError:  # the client gave up reading, as it may
        return response
    if fault.abort_after is not None:
        _reset(request)
        return response
    await response.write_eof()
    return response


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP reset (SO_LINGER 0), as a failing proxy does."""
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error_code": code, "error_msg": message}),
        content_type="application/json",
    )


def html_page(status: int, title: str) -> str:
    """A proxy's error page."""
    return f"<html><head><title>{status} {title}</title></head><body><h1>{title}</h1></body></html>"


def soak_faults(cap_body: bytes) -> list[tuple[float, Fault | None]]:
    """The soak's menu: (weight, fault) pairs, mostly good answers (None), every fault."""
    internal = json.dumps({"error_code": "CCE.01500001", "error_msg": "Internal"})
    throttled = json.dumps({"error_code": "APIG.0308", "error_msg": "over ratelimit"})
    return [
        (70, None),
        (3, Fault(500, internal)),
        (3, Fault(502, html_page(502, "Bad Gateway"), headers={"Content-Type": "text/html"})),
        (3, Fault(503, json.dumps({"code": "CCE.01503001", "message": "Unavailable"}))),
        # Rare: each pauses every request of the exporter for a second or more.
        (0.15, Fault(429, throttled)),
        (0.15, Fault(429, throttled, headers={"Retry-After": "1"})),
        (3, Fault(delay=5.0)),  # longer than the soak's request timeout
        (3, Fault(reset=True)),
        (2, Fault(200, '{"kind": "Job", "metadata": {"uid": "x"}, "status": {"phase": "Ru')),
        (2, Fault(200, json.dumps(job_object("x")), abort_after=40)),
        (2, Fault(200, '[{"kind": "Job"}]')),
        (2, Fault(200, cap_body)),  # Content-Length over the cap: refused unread
        (2, Fault(404, json.dumps(CCE_NOT_FOUND))),
        (2, Fault(200, deep_job_body("x", 1000))),
        (2, Fault(200, json.dumps(job_object("x", "Success")))),  # the job finishes
    ]


async def _serve(jobs: int, seed: int) -> None:
    """Serve `jobs` running jobs with random faults until SIGTERM."""
    rng = random.Random(seed)  # noqa: S311 - test data, not cryptography
    cap_body = b" " * (MAX_BODY_BYTES + 1)
    api = FakeCCE()
    for index in range(jobs):
        job_id = f"soak-{index:03d}"
        api.jobs[job_id] = wide_job(job_id, 20) if index % 10 == 0 else job_object(job_id)
    menu = soak_faults(cap_body)
    faults = [fault for _, fault in menu]
    weights = [weight for weight, _ in menu]
    api.chooser = lambda _job_id: rng.choices(faults, weights)[0]
    runner = web.AppRunner(api.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)  # the parent reads the port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    with contextlib.suppress(asyncio.CancelledError):
        await stop.wait()
    await runner.cleanup()


def main() -> None:
    """Run the soak's stand-in API."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(_serve(args.jobs, args.seed))


if __name__ == "__main__":
    main()
