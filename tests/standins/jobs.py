"""Job objects as the CCE API spells them: v3 by ID, v2 in the job list, and broken bodies."""

import copy
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DATA = Path(__file__).parents[1] / "data"
# The job of the response example on the API page (tests/data/job-example.json).
EXAMPLE_JOB_ID = "354331b2c-229a-11e8-9c75-0255ac100ceb"
# 2025-01-01 10:00:00 UTC: when a job was created, unless told.
CREATED = 1_735_725_600.0
_NS_PER_S = 1_000_000_000
# The v3 spelling of a spec's fields, and the v2 job list's.
_V2_SPEC = {
    "clusterUID": "clusteruid",
    "resourceID": "resourceid",
    "resourceName": "resourcename",
    "extendParam": "extendparam",
    "subJobs": "subjobs",
}


def go_time(moment: float) -> str:
    """Format a Unix time as CCE does: Go's time.Time.String(), to the nanosecond.

    As Go does, the fraction loses its trailing zeros, and its dot when it is zero.
    """
    seconds = math.floor(moment)
    nanos = round((moment - seconds) * _NS_PER_S)
    seconds, nanos = seconds + nanos // _NS_PER_S, nanos % _NS_PER_S
    fraction = f".{nanos:09d}".rstrip("0").rstrip(".")
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%d %H:%M:%S}{fraction} +0000 UTC"


def job_object(
    job_id: str,
    phase: str = "Running",
    sub_jobs: Sequence[Any] | None = None,
    *,
    job_type: str = "CreateNode",
    cluster: str = "c-1",
    created: float = CREATED,
    updated: float | None = None,
    resource_name: str = "",
    resource_id: str = "",
    extend_param: dict[str, str] | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Build a v3 job object as the API answers it, optionally with sub-jobs.

    It was updated a minute after its creation unless told. A resource is named
    only with `resource_name` (its ID `res-<job ID>` unless given); `reason`
    only when given.
    """
    spec: dict[str, Any] = {"type": job_type, "clusterUID": cluster}
    if resource_name:
        spec |= {"resourceID": resource_id or f"res-{job_id}", "resourceName": resource_name}
    if extend_param is not None:
        spec["extendParam"] = extend_param
    if sub_jobs is not None:
        spec["subJobs"] = list(sub_jobs)
    status = {"phase": phase} | ({} if reason is None else {"reason": reason})
    return {
        "kind": "Job",
        "apiVersion": "v3",
        "metadata": {
            "uid": job_id,
            "creationTimestamp": go_time(created),
            "updateTimestamp": go_time(created + 60 if updated is None else updated),
        },
        "spec": spec,
        "status": status,
    }


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
    """Build a job of the project with `subjobs` steps in its phase, in the v3 spelling."""
    updated = created + 60 if updated is None else updated
    steps = [
        job_object(
            f"{job_id}-sub{i}",
            phase,
            job_type="Step",
            cluster="cluster-1",
            created=created,
            updated=updated,
        )
        for i in range(subjobs)
    ]
    return job_object(
        job_id,
        phase,
        steps,
        job_type=job_type,
        cluster="cluster-1",
        created=created,
        updated=updated,
        resource_name="node-a",
        extend_param={"k": "v"},
        reason=reason,
    )


def v2_job(job_id: str, **kwargs: Any) -> dict[str, Any]:
    """Build the job `v3_job` makes (with the same arguments), in the v2 spelling."""
    return as_v2(v3_job(job_id, **kwargs))


def as_v2(job: dict[str, Any]) -> dict[str, Any]:
    """Spell a v3 job object as the v2 job list does; a finished job gets its completion time."""
    listed = copy.deepcopy(job)
    _respell(listed)
    if listed["status"]["status"] in ("Success", "Failed"):
        listed["status"]["completionTime"] = listed["metadata"]["updateTimestamp"]
    return listed


def _respell(job: dict[str, Any]) -> None:
    """Rename a v3 job's fields, and its sub-jobs', to their v2 spelling, in place."""
    job["apiVersion"] = "v2"
    job["spec"] = {_V2_SPEC.get(key, key): value for key, value in job["spec"].items()}
    for sub_job in job["spec"].get("subjobs", ()):
        _respell(sub_job)
    job["status"] = {
        ("status" if key == "phase" else key): value for key, value in job["status"].items()
    }


def example_job() -> dict[str, Any]:
    """The response example of the API page, freshly decoded."""
    data: dict[str, Any] = json.loads((DATA / "job-example.json").read_text())
    return data


def wide_job(job_id: str, count: int) -> dict[str, Any]:
    """A running job with `count` direct sub-jobs, every fifth of them Running."""
    subs = [
        job_object(f"{job_id}-sub-{index}", "Running" if index % 5 == 0 else "Success")
        for index in range(count)
    ]
    return job_object(job_id, sub_jobs=subs)


def empty_subjobs_body(job_id: str, count: int) -> str:
    """The JSON text of a job with `count` sub-jobs that are empty objects: 4 bytes each."""
    return json.dumps(
        {"kind": "Job", "metadata": {"uid": job_id}, "spec": {"subJobs": [{}] * count}}
    )


def deep_job_body(job_id: str, levels: int) -> str:
    """The JSON text of a job whose sub-jobs nest `levels` deep (one sub-job each).

    Built as text: the json module's own encoder refuses such nesting.
    """
    head, tail = [], []
    for level in range(levels):
        head.append(
            f'{{"kind": "Job", "metadata": {{"uid": "{job_id}-{level}"}}, '
            f'"status": {{"phase": "Running"}}, "spec": {{"type": "Level", "subJobs": ['
        )
        tail.append("]}}")
    return "".join(head) + '{"metadata": {"uid": "leaf"}}' + "".join(reversed(tail))
