"""A simulated CCE API whose jobs start, progress and finish on their own.

`--demo` serves it on loopback and points the real client at it, so the demo
exercises every layer of the exporter except the cloud itself. Its project
has a few named clusters of both kinds (CCE and Autopilot), one of them
`Unavailable`; its jobs run on the CCE clusters, and some of them fail now
and then, a step failing.
"""

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

DEMO_PROJECT_ID = "0123456789abcdef0123456789abcdef"
DEMO_TOKEN = "demo-token"  # noqa: S105 - the simulated API's own token, not a secret
_NAMESPACE = uuid.UUID("6b1c5a52-6f0e-4c39-9a5e-2f0a6f3a8e10")
# Seconds a job spends Initializing before its first sub-job starts.
_INIT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Step:
    """A sub-job of a template: its type, how long it runs, why it fails and how often.

    It fails in the first job of its template, and then in every `fails_every`-th.
    """

    job_type: str
    seconds: float
    fails_with: str = ""
    fails_every: int = 1

    def fails(self, occurrence: int) -> bool:
        """Tell whether the step fails in the `occurrence`-th job of its template (from 0)."""
        return bool(self.fails_with) and occurrence % self.fails_every == 0


@dataclass(frozen=True, slots=True)
class Template:
    """The shape of a demo job: its type and its sub-jobs, run one after another."""

    job_type: str
    resource_name: str
    steps: tuple[Step, ...]


TEMPLATES = (
    Template(
        "CreateCluster",
        "demo-cluster",
        (Step("CreatePSMCert", 6), Step("InstallMaster", 90), Step("InstallAddons", 30)),
    ),
    Template(
        "CreateNode",
        "demo-node",
        (
            Step("CreateServer", 40),
            Step("InstallNode", 50, fails_with="Node installation timed out", fails_every=3),
        ),
    ),
    Template(
        "ScaleupCluster",
        "demo-scaleup",
        (
            Step("CreateServer", 30),
            Step(
                "InstallNode",
                45,
                fails_with="Something bad happened at server, recycle resource",
                fails_every=2,
            ),
        ),
    ),
    Template("DeleteNode", "demo-node-old", (Step("DrainNode", 20), Step("DeleteServer", 25))),
    Template(
        "UpgradeCluster",
        "demo-cluster",
        (
            Step("UpgradeMaster", 80),
            Step("UpgradeNodes", 70, fails_with="Node drain did not finish", fails_every=4),
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class DemoCluster:
    """A cluster of the simulated project, as the cluster lists show it."""

    name: str
    kind: str  # cce or autopilot: which list shows it
    phase: str
    category: str = "CCE"
    cluster_type: str = "VirtualMachine"
    flavor: str = "cce.s2.small"
    version: str = "v1.29"

    @property
    def cluster_id(self) -> str:
        """The cluster's ID (`metadata.uid`), the `clusterUID` of its jobs."""
        return str(uuid.uuid5(_NAMESPACE, f"cluster/{self.name}"))

    def to_api(self) -> dict[str, Any]:
        """Render the cluster as an item of its cluster list."""
        return {
            "kind": "Cluster",
            "apiVersion": "v3",
            "metadata": {"name": self.name, "uid": self.cluster_id, "alias": ""},
            "spec": {
                "category": self.category,
                "type": self.cluster_type,
                "flavor": self.flavor,
                "version": self.version,
            },
            "status": {"phase": self.phase},
        }


CLUSTERS = (
    DemoCluster("prod-eu", "cce", "Available", flavor="cce.s2.large"),
    DemoCluster("staging", "cce", "Available", category="Turbo", version="v1.28"),
    DemoCluster("edge-arm", "cce", "Unavailable", cluster_type="ARM64", flavor="cce.s1.small"),
    DemoCluster("serverless-web", "autopilot", "Available", flavor="cce.autopilot.cluster"),
    DemoCluster("serverless-batch", "autopilot", "Hibernation", flavor="cce.autopilot.cluster"),
)
# A second simulated region: another project, with clusters of its own.
DEMO_PROJECT_ID_2 = "fedcba9876543210fedcba9876543210"
CLUSTERS_2 = (
    DemoCluster("prod-ap", "cce", "Available", flavor="cce.s2.large"),
    DemoCluster("batch-ap", "cce", "Available", category="Turbo", version="v1.30"),
    DemoCluster("serverless-ap", "autopilot", "Available", flavor="cce.autopilot.cluster"),
)


def go_time(moment: float) -> str:
    """Format a Unix time the way CCE does (Go's time.Time.String())."""
    dt = datetime.fromtimestamp(moment, UTC)
    nanos = round((moment % 1) * 1e9) % 1_000_000_000
    return f"{dt:%Y-%m-%d %H:%M:%S}.{nanos:09d} +0000 UTC"


@dataclass(frozen=True, slots=True)
class DemoJob:
    """One simulated job: a template started at a moment."""

    job_id: str
    template: Template
    started: float
    cluster_id: str
    # Which job of its template this is (from 0): it decides whether a step fails.
    occurrence: int = 0

    def to_api(self, now: float) -> dict[str, Any]:
        """Render the job as the v3 API would answer at `now`."""
        sub_jobs = []
        step_start = self.started + _INIT_SECONDS
        root_phase = "Initializing" if now < step_start else "Running"
        root_updated = min(now, step_start)
        reason = ""
        failed = False
        for index, step in enumerate(self.template.steps):
            step_end = step_start + step.seconds
            if failed or now < step_start:
                phase, updated = "Initializing", self.started
            elif now < step_end:
                phase, updated = "Running", step_start
            else:
                fails = step.fails(self.occurrence)
                phase, updated = ("Failed" if fails else "Success"), step_end
                root_updated = step_end
                if fails:
                    failed, reason = True, step.fails_with
            sub_jobs.append(
                {
                    "kind": "Job",
                    "apiVersion": "v3",
                    "metadata": {
                        "uid": str(uuid.uuid5(_NAMESPACE, f"{self.job_id}/{index}")),
                        "creationTimestamp": go_time(self.started),
                        "updateTimestamp": go_time(updated),
                    },
                    "spec": {"type": step.job_type, "clusterUID": self.cluster_id},
                    "status": {"phase": phase}
                    | ({"reason": step.fails_with} if phase == "Failed" else {}),
                }
            )
            step_start = step_end
        if failed:
            root_phase = "Failed"
        elif now >= step_start:
            root_phase = "Success"
        return {
            "kind": "Job",
            "apiVersion": "v3",
            "metadata": {
                "uid": self.job_id,
                "creationTimestamp": go_time(self.started),
                "updateTimestamp": go_time(root_updated),
            },
            "spec": {
                "type": self.template.job_type,
                "clusterUID": self.cluster_id,
                "resourceID": str(uuid.uuid5(_NAMESPACE, f"{self.job_id}/resource")),
                "resourceName": self.template.resource_name,
                "subJobs": sub_jobs,
            },
            "status": {"phase": root_phase, "reason": reason},
        }


_V2_SPEC_KEYS = {
    "clusterUID": "clusteruid",
    "resourceID": "resourceid",
    "resourceName": "resourcename",
    "extendParam": "extendparam",
    "subJobs": "subjobs",
}


def to_v2(job: dict[str, Any], completed: str | None = None) -> dict[str, Any]:
    """Spell a simulated v3 job the way the v2 job list does."""
    spec = {_V2_SPEC_KEYS.get(key, key): value for key, value in job.get("spec", {}).items()}
    if "subjobs" in spec:
        spec["subjobs"] = [to_v2(sub) for sub in spec["subjobs"]]
    status = dict(job.get("status", {}))
    if "phase" in status:
        status["status"] = status.pop("phase")
    if completed is not None:
        status["completionTime"] = completed
    return job | {"apiVersion": "v2", "spec": spec, "status": status}


class DemoCloud:
    """The simulated project: a few jobs at the start, then a new one every `arrival`.

    `project_id` is the project it serves, `clusters` its clusters; `seed`
    makes its job IDs its own, so that two clouds (two simulated regions)
    never share one.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        initial_jobs: int = 4,
        arrival: float = 40.0,
        project_id: str = DEMO_PROJECT_ID,
        clusters: tuple[DemoCluster, ...] = CLUSTERS,
        seed: str = "",
    ) -> None:
        self._clock = clock
        self._epoch = clock()
        self._initial = initial_jobs
        self._arrival = arrival
        self.project_id = project_id
        self.clusters = clusters
        self._job_clusters = tuple(cluster for cluster in clusters if cluster.kind == "cce")
        self._seed = seed
        self._made: dict[str, DemoJob] = {}

    def _job(self, index: int) -> DemoJob:
        started = self._epoch + max(0, index - self._initial + 1) * self._arrival
        if index < self._initial:
            # The first jobs started a little before the demo, at different points.
            started = self._epoch - index * 25.0
        return DemoJob(
            job_id=str(uuid.uuid5(_NAMESPACE, f"{self._seed}job/{index}")),
            template=TEMPLATES[index % len(TEMPLATES)],
            started=started,
            cluster_id=self._job_clusters[index % len(self._job_clusters)].cluster_id,
            occurrence=index // len(TEMPLATES),
        )

    def jobs(self) -> list[DemoJob]:
        """Every job that exists now."""
        now = self._clock()
        count = self._initial + max(0, int((now - self._epoch) // self._arrival))
        while len(self._made) < count:
            job = self._job(len(self._made))
            self._made[job.job_id] = job
        return list(self._made.values())

    def find(self, job_id: str) -> DemoJob | None:
        """Return the job with that ID, if it exists yet."""
        self.jobs()
        return self._made.get(job_id)

    def now(self) -> float:
        """Return the simulated time."""
        return self._clock()


_CLOUD = web.AppKey("cloud", DemoCloud)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"errorCode": code, "errorMessage": message}, status=status)


async def _show_job(request: web.Request) -> web.Response:
    cloud = request.app[_CLOUD]
    if request.headers.get("X-Auth-Token") != DEMO_TOKEN:
        return _error(401, "CCE.01401001", "Authorization failed")
    if request.match_info["project_id"] != request.app[_CLOUD].project_id:
        return _error(403, "CCE.01403001", "Forbidden")
    job = cloud.find(request.match_info["job_id"])
    if job is None:
        return _error(404, "CCE.01404001", "Job not found")
    return web.json_response(job.to_api(cloud.now()))


async def _list_jobs(request: web.Request) -> web.Response:
    cloud = request.app[_CLOUD]
    if request.headers.get("X-Auth-Token") != DEMO_TOKEN:
        return _error(401, "CCE.01401001", "Authorization failed")
    if request.match_info["project_id"] != request.app[_CLOUD].project_id:
        return _error(403, "CCE.01403001", "Forbidden")
    now = cloud.now()
    listed = []
    for job in cloud.jobs():
        v3 = job.to_api(now)
        ended = v3["status"]["phase"] in ("Success", "Failed")
        listed.append(to_v2(v3, v3["metadata"]["updateTimestamp"] if ended else None))
    return web.json_response(listed)


async def _list_clusters(request: web.Request, kind: str) -> web.Response:
    if request.headers.get("X-Auth-Token") != DEMO_TOKEN:
        return _error(401, "CCE.01401001", "Authorization failed")
    if request.match_info["project_id"] != request.app[_CLOUD].project_id:
        return _error(403, "CCE.01403001", "Forbidden")
    clusters = request.app[_CLOUD].clusters
    items = [cluster.to_api() for cluster in clusters if cluster.kind == kind]
    return web.json_response({"kind": "Cluster", "apiVersion": "v3", "items": items})


async def _list_cce_clusters(request: web.Request) -> web.Response:
    return await _list_clusters(request, "cce")


async def _list_autopilot_clusters(request: web.Request) -> web.Response:
    return await _list_clusters(request, "autopilot")


def create_demo_app(cloud: DemoCloud) -> web.Application:
    """Build the simulated API: the v3 job, the v2 job list, the two cluster lists."""
    app = web.Application()
    app[_CLOUD] = cloud
    app.router.add_get("/api/v3/projects/{project_id}/jobs/{job_id}", _show_job)
    app.router.add_get("/api/v2/projects/{project_id}/jobs", _list_jobs)
    app.router.add_get("/api/v3/projects/{project_id}/clusters", _list_cce_clusters)
    app.router.add_get("/autopilot/v3/projects/{project_id}/clusters", _list_autopilot_clusters)
    return app
