"""Immutable per-job snapshots, and the store that holds the latest of each."""

from collections.abc import Iterator
from dataclasses import dataclass, replace

from exporter.errors import ErrorKind
from exporter.jobs.ids import Api
from exporter.jobs.tree import JobTree

ERROR_KINDS = tuple(ErrorKind)
# The name of the one target that settings without `targets` form
# (`exporter.settings.targets.IMPLICIT_TARGET`).
DEFAULT_TARGET = "default"


def ended_at(end_ns: int | None, now: float) -> float:
    """Return when a job found already finished ended: `end_ns`, no later than `now`.

    `now` when the end time is unknown. Retention counts from this moment for
    a job that the exporter never saw unfinished, whichever route named it.
    """
    return now if end_ns is None else min(now, end_ns / 1e9)


@dataclass(frozen=True, slots=True)
class JobState:
    """What is known of one watched job: its last good tree and how its polls went.

    A poll makes a new JobState; nothing changes one in place, so a scrape
    renders from a consistent view without locks.
    """

    job_id: str
    tree: JobTree | None = None
    polls: int = 0
    last_ok: bool = False
    last_success: float | None = None
    # Failed polls by kind, in the order of ERROR_KINDS.
    errors: tuple[int, ...] = (0,) * len(ERROR_KINDS)
    last_error: str | None = None
    last_error_kind: ErrorKind | None = None
    # Times are wall-clock (time.time). The scheduler counts retention and the
    # 404 slow-down on its monotonic clock from the moments these are set.
    # finished_at is when retention starts: when the exporter saw the job
    # finish, or when it ended if it was finished at its first good read.
    finished_at: float | None = None
    # Failed polls in a row, and when the current run of 404 answers began (a
    # job the API no longer knows is polled ever more rarely, then dropped).
    streak: int = 0
    vanished_at: float | None = None
    # The API the job lives on, once a read found it there.
    api: Api | None = None
    # Where the job lives: the target that watches it, and that target's project.
    target: str = DEFAULT_TARGET
    project_id: str = ""

    @property
    def finished(self) -> bool:
        """Tell whether the job reached Success or Failed (and is polled no more)."""
        return self.finished_at is not None

    @property
    def failing(self) -> bool:
        """Tell whether the last poll failed."""
        return self.polls > 0 and not self.last_ok

    def succeeded(self, tree: JobTree, now: float, api: Api | None = None) -> "JobState":
        """Return the state after a poll that read `tree` at `now` (from `api`, if told).

        A job seen unfinished before counts as finished from `now`; one that is
        finished at its first good read, from its own last update.
        """
        finished_at = self.finished_at
        if finished_at is None and tree.root.finished:
            seen_running = self.tree is not None
            finished_at = now if seen_running else ended_at(tree.root.updated_ns, now)
        return replace(
            self,
            tree=tree,
            polls=self.polls + 1,
            last_ok=True,
            last_success=now,
            finished_at=finished_at,
            streak=0,
            vanished_at=None,
            api=api or self.api,
        )

    def failed(self, kind: ErrorKind, message: str, now: float) -> "JobState":
        """Return the state after a poll that failed at `now`; the last good tree is kept."""
        index = ERROR_KINDS.index(kind)
        errors = (*self.errors[:index], self.errors[index] + 1, *self.errors[index + 1 :])
        # Only a good answer ends a run of 404s: a timeout or a refused request
        # in between says nothing of whether the job came back.
        vanished_at = self.vanished_at
        if kind is ErrorKind.NOT_FOUND and vanished_at is None:
            vanished_at = now
        return replace(
            self,
            polls=self.polls + 1,
            last_ok=False,
            errors=errors,
            last_error=message,
            last_error_kind=kind,
            streak=self.streak + 1,
            vanished_at=vanished_at,
        )


class JobStore:
    """The latest JobState of every watched job, replaced whole on every poll."""

    def __init__(self) -> None:
        self._states: dict[str, JobState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._states

    def __iter__(self) -> Iterator[JobState]:
        """Iterate over a copy, so that the store may change meanwhile."""
        return iter(list(self._states.values()))

    def get(self, job_id: str) -> JobState | None:
        """Return the state of a job, or None when it is not watched."""
        return self._states.get(job_id)

    def put(self, state: JobState) -> None:
        """Store `state` as the latest of its job."""
        self._states[state.job_id] = state

    def remove(self, job_id: str) -> None:
        """Stop holding a job; its series go with it."""
        self._states.pop(job_id, None)
