"""The CCE v3 job object, and its flattening into one record per job node.

Every field is optional and a value of the wrong type costs only that value:
it becomes None and its field is reported as a parse error. A string that is
not Unicode text keeps what it can: its lone surrogates become U+FFFD (see
exporter.text). pydantic validates one node at a time; the walk over `subJobs`
is an explicit loop, since pydantic's own recursion stops at a few hundred
levels and a job tree must not be able to exhaust the stack. The walk also
counts the nodes and gives up on a tree of more than MAX_NODES.
"""

from abc import abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    WrapValidator,
)

from exporter.errors import valid_text
from exporter.jobs.timestamps import GO_ZERO_TIME_NS, parse_timestamp

PHASES = ("Initializing", "Running", "Success", "Failed")
TERMINAL_PHASES = frozenset({"Success", "Failed"})

# The most nodes one job tree may have: the job and every entry of its sub-job
# lists, at any depth. Real CCE jobs have a few thousand sub-jobs at most
# (inferred: about one per node or step, and a cluster's nodes number in the
# low thousands); the tests export a tree of 5,000 in full, and this leaves
# four times that. At the cap one tree costs under half a second to flatten,
# 0.15 s to render and 20 MB of /metrics; without it, a 16 MiB answer holds
# millions of nodes, and 2 MB of `subJobs: [{}, ...]` alone made /metrics
# 300 MB and blocked the event loop for seconds at every render.
MAX_NODES = 20_000


# The longest label value taken from a job: its type, cluster, resource, phase,
# reason and sub-job IDs are cut to this many characters as they are read.
MAX_LABEL_CHARS = 200
# The longest reason kept for the status pages and logs (its label is cut to
# MAX_LABEL_CHARS like any other).
MAX_REASON_CHARS = 4096


def label(text: str | None) -> str:
    """Return a label value read from the API, cut to MAX_LABEL_CHARS; None is empty."""
    return (text or "")[:MAX_LABEL_CHARS]


class InvalidJobError(ValueError):
    """The API answered something that is not a job at all."""


_SECTIONS = frozenset({"metadata", "spec", "status"})


def _invalid(info: ValidationInfo) -> None:
    """Record the name of a field whose value did not validate; the field stays empty."""
    if isinstance(info.context, list):
        section = info.config.get("title") if info.config else None
        field = str(info.field_name)
        info.context.append(f"{section}.{field}" if section in _SECTIONS else field)


def _lenient(value: Any, handler: Any, info: ValidationInfo) -> Any:
    """Validate a field; on failure record its name and leave the field empty."""
    try:
        return handler(value)
    except ValidationError:
        _invalid(info)
        return None


def _lenient_text(value: Any, handler: Any, info: ValidationInfo) -> str | None:
    """Validate a text field as `_lenient` does; the string is made encodable."""
    try:
        text: str | None = handler(value)
    except ValidationError:
        _invalid(info)
        return None
    # One validator rather than two for the most common field; and most text
    # is ASCII, which a flag of the string tells at once.
    return text if text is None or text.isascii() else valid_text(text)


Lenient = WrapValidator(_lenient)
# A string from the API, made encodable (see exporter.text).
ApiStr = Annotated[str, AfterValidator(valid_text)]
Text = Annotated[str | None, WrapValidator(_lenient_text)]


class JobMetadata(BaseModel):
    """`metadata` of a job."""

    model_config = ConfigDict(extra="ignore", frozen=True, title="metadata")

    uid: Text = None
    creationTimestamp: Text = None  # noqa: N815 - the API's own spelling
    updateTimestamp: Text = None  # noqa: N815 - the API's own spelling


class JobSpec(BaseModel):
    """`spec` of a v3 job; `subJobs` stays raw and is walked by `flatten`."""

    model_config = ConfigDict(extra="ignore", frozen=True, title="spec")

    type: Text = None
    clusterUID: Text = None  # noqa: N815 - the API's own spelling
    resourceID: Text = None  # noqa: N815 - the API's own spelling
    resourceName: Text = None  # noqa: N815 - the API's own spelling
    extendParam: Annotated[dict[ApiStr, ApiStr] | None, Lenient] = None  # noqa: N815
    subJobs: Annotated[list[Any] | None, Lenient] = None  # noqa: N815


class JobStatus(BaseModel):
    """`status` of a v3 job."""

    model_config = ConfigDict(extra="ignore", frozen=True, title="status")

    phase: Text = None
    reason: Text = None
    # Details of the current state: not in the official SDK, seen in clients.
    message: Text = None


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the flattening needs of one job node, whichever API spelled it."""

    uid: str | None
    job_type: str
    cluster_id: str
    resource_id: str
    resource_name: str
    phase: str | None
    reason: str
    created: str | None
    updated: str | None
    subjobs: tuple[Any, ...]  # the sub-jobs, still raw JSON
    message: str = ""


class JobModel(BaseModel):
    """A job node of either API version: it tells its facts in one spelling."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # Where the sub-jobs are, to name the field when one is not an object.
    SUBJOBS_FIELD: ClassVar[str]

    @abstractmethod
    def facts(self) -> NodeFacts:
        """Return the node's facts for flattening."""


class Job(JobModel):
    """One v3 job node, as `GET /api/v3/projects/{project_id}/jobs/{job_id}` answers."""

    SUBJOBS_FIELD: ClassVar[str] = "spec.subJobs"

    kind: Text = None
    apiVersion: Text = None  # noqa: N815 - the API's own spelling
    metadata: Annotated[JobMetadata | None, Lenient] = None
    spec: Annotated[JobSpec | None, Lenient] = None
    status: Annotated[JobStatus | None, Lenient] = None

    def facts(self) -> NodeFacts:
        """Return the node's facts for flattening."""
        meta = self.metadata or JobMetadata()
        spec = self.spec or JobSpec()
        status = self.status or JobStatus()
        return NodeFacts(
            uid=label(meta.uid) or None,
            job_type=label(spec.type),
            cluster_id=label(spec.clusterUID),
            resource_id=label(spec.resourceID),
            resource_name=label(spec.resourceName),
            phase=label(status.phase) or None,
            reason=(status.reason or "")[:MAX_REASON_CHARS],
            created=meta.creationTimestamp,
            updated=meta.updateTimestamp,
            subjobs=tuple(spec.subJobs or ()),
            message=(status.message or "")[:MAX_REASON_CHARS],
        )


@dataclass(frozen=True, slots=True)
class JobNode:
    """One node of a job tree, flattened: the job and where it sits in the tree."""

    job_id: str
    parent_job_id: str
    depth: int
    job_type: str
    cluster_id: str
    resource_id: str
    resource_name: str
    phase: str | None
    reason: str
    created_ns: int | None
    updated_ns: int | None
    # Direct sub-jobs by phase, the four known phases first and always present;
    # None for a job without sub-jobs.
    subjob_phases: tuple[tuple[str, int], ...] | None
    # Every direct sub-job, with a phase or not.
    subjob_total: int = 0
    # `status.message`, for the status pages only (no metric carries it).
    message: str = ""

    @property
    def progress(self) -> float | None:
        """Share of all direct sub-jobs in Success; None for a job without sub-jobs."""
        if not self.subjob_total or self.subjob_phases is None:
            return None
        return dict(self.subjob_phases)["Success"] / self.subjob_total

    @property
    def finished(self) -> bool:
        """Tell whether the job reached a terminal phase."""
        return self.phase in TERMINAL_PHASES


# Weakly referable: exporter.jobs.answers keeps each tree only as long as it lives.
@dataclass(frozen=True, slots=True, weakref_slot=True)
class JobTree:
    """A watched job and all its sub-jobs, root first, with what did not parse."""

    nodes: tuple[JobNode, ...]
    parse_errors: tuple[str, ...]

    @property
    def root(self) -> JobNode:
        """The watched job itself."""
        return self.nodes[0]


def _phase_counts(children: Iterable[NodeFacts]) -> tuple[tuple[str, int], ...]:
    counts = dict.fromkeys(PHASES, 0)
    for child in children:
        if child.phase:
            counts[child.phase] = counts.get(child.phase, 0) + 1
    return tuple(counts.items())


def _timestamp(value: str | None, field: str, errors: list[str]) -> int | None:
    """Read a timestamp field; Go's zero time is a time never set, as if absent."""
    if value is None:
        return None
    parsed = parse_timestamp(value)
    if parsed is None:
        errors.append(field)
    elif parsed == GO_ZERO_TIME_NS:
        return None
    return parsed


def flatten(data: object, job_id: str, model: type[JobModel] = Job) -> JobTree:
    """Turn the decoded JSON of a job into a `JobTree`; the root is named `job_id`.

    `model` says which API version spelled the job (v3 by default). Raises
    InvalidJobError when `data` is not a job object at all, or when the tree
    has more than MAX_NODES nodes: found as soon as a sub-job list takes the
    count past the cap, before its entries are validated.
    """
    if not isinstance(data, dict):
        msg = f"expected a job object, got {type(data).__name__}"
        raise InvalidJobError(msg)
    if not any(isinstance(data.get(key), dict) for key in ("metadata", "spec", "status")):
        msg = "the object has none of metadata, spec or status"
        raise InvalidJobError(msg)
    errors: list[str] = []
    nodes: list[JobNode] = []
    seen = {job_id}
    # Depth-first with an explicit stack: (facts, the node's ID, parent's ID, depth).
    root = model.model_validate(data, context=errors).facts()
    stack: list[tuple[NodeFacts, str, str, int]] = [(root, job_id, "", 0)]
    count = 1  # the nodes met so far: the root and every sub-job entry listed
    while stack:
        facts, node_id, parent_id, depth = stack.pop()
        count += len(facts.subjobs)
        if count > MAX_NODES:
            msg = f"job tree has more than {MAX_NODES} nodes"
            raise InvalidJobError(msg)
        children: list[NodeFacts] = []
        for raw in facts.subjobs:
            if isinstance(raw, dict):
                children.append(model.model_validate(raw, context=errors).facts())
            else:
                errors.append(model.SUBJOBS_FIELD)
        nodes.append(
            JobNode(
                job_id=node_id,
                parent_job_id=parent_id,
                depth=depth,
                job_type=facts.job_type,
                cluster_id=facts.cluster_id,
                resource_id=facts.resource_id,
                resource_name=facts.resource_name,
                phase=facts.phase,
                reason=facts.reason,
                created_ns=_timestamp(facts.created, "metadata.creationTimestamp", errors),
                updated_ns=_timestamp(facts.updated, "metadata.updateTimestamp", errors),
                subjob_phases=_phase_counts(children) if children else None,
                subjob_total=len(children),
                message=facts.message,
            )
        )
        # Reversed so that the stack pops them in document order.
        for index in range(len(children) - 1, -1, -1):
            uid = children[index].uid
            child_id = uid if uid and uid not in seen else f"{node_id}.{index}"
            if not uid or uid in seen:
                errors.append("metadata.uid")
            while child_id in seen:  # a sibling's real uid may look like our made-up one
                child_id += "_"
            seen.add(child_id)
            stack.append((children[index], child_id, node_id, depth + 1))
    return JobTree(nodes=tuple(nodes), parse_errors=tuple(errors))


__all__ = [
    "MAX_LABEL_CHARS",
    "MAX_NODES",
    "MAX_REASON_CHARS",
    "PHASES",
    "TERMINAL_PHASES",
    "ApiStr",
    "InvalidJobError",
    "Job",
    "JobMetadata",
    "JobModel",
    "JobNode",
    "JobTree",
    "Lenient",
    "NodeFacts",
    "Text",
    "flatten",
    "label",
]
