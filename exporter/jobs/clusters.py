"""The clusters jobs run on: the cluster lists of CCE and Autopilot, and a directory of them.

`GET /api/v3/projects/{project_id}/clusters` and its Autopilot twin
`GET /autopilot/v3/projects/{project_id}/clusters` answer
`{"kind", "apiVersion", "items": [...]}`. Every field may be missing: a
field of the wrong type costs only its value (an empty label, and a parse
error named `cluster.<section>.<field>`), an item that is not an object or
has no `metadata.uid` costs only itself. At most MAX_CLUSTERS are read.

A `ClusterDirectory` is an immutable snapshot of what the lists said:
cluster ID to name, kind and phase, for whatever needs a cluster's name.
"""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from exporter.errors import valid_text
from exporter.jobs.tree import label

# The phases the API documents (`Empty` is obsolete); others are kept as they come.
CLUSTER_PHASES: Final = (
    "Available",
    "Unavailable",
    "ScalingUp",
    "ScalingDown",
    "Creating",
    "Deleting",
    "Upgrading",
    "Resizing",
    "RollingBack",
    "RollbackFailed",
    "Hibernating",
    "Hibernation",
    "Awaking",
    "Empty",
    "Error",
)
# The most clusters read from one list; a project has tens. The body cap
# bounds the answer, this the series: items past it are counted, not read.
MAX_CLUSTERS: Final = 2000


class ClusterKind(StrEnum):
    """Which API a cluster lives on: the `cluster_kind` label."""

    CCE = "cce"
    AUTOPILOT = "autopilot"


class ClusterListError(ValueError):
    """The API answered something that is not a cluster list at all."""


@dataclass(frozen=True, slots=True)
class Cluster:
    """One cluster as its list shows it; a missing field is empty."""

    cluster_id: str  # metadata.uid: the clusterUID of its jobs
    name: str  # metadata.name
    kind: ClusterKind
    phase: str = ""  # status.phase
    category: str = ""  # spec.category: CCE, Turbo
    cluster_type: str = ""  # spec.type: VirtualMachine, ARM64, ...
    flavor: str = ""  # spec.flavor
    version: str = ""  # spec.version


@dataclass(frozen=True, slots=True)
class ClusterList:
    """One cluster list read: its clusters, the fields that did not parse, items past the cap."""

    clusters: tuple[Cluster, ...]
    parse_errors: tuple[str, ...] = ()
    ignored: int = 0


def _section(item: Mapping[str, Any], key: str, errors: list[str]) -> Mapping[str, Any]:
    value = item.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(f"cluster.{key}")
        return {}
    return value


def _text(section: Mapping[str, Any], name: str, field: str, errors: list[str]) -> str:
    value = section.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        errors.append(f"cluster.{field}")
        return ""
    return label(valid_text(value))


def read_cluster(item: object, kind: ClusterKind, errors: list[str]) -> Cluster | None:
    """Read one item of a cluster list; None when it is not a cluster with an ID."""
    if not isinstance(item, dict):
        errors.append("cluster")
        return None
    metadata = _section(item, "metadata", errors)
    spec = _section(item, "spec", errors)
    status = _section(item, "status", errors)
    cluster_id = _text(metadata, "uid", "metadata.uid", errors)
    if not cluster_id:
        if isinstance(metadata.get("uid", ""), str):  # else counted already, as of the wrong type
            errors.append("cluster.metadata.uid")
        return None
    return Cluster(
        cluster_id=cluster_id,
        name=_text(metadata, "name", "metadata.name", errors),
        kind=kind,
        phase=_text(status, "phase", "status.phase", errors),
        category=_text(spec, "category", "spec.category", errors),
        cluster_type=_text(spec, "type", "spec.type", errors),
        flavor=_text(spec, "flavor", "spec.flavor", errors),
        version=_text(spec, "version", "spec.version", errors),
    )


def read_clusters(data: object, kind: ClusterKind) -> ClusterList:
    """Read a cluster list's decoded answer; raise ClusterListError when it is not one.

    A missing or null `items` is an empty list. A cluster listed twice is read once.
    """
    if not isinstance(data, dict):
        msg = f"expected a cluster list object, got {type(data).__name__}"
        raise ClusterListError(msg)
    items = data.get("items")
    if items is None:
        return ClusterList(())
    if not isinstance(items, list):
        msg = f"expected a list of clusters in items, got {type(items).__name__}"
        raise ClusterListError(msg)
    errors: list[str] = []
    clusters: dict[str, Cluster] = {}
    for item in items[:MAX_CLUSTERS]:
        cluster = read_cluster(item, kind, errors)
        if cluster is not None:
            clusters.setdefault(cluster.cluster_id, cluster)
    return ClusterList(
        tuple(clusters.values()), tuple(errors), ignored=max(0, len(items) - MAX_CLUSTERS)
    )


class ClusterDirectory:
    """The project's clusters by ID, as last read: an immutable snapshot.

    Replaced whole at each refresh, never changed, so that a reader holds a
    consistent view without locks. Iterates in the order the lists gave.
    """

    __slots__ = ("_by_id", "_by_name")

    def __init__(self, clusters: Iterable[Cluster] = ()) -> None:
        by_id: dict[str, Cluster] = {}
        for cluster in clusters:
            by_id.setdefault(cluster.cluster_id, cluster)
        by_name: dict[str, list[str]] = {}
        for cluster in by_id.values():
            if cluster.name:
                by_name.setdefault(cluster.name, []).append(cluster.cluster_id)
        self._by_id: Mapping[str, Cluster] = MappingProxyType(by_id)
        self._by_name = {name: tuple(ids) for name, ids in by_name.items()}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Cluster]:
        return iter(self._by_id.values())

    def __contains__(self, cluster_id: object) -> bool:
        return cluster_id in self._by_id

    def __repr__(self) -> str:
        return f"ClusterDirectory({len(self)} clusters)"

    def get(self, cluster_id: str) -> Cluster | None:
        """Return the cluster with that ID, or None when no list shows it."""
        return self._by_id.get(cluster_id)

    def name(self, cluster_id: str) -> str:
        """Return the name of the cluster with that ID; empty when unknown or unnamed."""
        cluster = self._by_id.get(cluster_id)
        return cluster.name if cluster is not None else ""

    def resolve(self, name_or_id: str) -> tuple[str, ...]:
        """Return the IDs of the clusters with that ID or that name (names need not be unique)."""
        if name_or_id in self._by_id:
            return (name_or_id,)
        return self._by_name.get(name_or_id, ())


EMPTY_DIRECTORY: Final = ClusterDirectory()
