"""Sharing one job set among several exporters: which instance owns which job.

The rule is the spec's, so that anyone can compute the owner of a job:
`int(sha256(job_id).hexdigest()[:16], 16) % shard_count`.
"""

import hashlib
import re
from dataclasses import dataclass

_TRAILING_INDEX = re.compile(r"-(\d+)$")


def shard_of(job_id: str, shard_count: int) -> int:
    """Return the index of the shard that owns `job_id`."""
    digest = hashlib.sha256(job_id.encode("utf-8")).hexdigest()
    return int(digest[:16], 16) % shard_count


def index_from_hostname(hostname: str, shard_count: int) -> int:
    """Take the shard index from a StatefulSet pod name (`name-N`); ValueError if none fits."""
    # A pod's host name is its name; a fully qualified one keeps it in front.
    name = hostname.split(".", 1)[0]
    match = _TRAILING_INDEX.search(name)
    if match is None:
        msg = (
            f"'auto' needs a host name ending in -N (a StatefulSet pod name), "
            f"but the host name is {hostname!r}"
        )
        raise ValueError(msg)
    index = int(match.group(1))
    if index >= shard_count:
        msg = (
            f"the host name {hostname!r} gives shard index {index}, "
            f"which is not below shard_count {shard_count}"
        )
        raise ValueError(msg)
    return index


@dataclass(frozen=True, slots=True)
class Shard:
    """This instance's share of the jobs."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            msg = f"shard index {self.index} is not in 0..{self.count - 1}"
            raise ValueError(msg)

    def owns(self, job_id: str) -> bool:
        """Tell whether this instance watches `job_id`."""
        return self.count == 1 or shard_of(job_id, self.count) == self.index
