"""A small stand-in for the CCE job API (v3 job, v2 list), served on loopback by the tests."""

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

TOKEN = "fake-token"
PROJECT = "0123456789abcdef0123456789abcdef"


def go_time(moment: float) -> str:
    """Format a Unix time as CCE does."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")


def v3_job(
    job_id: str,
    *,
    created: float,
    updated: float | None = None,
    job_type: str = "CreateCluster",
    phase: str = "Running",
    subjobs: int = 2,
    reason: str = "",
) -> dict[str, Any]:
    """Build a v3 job with `subjobs` sub-jobs, in the v3 spelling."""
    updated = created + 60 if updated is None else updated
    return {
        "kind": "Job",
        "apiVersion": "v3",
        "metadata": {
            "uid": job_id,
            "creationTimestamp": go_time(created),
            "updateTimestamp": go_time(updated),
        },
        "spec": {
            "type": job_type,
            "clusterUID": "cluster-1",
            "resourceID": f"res-{job_id}",
            "resourceName": "node-a",
            "extendParam": {"k": "v"},
            "subJobs": [
                {
                    "metadata": {
                        "uid": f"{job_id}-sub{i}",
                        "creationTimestamp": go_time(created),
                        "updateTimestamp": go_time(updated),
                    },
                    "spec": {"type": "Step", "clusterUID": "cluster-1"},
                    "status": {"phase": phase},
                }
                for i in range(subjobs)
            ],
        },
        "status": {"phase": phase, "reason": reason},
    }


def v2_job(
    job_id: str,
    *,
    created: float,
    updated: float | None = None,
    job_type: str = "CreateCluster",
    phase: str = "Running",
    subjobs: int = 2,
    reason: str = "",
) -> dict[str, Any]:
    """Build the job `v3_job` makes, in the v2 spelling of the job list."""
    updated = created + 60 if updated is None else updated
    status: dict[str, Any] = {"status": phase, "reason": reason}
    if phase in ("Success", "Failed"):
        status["completionTime"] = go_time(updated)
    return {
        "kind": "Job",
        "apiVersion": "v2",
        "metadata": {
            "uid": job_id,
            "creationTimestamp": go_time(created),
            "updateTimestamp": go_time(updated),
        },
        "spec": {
            "type": job_type,
            "clusteruid": "cluster-1",
            "resourceid": f"res-{job_id}",
            "resourcename": "node-a",
            "extendparam": {"k": "v"},
            "subjobs": [
                {
                    "metadata": {
                        "uid": f"{job_id}-sub{i}",
                        "creationTimestamp": go_time(created),
                        "updateTimestamp": go_time(updated),
                    },
                    "spec": {"type": "Step", "clusteruid": "cluster-1"},
                    "status": {"status": phase},
                }
                for i in range(subjobs)
            ],
        },
        "status": status,
    }


@dataclass
class FakeCCE:
    """The jobs of one project: v3 objects by ID and the v2 list; counts every request."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    listing: list[Any] = field(default_factory=list)
    list_status: int = 200
    hits: Counter[str] = field(default_factory=Counter)

    def add(self, job_id: str, **kwargs: Any) -> None:
        """Add a job to both the v3 API and the v2 list."""
        self.jobs[job_id] = v3_job(job_id, **kwargs)
        self.listing.append(v2_job(job_id, **kwargs))

    def app(self) -> web.Application:
        """Build the stand-in API."""
        app = web.Application()
        app.router.add_get("/api/v3/projects/{project}/jobs/{job_id}", self._show)
        app.router.add_get("/api/v2/projects/{project}/jobs", self._list)
        return app

    async def _show(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        self.hits[f"show:{job_id}"] += 1
        self.hits["show"] += 1
        if request.headers.get("X-Auth-Token") != TOKEN:
            return web.json_response({"errorCode": "CCE.01401001"}, status=401)
        job = self.jobs.get(job_id)
        if job is None:
            return web.json_response({"errorCode": "CCE.01404001"}, status=404)
        return web.json_response(job)

    async def _list(self, request: web.Request) -> web.Response:
        self.hits["list"] += 1
        if request.headers.get("X-Auth-Token") != TOKEN:
            return web.json_response({"errorCode": "CCE.01401001"}, status=401)
        if self.list_status != 200:
            return web.json_response({"errorCode": "CCE.01500001"}, status=self.list_status)
        return web.json_response(self.listing)
