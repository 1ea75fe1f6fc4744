"""The CCE v2 job object, as the job list (`GET /api/v2/projects/{project_id}/jobs`) gives it.

The v2 object carries the same facts as the v3 one under other spellings
(`spec.clusteruid`, `spec.subjobs`, `status.status`, ...). It is modelled here on
its own, never mixed with the v3 model; what the two share is the flattened
`JobTree` that the metrics are rendered from. Like the v3 model, every field
is optional and a value of the wrong type costs only that value.
"""

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from exporter.errors import valid_text
from exporter.jobs.timestamps import is_zero_time, parse_timestamp
from exporter.jobs.tree import (
    TERMINAL_PHASES,
    ApiStr,
    InvalidJobError,
    JobMetadata,
    JobModel,
    JobTree,
    Lenient,
    NodeFacts,
    Text,
    flatten,
)


class V2JobSpec(BaseModel):
    """`spec` of a v2 job; `subjobs` stays raw and is walked by `flatten_v2`."""

    model_config = ConfigDict(extra="ignore", frozen=True, title="spec")

    type: Text = None
    clusteruid: Text = None
    resourceid: Text = None
    resourcename: Text = None
    extendparam: Annotated[dict[ApiStr, ApiStr] | None, Lenient] = None
    subjobs: Annotated[list[Any] | None, Lenient] = None


class V2JobStatus(BaseModel):
    """`status` of a v2 job: `status` is the v3 `phase`, plus a completion time."""

    model_config = ConfigDict(extra="ignore", frozen=True, title="status")

    status: Text = None
    reason: Text = None
    completionTime: Text = None  # noqa: N815 - the API's own spelling


class V2Job(JobModel):
    """One v2 job node, as an element of the job list."""

    SUBJOBS_FIELD: ClassVar[str] = "spec.subjobs"

    kind: Text = None
    apiVersion: Text = None  # noqa: N815 - the API's own spelling
    metadata: Annotated[JobMetadata | None, Lenient] = None
    spec: Annotated[V2JobSpec | None, Lenient] = None
    status: Annotated[V2JobStatus | None, Lenient] = None

    def facts(self) -> NodeFacts:
        """Return the node's facts for flattening, as the v3 spelling would give them."""
        meta = self.metadata or JobMetadata()
        spec = self.spec or V2JobSpec()
        status = self.status or V2JobStatus()
        return NodeFacts(
            uid=meta.uid,
            job_type=spec.type or "",
            cluster_id=spec.clusteruid or "",
            resource_id=spec.resourceid or "",
            resource_name=spec.resourcename or "",
            phase=status.status or None,
            reason=status.reason or "",
            created=meta.creationTimestamp,
            updated=meta.updateTimestamp,
            subjobs=tuple(spec.subjobs or ()),
        )


@dataclass(frozen=True, slots=True)
class ListedJob:
    """What the job list says of one job, read cheaply; `tree()` reads the rest on demand."""

    job_id: str | None
    job_type: str
    phase: str | None
    created_ns: int | None
    # When the job ended: `status.completionTime`, else `metadata.updateTimestamp`.
    completed_ns: int | None
    raw: dict[str, Any]

    @property
    def finished(self) -> bool:
        """Tell whether the list shows the job in a terminal phase."""
        return self.phase in TERMINAL_PHASES

    def tree(self) -> JobTree:
        """Flatten the whole listed job, sub-jobs included."""
        if self.job_id is None:
            msg = "a listed job without metadata.uid has no ID to name its tree"
            raise InvalidJobError(msg)
        return flatten_v2(self.raw, self.job_id)


def _text(section: object, key: str) -> str | None:
    value = section.get(key) if isinstance(section, dict) else None
    return valid_text(value) if isinstance(value, str) and value else None


def _time_text(section: object, key: str) -> str | None:
    """Return a timestamp field's text; None when absent, empty or Go's zero time."""
    text = _text(section, key)
    return None if text is None or is_zero_time(text) else text


def _parsed(value: str | None) -> int | None:
    return None if value is None else parse_timestamp(value)


def read_listing(data: object) -> list[ListedJob]:
    """Read the job list's answer: a JSON array of v2 jobs.

    Only the fields that decide whether a job is picked up are read here;
    elements that are not objects are skipped. Raises InvalidJobError when
    `data` is not a list at all.
    """
    if not isinstance(data, list):
        msg = f"expected a list of jobs, got {type(data).__name__}"
        raise InvalidJobError(msg)
    listed = []
    for raw in data:
        if not isinstance(raw, dict):
            continue
        metadata, spec, status = raw.get("metadata"), raw.get("spec"), raw.get("status")
        updated = _time_text(metadata, "updateTimestamp")
        completed = _time_text(status, "completionTime") or updated
        listed.append(
            ListedJob(
                job_id=_text(metadata, "uid"),
                job_type=_text(spec, "type") or "",
                phase=_text(status, "status"),
                created_ns=_parsed(_time_text(metadata, "creationTimestamp")),
                completed_ns=_parsed(completed),
                raw=raw,
            )
        )
    return listed


def flatten_v2(data: object, job_id: str) -> JobTree:
    """Turn the decoded JSON of a v2 job into a `JobTree`; the root is named `job_id`.

    The tree is the one the v3 object of the same job flattens to. Raises
    InvalidJobError when `data` is not a job object at all.
    """
    return flatten(data, job_id, V2Job)
