"""The CCE v2 job object, as the job list (`GET /api/v2/projects/{project_id}/jobs`) gives it.

The v2 object carries the same facts as the v3 one under other spellings
(`spec.clusteruid`, `spec.subjobs`, `status.status`, ...). It is modelled here on
its own, never mixed with the v3 model; what the two share is the flattened
`JobTree` that the metrics are rendered from. Like the v3 model, every field
is optional and a value of the wrong type costs only that value.
"""

import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from exporter.errors import valid_text
from exporter.jobs.decode import DECODER, THREAD_DECODER
from exporter.jobs.timestamps import is_zero_time, parse_timestamp
from exporter.jobs.tree import (
    MAX_REASON_CHARS,
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
    label,
)

# The most elements of the job list that are read; the others are counted and
# ignored. Twice the default `max_jobs`.
MAX_LISTED_JOBS = 20_000
_SPACE = re.compile(r"[ \t\n\r]*")


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
    message: Text = None
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
            uid=label(meta.uid) or None,
            job_type=label(spec.type),
            cluster_id=label(spec.clusteruid),
            resource_id=label(spec.resourceid),
            resource_name=label(spec.resourcename),
            phase=label(status.status) or None,
            reason=(status.reason or "")[:MAX_REASON_CHARS],
            created=meta.creationTimestamp,
            updated=meta.updateTimestamp,
            subjobs=tuple(spec.subjobs or ()),
            message=(status.message or "")[:MAX_REASON_CHARS],
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
    # The element as decoded, or its JSON text: decoded again by `tree()`, it
    # costs a fraction of the objects' memory, and nothing to the collector.
    raw: dict[str, Any] | str
    # Whether the element carries `spec.subjobs` (a list, even empty). The
    # published example of the list has none, although the same job read by
    # ID has sub-jobs: without the key, the list says nothing of the tree.
    tree_listed: bool = False
    cluster_id: str = ""  # `spec.clusteruid`: empty when absent

    @property
    def finished(self) -> bool:
        """Tell whether the list shows the job in a terminal phase."""
        return self.phase in TERMINAL_PHASES

    def tree(self) -> JobTree:
        """Flatten the whole listed job, sub-jobs included."""
        if self.job_id is None:
            msg = "a listed job without metadata.uid has no ID to name its tree"
            raise InvalidJobError(msg)
        try:
            data = DECODER.decode(self.raw) if isinstance(self.raw, str) else self.raw
        except (ValueError, RecursionError) as exc:  # it was decoded once: not expected
            msg = f"the listed job does not decode again: {type(exc).__name__}"
            raise InvalidJobError(msg) from None
        return flatten_v2(data, self.job_id)


def _text(section: object, key: str) -> str | None:
    value = section.get(key) if isinstance(section, dict) else None
    return valid_text(value) if isinstance(value, str) and value else None


def _time_text(section: object, key: str) -> str | None:
    """Return a timestamp field's text; None when absent, empty or Go's zero time."""
    text = _text(section, key)
    return None if text is None or is_zero_time(text) else text


def _parsed(value: str | None) -> int | None:
    return None if value is None else parse_timestamp(value)


def listed_job(raw: object, source: str | None = None) -> ListedJob | None:
    """Read one element of the job list (its JSON text `source`, to keep instead of it).

    None when it is not an object.
    """
    if not isinstance(raw, dict):
        return None
    metadata, spec, status = raw.get("metadata"), raw.get("spec"), raw.get("status")
    updated = _time_text(metadata, "updateTimestamp")
    completed = _time_text(status, "completionTime") or updated
    return ListedJob(
        job_id=_text(metadata, "uid"),
        job_type=label(_text(spec, "type")),
        phase=_text(status, "status"),
        created_ns=_parsed(_time_text(metadata, "creationTimestamp")),
        completed_ns=_parsed(completed),
        raw=raw if source is None else source,
        tree_listed=isinstance(spec, dict) and isinstance(spec.get("subjobs"), list),
        cluster_id=label(_text(spec, "clusteruid")),
    )


def read_listing(data: object) -> list[ListedJob]:
    """Read the job list's answer: a JSON array of v2 jobs.

    Only the fields that decide whether a job is picked up are read here;
    elements that are not objects are skipped. Raises InvalidJobError when
    `data` is not a list at all.
    """
    if not isinstance(data, list):
        msg = f"expected a list of jobs, got {type(data).__name__}"
        raise InvalidJobError(msg)
    return [job for job in map(listed_job, data) if job is not None]


def read_list_text(text: str) -> tuple[list[ListedJob], int]:
    """Read the job list's text: (its first MAX_LISTED_JOBS jobs, how many more it holds).

    The list has no paging and may be tens of MB: it is read one element at a
    time (with THREAD_DECODER, in a worker thread), each kept as its text, and
    the elements past the cap are only counted. Raises ValueError when the
    text is not JSON, InvalidJobError when it is not a list.
    """
    index = _skip(text, 0)
    if not text.startswith("[", index):
        return read_listing(DECODER.decode(text)), 0
    jobs: list[ListedJob] = []
    ignored = 0
    index = _skip(text, index + 1)
    closed = text.startswith("]", index)
    while not closed:
        value, end = THREAD_DECODER.raw_decode(text, index)
        if isinstance(value, dict):
            if len(jobs) < MAX_LISTED_JOBS:
                job = listed_job(value, text[index:end])
                if job is not None:
                    jobs.append(job)
            else:
                ignored += 1
        del value  # nothing decoded outlives its element
        index = _skip(text, end)
        closed = text.startswith("]", index)
        if not closed and not text.startswith(",", index):
            msg = f"expected ',' or ']' at character {index}"
            raise ValueError(msg)
        if not closed:
            index = _skip(text, index + 1)
    index = _skip(text, index + 1)
    if index < len(text):
        msg = f"extra data at character {index}"
        raise ValueError(msg)
    return jobs, ignored


def _skip(text: str, index: int) -> int:
    """Return the index of the first character from `index` on that is not white space."""
    match = _SPACE.match(text, index)
    return index if match is None else match.end()


def flatten_v2(data: object, job_id: str) -> JobTree:
    """Turn the decoded JSON of a v2 job into a `JobTree`; the root is named `job_id`.

    The tree is the one the v3 object of the same job flattens to. Raises
    InvalidJobError when `data` is not a job object at all.
    """
    return flatten(data, job_id, V2Job)
