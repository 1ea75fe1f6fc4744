"""What the scheduler keeps and is given: its settings, its targets, one slot per job.

`exporter.scheduler` runs the loop; these are its parts that hold no logic of
the loop's own.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from exporter.jobs.ids import Api
from exporter.jobs.state import DEFAULT_TARGET
from exporter.jobs.tree import JobTree

# A job that answers 404 is polled this many times less often at the most.
_MAX_SLOWDOWN = 32


def next_delay(gone_for: float | None, interval: float) -> float:
    """Return the seconds until a job's next poll.

    That is the interval; for a job answering 404 for `gone_for` seconds, as
    long as it has been gone (so the gaps double), between 1 and 32 intervals.
    """
    if gone_for is None:
        return interval
    return min(_MAX_SLOWDOWN * interval, max(interval, gone_for))


class JobReader(Protocol):
    """What the scheduler needs of the client."""

    async def show_job(self, project_id: str, job_id: str, api: Api = Api.CCE) -> JobTree:
        """Read one job tree from the API it lives on."""
        ...

    async def find_job(self, project_id: str, job_id: str) -> tuple[Api, JobTree]:
        """Read one job tree from whichever API knows it, and say which."""
        ...


@dataclass(frozen=True, slots=True)
class PollTarget:
    """A target as the scheduler polls it: its name, project and reader."""

    name: str
    project_id: str
    reader: JobReader


class PollTargets:
    """The targets a scheduler polls, by name: given, or the implicit one of one reader."""

    def __init__(self, reader: JobReader | Sequence[PollTarget], project_id: str) -> None:
        if isinstance(reader, Sequence):
            targets: Sequence[PollTarget] = reader
        else:
            targets = (PollTarget(DEFAULT_TARGET, project_id, reader),)
        if not targets:
            msg = "no target to poll"
            raise ValueError(msg)
        self._targets = {target.name: target for target in targets}
        self.names = tuple(self._targets)

    def get(self, name: str | None) -> PollTarget:
        """Return the target of this name; None names the only one."""
        if name is None:
            if len(self._targets) != 1:
                msg = "several targets: name the job's"
                raise ValueError(msg)
            return next(iter(self._targets.values()))
        return self._targets[name]


@dataclass(slots=True)
class Slot:
    """One watched job, as the scheduler keeps it; times are monotonic."""

    target: PollTarget
    # What named the job (settings, the jobs file, ...): it is watched while any does.
    routes: set[str] = field(default_factory=set)
    due: float | None = None  # when it is next polled; None once finished: never again
    # The earliest its next request may go: an interval after its last one, so
    # no job is asked twice within one.
    not_before: float = -math.inf
    keep_until: float | None = None  # finished: when its series leave
    gone_since: float | None = None  # when its current run of 404 answers began
    in_flight: bool = False
    # The API the job lives on; None until a read finds it (then it is asked there only).
    api: Api | None = None


@dataclass(frozen=True, slots=True)
class PollSettings:
    """How the scheduler polls."""

    project_id: str  # the implicit target's, when the scheduler is given one reader
    poll_interval: float
    poll_concurrency: int
    finished_retention: float
    # Each poll of a pass starts after a random delay of up to this many
    # seconds, so that many jobs due together do not fire at once.
    jitter: float = 1.0
