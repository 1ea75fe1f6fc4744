"""The system tests' scenario: six watched jobs, each answering its own way, and a webhook.

The end-to-end and browser tests run the real exporter as a subprocess
against this scenario's stand-in CCE API, and let Alertmanager notify the
webhook; both are served from a thread while the test waits on the programs.

The API also lists three named clusters (one `Unavailable`, one Autopilot),
and serves MOVING_JOBS for the tests that watch them too: each answers
Running to its first read and has ended (one Success, one Failed with failed
steps) from its second read on, so that the exporter sees it end and counts
it in its history.
"""

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.standins.cce import PROJECT_ID, FakeCCE, Fault
from tests.standins.jobs import job_object
from tests.standins.lifecycle import Lifecycle
from tests.standins.processes import serving_in_thread

CLUSTER_A = "4d1ecb2c-229a-11e8-9c75-0255ac100ceb"
CLUSTER_B = "7ec8b73d-83db-11f0-8baa-0255ac10003e"
FAILURE_REASON = "Something bad happened at server, recycle resource"

# What each watched job answers.
FAILED_JOB = "job-failed-1"
STUCK_JOB = "job-stuck-1"
FAILING_JOB = "job-unreadable-1"
THROTTLED_JOB = "job-throttled-1"
DONE_JOB = "job-done-1"
RUNNING_JOB = "job-running-1"
SCENARIO_JOBS = (FAILED_JOB, STUCK_JOB, FAILING_JOB, THROTTLED_JOB, DONE_JOB, RUNNING_JOB)

# The clusters the API lists: (ID, name, kind, phase).
CLUSTER_AUTOPILOT = "a7f3c2e1-5b4d-4c3a-9e8f-0255ac100a01"
CLUSTERS = (
    (CLUSTER_A, "prod-eu", "cce", "Available"),
    (CLUSTER_B, "edge", "cce", "Unavailable"),
    (CLUSTER_AUTOPILOT, "serverless", "autopilot", "Available"),
)

# Jobs that end while watched: Running at their first read, ended from the second.
SUCCEEDING_JOB = "job-moving-ok-1"
FAILING_STEPS_JOB = "job-moving-failed-1"
MOVING_JOBS = (SUCCEEDING_JOB, FAILING_STEPS_JOB)
# How long the moving jobs had been running when the scenario began.
MOVING_AGE = 600.0


def _job(
    uid: str, job_type: str, phase: str, created: float, updated: float, **kwargs: Any
) -> dict[str, Any]:
    """A job of the scenario, on cluster A unless told."""
    kwargs.setdefault("cluster", CLUSTER_A)
    return job_object(uid, phase, job_type=job_type, created=created, updated=updated, **kwargs)


def readable_jobs(now: float) -> dict[str, dict[str, Any]]:
    """The scenario's jobs that answer with a job object, as they are at `now`."""
    hour = 3600.0
    return {
        FAILED_JOB: _job(
            FAILED_JOB,
            "CreateCluster",
            "Failed",
            now - 0.7 * hour,
            now - 0.2 * hour,
            resource_name="prod-cluster",
            reason=FAILURE_REASON,
            sub_jobs=(
                _job("sub-f-0", "CreatePSMCert", "Success", now - 0.7 * hour, now - 0.6 * hour),
                _job(
                    "sub-f-1",
                    "InstallMaster",
                    "Failed",
                    now - 0.7 * hour,
                    now - 0.2 * hour,
                    reason=FAILURE_REASON,
                ),
            ),
        ),
        STUCK_JOB: _job(
            STUCK_JOB,
            "CreateNode",
            "Running",
            now - 3 * hour,
            now - 2.9 * hour,
            cluster=CLUSTER_B,
            resource_name="node-7",
            sub_jobs=(
                _job("sub-s-0", "CreateServer", "Success", now - 3 * hour, now - 2.9 * hour),
                _job("sub-s-1", "InstallNode", "Running", now - 3 * hour, now - 2.9 * hour),
            ),
        ),
        # Started long ago, finished within the retention: no alert may fire for it.
        DONE_JOB: _job(
            DONE_JOB,
            "UpgradeCluster",
            "Success",
            now - 9 * hour,
            now - 0.5 * hour,
            resource_name="prod-cluster",
            sub_jobs=(
                _job("sub-d-0", "UpgradeMaster", "Success", now - 9 * hour, now - 8.5 * hour),
                _job("sub-d-1", "UpgradeNodes", "Success", now - 9 * hour, now - 0.5 * hour),
            ),
        ),
        # Under way and young: no alert either.
        RUNNING_JOB: _job(
            RUNNING_JOB,
            "ScaleupCluster",
            "Running",
            now - 600,
            now - 60,
            cluster=CLUSTER_B,
            resource_name="node-pool-a",
            sub_jobs=(
                _job("sub-r-0", "CreateServer", "Success", now - 600, now - 300),
                _job("sub-r-1", "InstallNode", "Running", now - 300, now - 60),
            ),
        ),
    }


def scenario_api() -> FakeCCE:
    """The stand-in API of the scenario: the readable jobs, the unreadable and throttled ones."""
    api = FakeCCE(project_id=PROJECT_ID)
    json_body = {"Content-Type": "application/json"}
    api.faults = {
        FAILING_JOB: Fault(
            500,
            json.dumps({"errorCode": "CCE.01500001", "errorMessage": "Internal error"}),
            headers=json_body,
        ),
        THROTTLED_JOB: Fault(
            429,
            json.dumps(
                {"error_code": "APIG.0308", "error_msg": "policy user over ratelimit,limit:60"}
            ),
            headers=json_body,
        ),
    }
    for cluster_id, name, kind, phase in CLUSTERS:
        api.clusters.add(cluster_id, name, kind=kind, phase=phase)
    moving = Lifecycle(api, time.time)
    started = time.time() - MOVING_AGE
    moving.start(SUCCEEDING_JOB, job_type="CreateNode", cluster=CLUSTER_A, created=started)
    moving.start(
        FAILING_STEPS_JOB,
        job_type="ScaleupCluster",
        cluster=CLUSTER_B,
        steps=("CreateServer", "InstallNode", "InstallAddons"),
        created=started,
    )

    def on_request(request: web.Request) -> None:
        # The jobs are built again for every request: their ages are kept as the clock moves.
        api.jobs.update(readable_jobs(time.time()))
        job_id = request.match_info["job_id"]
        if job_id in MOVING_JOBS and api.requests[job_id] == 2:
            if job_id == SUCCEEDING_JOB:
                moving.succeed(job_id)
            else:
                moving.fail(job_id, failed_steps=(1, 2))

    api.on_request = on_request
    return api


@dataclass
class Webhook:
    """An Alertmanager webhook receiver that keeps every notification."""

    notifications: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def receive(self, request: web.Request) -> web.Response:
        """Keep one notification."""
        payload = await request.json()
        with self.lock:
            self.notifications.append(payload)
        return web.Response(text="ok")

    def app(self) -> web.Application:
        """Build the aiohttp application."""
        app = web.Application()
        app.router.add_post("/webhook", self.receive)
        return app


@dataclass
class Servers:
    """The running stand-in API and webhook, and what the webhook received."""

    api_url: str
    webhook_url: str
    webhook: Webhook

    def received(self) -> list[dict[str, Any]]:
        """Return a copy of the webhook notifications received so far."""
        with self.webhook.lock:
            return list(self.webhook.notifications)


@contextmanager
def serving() -> Iterator[Servers]:
    """Run the scenario's API and the webhook on loopback until the block ends."""
    webhook = Webhook()
    with serving_in_thread(scenario_api().app(), webhook.app()) as (api_url, hook_url):
        yield Servers(api_url, f"{hook_url}/webhook", webhook)
