"""Jobs that move on the stand-in CCE API: started Running, then ended Success or Failed.

`Lifecycle` writes each change into a `FakeCCE`: the v3 job served by its ID
and, when listed, the v2 element of the job list, both stamped with the time
of a test clock.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tests.standins.cce import FakeCCE
from tests.standins.jobs import as_v2, job_object

FAILURE_REASON = "Something bad happened at server, recycle resource"


@dataclass
class _Job:
    job_type: str
    cluster: str
    created: float
    steps: tuple[str, ...]
    listed: bool


class Lifecycle:
    """Starts jobs on a stand-in API and ends them, as the test's clock says."""

    def __init__(self, api: FakeCCE, clock: Callable[[], float]) -> None:
        self._api = api
        self._clock = clock
        self._jobs: dict[str, _Job] = {}

    def start(
        self,
        job_id: str,
        *,
        job_type: str = "CreateNode",
        cluster: str = "c-1",
        steps: Sequence[str] = ("CreateServer", "InstallNode"),
        listed: bool = False,
        created: float | None = None,
    ) -> None:
        """Serve a new job, Running (its first step too, the others Initializing)."""
        now = self._clock()
        job = _Job(job_type, cluster, now if created is None else created, tuple(steps), listed)
        self._jobs[job_id] = job
        phases = ["Running", *["Initializing"] * (len(job.steps) - 1)][: len(job.steps)]
        self._serve(job_id, "Running", phases, updated=now)

    def succeed(self, job_id: str) -> None:
        """End a job Success now, every step with it."""
        job = self._jobs[job_id]
        self._serve(job_id, "Success", ["Success"] * len(job.steps), updated=self._clock())

    def fail(self, job_id: str, failed_steps: Sequence[int] = (-1,)) -> None:
        """End a job Failed now: the steps at `failed_steps` Failed, the others Success."""
        job = self._jobs[job_id]
        count = len(job.steps)
        failing = {index % count for index in failed_steps}
        phases = ["Failed" if index in failing else "Success" for index in range(count)]
        self._serve(job_id, "Failed", phases, updated=self._clock(), reason=FAILURE_REASON)

    def _serve(
        self,
        job_id: str,
        phase: str,
        step_phases: Sequence[str],
        *,
        updated: float,
        reason: str | None = None,
    ) -> None:
        job = self._jobs[job_id]
        subs = [
            job_object(
                f"{job_id}-step{index}",
                step_phase,
                job_type=step,
                cluster=job.cluster,
                created=job.created,
                updated=updated,
                reason=reason if step_phase == "Failed" else None,
            )
            for index, (step, step_phase) in enumerate(zip(job.steps, step_phases, strict=True))
        ]
        body = job_object(
            job_id,
            phase,
            subs,
            job_type=job.job_type,
            cluster=job.cluster,
            created=job.created,
            updated=updated,
            reason=reason,
        )
        self._api.jobs[job_id] = body
        if job.listed:
            self._api.listing = [item for item in self._api.listing if _uid(item) != job_id]
            self._api.listing.append(as_v2(body))


def _uid(item: Any) -> Any:
    return item.get("metadata", {}).get("uid") if isinstance(item, dict) else None
