"""What both status views show: the JSON of jobs, their groups, order and filters.

Trees are walked as the flat, depth-first list of nodes the model keeps,
never recursively, so no tree can exhaust the stack.
"""

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from exporter.jobs.clusters import EMPTY_DIRECTORY, ClusterDirectory
from exporter.jobs.state import ERROR_KINDS, JobState
from exporter.jobs.tree import JobNode
from exporter.server.statuspage.stuck import stuck_threshold

# Longest filter value read from a query string; the rest is ignored.
MAX_FILTER_CHARS = 200
# Most values of one filter (phase=A&phase=B means either).
MAX_FILTER_VALUES = 20


class Group(enum.IntEnum):
    """Where a job sits on the page: problems first."""

    FAILED = 0
    STUCK = 1
    RUNNING = 2
    SUCCEEDED = 3


GROUP_TITLES = {
    Group.FAILED: "Failed",
    Group.STUCK: "Stuck",
    Group.RUNNING: "Running",
    Group.SUCCEEDED: "Succeeded",
}


def iso_time(seconds: float | None) -> str | None:
    """Format Unix seconds as RFC 3339 UTC, or None."""
    if seconds is None:
        return None
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):  # beyond what a datetime holds
        return None
    return moment.isoformat().replace("+00:00", "Z")


def seconds(nanos: int | None) -> float | None:
    """Unix nanoseconds as seconds, or None."""
    return None if nanos is None else nanos / 1e9


def node_duration(node: JobNode, now: float) -> float | None:
    """Seconds the job took (updated minus created), or has run so far when not finished."""
    if node.created_ns is None:
        return None
    if node.finished:
        if node.updated_ns is None:
            return None
        return max(0.0, (node.updated_ns - node.created_ns) / 1e9)
    return max(0.0, now - node.created_ns / 1e9)


def is_stuck(state: JobState, now: float) -> bool:
    """Tell whether the job is unfinished longer after its creation than its type allows."""
    if state.tree is None:
        return False
    root = state.tree.root
    if root.finished or root.created_ns is None:
        return False
    return now - root.created_ns / 1e9 > stuck_threshold(root.job_type)


def group_of(state: JobState, now: float) -> Group:
    """Return the group of the page a job is shown in."""
    phase = state.tree.root.phase if state.tree is not None else None
    if phase == "Failed":
        return Group.FAILED
    if phase == "Success":
        return Group.SUCCEEDED
    return Group.STUCK if is_stuck(state, now) else Group.RUNNING


def failed_steps(nodes: Sequence[JobNode]) -> list[JobNode]:
    """Return the failed sub-jobs where the failure started: those without a failed sub-job."""
    failed = [node for node in nodes[1:] if node.phase == "Failed"]
    parents = {node.parent_job_id for node in failed}
    return [node for node in failed if node.job_id not in parents]


def node_json(node: JobNode, now: float) -> dict[str, Any]:
    """One node of a job tree, as the JSON API shows it."""
    return {
        "job_id": node.job_id,
        "parent_job_id": node.parent_job_id,
        "depth": node.depth,
        "job_type": node.job_type,
        "cluster_id": node.cluster_id,
        "resource_id": node.resource_id,
        "resource_name": node.resource_name,
        "phase": node.phase,
        "reason": node.reason,
        "message": node.message,
        "created": iso_time(seconds(node.created_ns)),
        "updated": iso_time(seconds(node.updated_ns)),
        "duration_seconds": node_duration(node, now),
        "progress_ratio": node.progress,
        "subjobs": dict(node.subjob_phases) if node.subjob_phases is not None else None,
    }


def job_json(
    state: JobState, now: float, clusters: ClusterDirectory = EMPTY_DIRECTORY
) -> dict[str, Any]:
    """One watched job: how its polls went and its tree, root first, depth-first."""
    nodes = state.tree.nodes if state.tree is not None else ()
    return {
        "job_id": state.job_id,
        "target": state.target,
        "project_id": state.project_id,
        "cluster_name": clusters.name(nodes[0].cluster_id) if nodes else "",
        "api": state.api.value if state.api is not None else None,
        "polls": state.polls,
        "last_poll_ok": state.last_ok if state.polls else None,
        "last_success": iso_time(state.last_success),
        "last_error": state.last_error,
        "last_error_kind": state.last_error_kind.value if state.last_error_kind else None,
        "poll_errors": {
            kind.value: count for kind, count in zip(ERROR_KINDS, state.errors, strict=True)
        },
        "finished": state.finished,
        "finished_at": iso_time(state.finished_at),
        "stuck": is_stuck(state, now),
        "nodes": [node_json(node, now) for node in nodes],
    }


def _values(query: Mapping[str, Sequence[str]], name: str) -> tuple[str, ...]:
    values = (value.strip()[:MAX_FILTER_CHARS] for value in query.get(name, ()))
    return tuple(sorted({value for value in values if value}))[:MAX_FILTER_VALUES]


@dataclass(frozen=True, slots=True)
class Filters:
    """Which jobs a view shows: every filter given must match (and any of its values)."""

    phase: tuple[str, ...] = ()
    type: tuple[str, ...] = ()
    cluster: tuple[str, ...] = ()
    q: str = ""
    target: tuple[str, ...] = ()
    # The cluster IDs that `cluster` (names or IDs) stands for: see `resolved`.
    cluster_ids: frozenset[str] = frozenset()

    @classmethod
    def from_query(cls, query: Mapping[str, Sequence[str]]) -> "Filters":
        """Read the filters of a query string given as each name's list of values."""
        q = _values(query, "q")
        return cls(
            phase=tuple(phase.lower() for phase in _values(query, "phase")),
            type=_values(query, "type"),
            cluster=_values(query, "cluster"),
            q=q[0].lower() if q else "",
            target=_values(query, "target"),
            cluster_ids=frozenset(_values(query, "cluster")),
        )

    def resolved(self, clusters: ClusterDirectory) -> "Filters":
        """Return these filters with each cluster name turned into the IDs it names.

        A value no cluster list shows stands for itself, as an ID.
        """
        ids = frozenset(i for value in self.cluster for i in clusters.resolve(value) or (value,))
        return replace(self, cluster_ids=ids)

    def pairs(self) -> list[tuple[str, str]]:
        """Return the filters as query-string pairs, to keep them in links."""
        pairs = [("target", value) for value in self.target]
        pairs += [("phase", value) for value in self.phase]
        pairs += [("type", value) for value in self.type]
        pairs += [("cluster", value) for value in self.cluster]
        if self.q:
            pairs.append(("q", self.q))
        return pairs

    def matches(self, state: JobState) -> bool:
        """Tell whether the job passes every filter."""
        root = state.tree.root if state.tree is not None else None
        if (
            (self.target and state.target not in self.target)
            or (self.phase and (root is None or (root.phase or "").lower() not in self.phase))
            or (self.type and (root is None or root.job_type not in self.type))
            or (self.cluster and (root is None or root.cluster_id not in self.cluster_ids))
        ):
            return False
        if self.q:
            if self.q in state.job_id.lower():
                return True
            nodes = state.tree.nodes if state.tree is not None else ()
            return any(
                self.q in node.job_id.lower() or self.q in node.resource_name.lower()
                for node in nodes
            )
        return True


NO_FILTERS = Filters()


def _created(state: JobState) -> float:
    if state.tree is not None and state.tree.root.created_ns is not None:
        return state.tree.root.created_ns / 1e9
    # Not read yet: as if created now, so it shows among the newest.
    return float("inf")


def targets_of(states: Iterable[JobState]) -> dict[str, int]:
    """Count the jobs of each target, by name."""
    counts: dict[str, int] = {}
    for state in states:
        counts[state.target] = counts.get(state.target, 0) + 1
    return dict(sorted(counts.items()))


def ordered(states: Iterable[JobState], now: float) -> list[tuple[Group, JobState]]:
    """Return the jobs with their groups, problems first, newest first within a group."""
    grouped = [(group_of(state, now), state) for state in states]
    return sorted(grouped, key=lambda item: (item[0], -_created(item[1]), item[1].job_id))


def jobs_json(
    states: Iterable[JobState],
    project_id: str,
    now: float,
    filters: Filters = NO_FILTERS,
    clusters: ClusterDirectory = EMPTY_DIRECTORY,
) -> dict[str, Any]:
    """Build the whole JSON document of `/api/v1/jobs`."""
    states = list(states)
    return {
        "project_id": project_id,
        "generated_at": iso_time(now),
        "targets": targets_of(states),
        "jobs": [
            job_json(state, now, clusters)
            for _, state in ordered(states, now)
            if filters.matches(state)
        ],
    }


def job_document(
    state: JobState, project_id: str, now: float, clusters: ClusterDirectory = EMPTY_DIRECTORY
) -> dict[str, Any]:
    """Build the JSON document of `/api/v1/jobs/{job_id}`: one watched job."""
    job = job_json(state, now, clusters)
    return {"project_id": project_id, "generated_at": iso_time(now), "job": job}
