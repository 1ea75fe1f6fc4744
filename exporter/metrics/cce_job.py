"""Every cce_job_* family: declared here under its exposed name, and rendered here.

One watched job renders to one chunk of text per family, written exactly as
prometheus-client would write the same series (labels sorted, values as Go
floats); `exporter.metrics.exposition` caches the chunks and serves them. The
families of the job tree come first and are rendered from the tree alone
(`render_tree`), so that a poll that read the same tree again renders only
the three polling families (`render_polls`).

The sparse form (`sparse_metrics`) is the dense form without the zeros that
say nothing new: of `cce_job_status_phase` only the current phase, of
`cce_job_subjobs` only the phases some sub-job is in, of
`cce_job_poll_errors_total` only the kinds of error that happened.
"""

from collections.abc import Callable
from enum import Enum
from typing import cast

from prometheus_client.utils import floatToGoString

from exporter.jobs.state import ERROR_KINDS, JobState
from exporter.jobs.tree import MAX_LABEL_CHARS, PHASES, JobNode, JobTree

# prometheus-client ships this without annotations.
_go_float = cast(Callable[[float], str], floatToGoString)

REASON_MAX_CHARS = MAX_LABEL_CHARS


class Family(Enum):
    """Every per-job metric family: (name, type, help). Output follows this order."""

    INFO = (
        "cce_job_info",
        "gauge",
        "Each job and sub-job with its place in the tree, type, cluster, resource, API; always 1.",
    )
    PHASE = (
        "cce_job_status_phase",
        "gauge",
        "Phase of a job: 1 for the current phase, 0 for the others.",
    )
    CREATED = (
        "cce_job_created_timestamp_seconds",
        "gauge",
        "When the job was created, in Unix seconds.",
    )
    UPDATED = (
        "cce_job_updated_timestamp_seconds",
        "gauge",
        "When the job was last updated, in Unix seconds.",
    )
    DURATION = (
        "cce_job_duration_seconds",
        "gauge",
        "Time from creation to last update of the job.",
    )
    SUBJOBS = (
        "cce_job_subjobs",
        "gauge",
        "Direct sub-jobs of a job by phase.",
    )
    PROGRESS = (
        "cce_job_progress_ratio",
        "gauge",
        "Share of the direct sub-jobs of a job that succeeded.",
    )
    REASON = (
        "cce_job_status_reason_info",
        "gauge",
        "Why a job is in its phase, while the API gives a reason; always 1.",
    )
    POLL_SUCCESS = (
        "cce_job_poll_success",
        "gauge",
        "1 if the last poll of a watched job returned a valid job, else 0.",
    )
    LAST_SUCCESS = (
        "cce_job_last_poll_success_timestamp_seconds",
        "gauge",
        "When a watched job was last polled successfully, in Unix seconds.",
    )
    POLL_ERRORS = (
        "cce_job_poll_errors_total",
        "counter",
        "Failed polls of a watched job by kind of error.",
    )

    def header(self, *, openmetrics: bool) -> str:
        """Return the HELP and TYPE lines of the family."""
        name, kind, text = self.value
        if openmetrics and kind == "counter":
            name = name.removesuffix("_total")
        return f"# HELP {name} {text}\n# TYPE {name} {kind}\n"


FAMILIES = tuple(Family)


def _escape(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _seconds(nanos: int) -> str:
    # int / int is correctly rounded; nanos / 1e9 would round nanos to a float first.
    return _go_float(nanos / 1_000_000_000)


# The families of the job tree, then those of its polls: FAMILIES in this order.
TREE_FAMILIES = FAMILIES[: FAMILIES.index(Family.POLL_SUCCESS)]
POLL_FAMILIES = FAMILIES[len(TREE_FAMILIES) :]


def render_job(state: JobState, *, sparse: bool = False) -> tuple[bytes, ...]:
    """Render every series of one watched job: one chunk per family, in the order of FAMILIES.

    Its `project_id` is the job's own, its target's project.
    """
    api = state.api.value if state.api is not None else ""
    tree = render_tree(state.tree, state.job_id, state.project_id, api=api, sparse=sparse)
    return tree + render_polls(state, sparse=sparse)


def render_tree(
    tree: JobTree | None,
    root_job_id: str,
    project_id: str,
    *,
    api: str = "",
    sparse: bool = False,
) -> tuple[bytes, ...]:
    """Render the series of a job tree (on job API `api`): one chunk per family of TREE_FAMILIES."""
    lines: dict[Family, list[str]] = {family: [] for family in TREE_FAMILIES}
    p = _escape(project_id)
    root_id = _escape(root_job_id)
    if tree is not None:
        for node in tree.nodes:
            _render_node(lines, node, p, root_id, api, sparse=sparse)
    return tuple("".join(lines[family]).encode() for family in TREE_FAMILIES)


def render_polls(state: JobState, *, sparse: bool = False) -> tuple[bytes, ...]:
    """Render the polling series of a watched job (of its own project): POLL_FAMILIES' chunks."""
    lines: dict[Family, list[str]] = {family: [] for family in POLL_FAMILIES}
    # Labels in sorted order, as prometheus-client writes them.
    poll = f'job_id="{_escape(state.job_id)}",project_id="{_escape(state.project_id)}"'
    if state.polls:
        lines[Family.POLL_SUCCESS].append(
            f"cce_job_poll_success{{{poll}}} {float(state.last_ok)}\n"
        )
    if state.last_success is not None:
        lines[Family.LAST_SUCCESS].append(
            f"cce_job_last_poll_success_timestamp_seconds{{{poll}}} "
            f"{_go_float(state.last_success)}\n"
        )
    lines[Family.POLL_ERRORS] = [
        f'cce_job_poll_errors_total{{error="{kind.value}",{poll}}} {float(count)}\n'
        for kind, count in zip(ERROR_KINDS, state.errors, strict=True)
        if count or not sparse
    ]
    return tuple("".join(lines[family]).encode() for family in POLL_FAMILIES)


def _render_node(
    lines: dict[Family, list[str]],
    node: JobNode,
    p: str,
    root_id: str,
    api: str,
    *,
    sparse: bool,
) -> None:
    # Labels in sorted order, as prometheus-client writes them.
    job = f'job_id="{_escape(node.job_id)}",job_type="{_escape(node.job_type)}"'
    tail = f'project_id="{p}",root_job_id="{root_id}"'
    base = f"{job},{tail}"
    lines[Family.INFO].append(
        f'cce_job_info{{api="{api}",cluster_id="{_escape(node.cluster_id)}",'
        f'depth="{node.depth}",{job},'
        f'parent_job_id="{_escape(node.parent_job_id)}",project_id="{p}",'
        f'resource_id="{_escape(node.resource_id)}",'
        f'resource_name="{_escape(node.resource_name)}",root_job_id="{root_id}"}} 1.0\n'
    )
    phase_lines = lines[Family.PHASE]
    for phase in PHASES:
        value = "1.0" if node.phase == phase else "0.0"
        if sparse and value == "0.0":
            continue
        phase_lines.append(f'cce_job_status_phase{{{job},phase="{phase}",{tail}}} {value}\n')
    if node.phase is not None and node.phase not in PHASES:
        phase_lines.append(
            f'cce_job_status_phase{{{job},phase="{_escape(node.phase)}",{tail}}} 1.0\n'
        )
    if node.created_ns is not None:
        lines[Family.CREATED].append(
            f"cce_job_created_timestamp_seconds{{{base}}} {_seconds(node.created_ns)}\n"
        )
    if node.updated_ns is not None:
        lines[Family.UPDATED].append(
            f"cce_job_updated_timestamp_seconds{{{base}}} {_seconds(node.updated_ns)}\n"
        )
    if node.created_ns is not None and node.updated_ns is not None:
        lines[Family.DURATION].append(
            f"cce_job_duration_seconds{{{base}}} {_seconds(node.updated_ns - node.created_ns)}\n"
        )
    for phase, count in node.subjob_phases or ():
        if sparse and not count:
            continue
        lines[Family.SUBJOBS].append(
            f'cce_job_subjobs{{{job},phase="{_escape(phase)}",{tail}}} {float(count)}\n'
        )
    progress = node.progress
    if progress is not None:
        lines[Family.PROGRESS].append(f"cce_job_progress_ratio{{{base}}} {_go_float(progress)}\n")
    if node.reason:
        reason = _escape(node.reason[:REASON_MAX_CHARS])
        lines[Family.REASON].append(
            f'cce_job_status_reason_info{{{job},project_id="{p}",reason="{reason}",'
            f'root_job_id="{root_id}"}} 1.0\n'
        )
