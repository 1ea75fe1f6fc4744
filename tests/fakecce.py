"""A real local HTTP server that plays the CCE job API, for tests."""

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "test-token"


@dataclass
class Fault:
    """How the server misbehaves for one job: a status and body, or a delay."""

    status: int = 200
    body: str | bytes | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class FakeCCE:
    """Serves v3 jobs from `jobs`; counts requests; injects faults per job."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.faults: dict[str, Fault] = {}
        self.requests: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = 0.0
        self.on_request: Callable[[web.Request], None] | None = None

    def add_job(self, job_id: str, phase: str = "Running", **extra: Any) -> None:
        """Serve a simple job with that ID and phase."""
        self.jobs[job_id] = {
            "kind": "Job",
            "apiVersion": "v3",
            "metadata": {
                "uid": job_id,
                "creationTimestamp": "2025-01-01 10:00:00.5 +0000 UTC",
                "updateTimestamp": "2025-01-01 10:05:00 +0000 UTC",
            },
            "spec": {"type": extra.pop("job_type", "CreateNode"), "clusterUID": "c-1"},
            "status": {"phase": phase, **extra},
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one GET of a job."""
        job_id = request.match_info["job_id"]
        self.requests[job_id] += 1
        if self.on_request is not None:
            self.on_request(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            fault = self.faults.get(job_id)
            delay = fault.delay if fault and fault.delay else self.delay
            if delay:
                await asyncio.sleep(delay)
            if request.headers.get("X-Auth-Token") != TOKEN:
                return _error(401, "APIG.0301", "Incorrect IAM authentication information")
            if fault is not None and fault.body is not None:
                return web.Response(status=fault.status, body=fault.body, headers=fault.headers)
            job = self.jobs.get(job_id)
            if job is None:
                return _error(404, "CCE.01404001", "Job not found")
            return web.json_response(job)
        finally:
            self.in_flight -= 1

    def app(self) -> web.Application:
        """Build the aiohttp application."""
        app = web.Application()
        app.router.add_get("/api/v3/projects/{project_id}/jobs/{job_id}", self.handle)
        return app


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error_code": code, "error_msg": message}),
        content_type="application/json",
    )
