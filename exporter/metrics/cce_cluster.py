"""Every cce_cluster_* family: declared here under its exposed name, collected from the directory.

A collector of the exporter's registry: each scrape yields fresh families
from the cluster directory in force, so a cluster that the lists no longer
show leaves no series behind.
"""

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import Metric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter.jobs.clusters import CLUSTER_PHASES, ClusterDirectory

INFO_LABELS = (
    "project_id",
    "cluster_id",
    "cluster_name",
    "cluster_kind",
    "category",
    "cluster_type",
    "flavor",
    "version",
)


class ClusterCollector(Collector):
    """cce_cluster_info and cce_cluster_status_phase, one set per cluster of each directory.

    `directories` gives, for each project (one per target), how to get its
    directory in force.
    """

    def __init__(self, directories: Mapping[str, Callable[[], ClusterDirectory]]) -> None:
        self._directories = dict(directories)

    def collect(self) -> Iterable[Metric]:
        """Yield both families, fresh from the directories in force."""
        info = GaugeMetricFamily(
            "cce_cluster_info",
            "Each cluster of the project with its name, kind, category, type, flavor and"
            " version; always 1.",
            labels=INFO_LABELS,
        )
        phase = GaugeMetricFamily(
            "cce_cluster_status_phase",
            "Phase of a cluster: 1 for the current phase, 0 for the other documented ones.",
            labels=("project_id", "cluster_id", "phase"),
        )
        for p, directory in self._directories.items():
            self._add(info, phase, p, directory())
        yield info
        yield phase

    @staticmethod
    def _add(
        info: GaugeMetricFamily, phase: GaugeMetricFamily, p: str, directory: ClusterDirectory
    ) -> None:
        """Add one project's clusters to both families."""
        for cluster in directory:
            c = cluster.cluster_id
            info.add_metric(
                [
                    p,
                    c,
                    cluster.name,
                    cluster.kind.value,
                    cluster.category,
                    cluster.cluster_type,
                    cluster.flavor,
                    cluster.version,
                ],
                1.0,
            )
            for known in CLUSTER_PHASES:
                phase.add_metric([p, c, known], 1.0 if cluster.phase == known else 0.0)
            if cluster.phase and cluster.phase not in CLUSTER_PHASES:
                phase.add_metric([p, c, cluster.phase], 1.0)
