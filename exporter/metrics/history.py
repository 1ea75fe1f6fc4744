"""History that outlives the jobs: root jobs counted as they end, in the exporter's registry.

`cce_jobs_finished_total`, `cce_job_completion_duration_seconds` and
`cce_subjobs_failed_total` count each root job once, in the process that saw
it end, and keep counting after the job's own series are gone. The scheduler
tells `JobHistory.observe` of every change of a watched job's state, whatever
route named the job, and of whichever target: one history serves them all,
each job counted under its own `project_id`. The rule of what counts is here
alone:

- a job seen unfinished, then finished, counts;
- a job first seen finished counts when it ended (its last
  `metadata.updateTimestamp`) at or after the moment the process started; one
  with no end time, or an earlier one, does not (a restart never counts old
  jobs again);
- a job counts once: one that is watched again (removed and added back, say)
  is not counted again while it could still be, that is for its retention.
"""

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram

from exporter.jobs.state import JobState
from exporter.jobs.tree import JobTree
from exporter.logs import event

log = logging.getLogger(__name__)

# CCE jobs take seconds (a certificate) to hours (an upgrade of a large cluster):
# node creation takes a few minutes, cluster creation about ten, upgrades tens.
COMPLETION_BUCKETS: Final = (
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    900.0,
    1200.0,
    1800.0,
    2700.0,
    3600.0,
    5400.0,
    7200.0,
    10800.0,
    14400.0,
    21600.0,
    43200.0,
)
# The most label sets each family takes. Cluster IDs and job types are few in
# a real project; an API that made up new ones for every job could otherwise
# grow the families without bound. Jobs past the cap are not counted (logged once).
MAX_LABEL_SETS: Final = 5000
# The most job IDs remembered as counted, whatever their retention.
MAX_REMEMBERED: Final = 100_000
_PHASES: Final = ("Success", "Failed")


class JobHistory:
    """Counts root jobs as they end, in counters that survive the jobs' expiry."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        started: float,
        retention: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._started_ns = round(started * 1e9)  # jobs that ended before this do not count
        self._retention = retention
        self._clock = clock
        # Counted job IDs, oldest first, and when each may be forgotten (wall clock).
        self._counted: OrderedDict[str, float] = OrderedDict()
        self._label_sets: set[tuple[str, ...]] = set()
        self._limit_logged = False
        self.finished = Counter(
            "cce_jobs_finished_total",
            "Root jobs seen reaching Success or Failed, each once, by the process that saw it end.",
            ["project_id", "cluster_id", "job_type", "phase"],
            registry=registry,
        )
        self.completion = Histogram(
            "cce_job_completion_duration_seconds",
            "Time from creation to the update that ended it, of the jobs counted as finished.",
            ["project_id", "job_type", "phase"],
            buckets=COMPLETION_BUCKETS,
            registry=registry,
        )
        self.subjobs_failed = Counter(
            "cce_subjobs_failed_total",
            "Failed sub-jobs, at any depth, of the root jobs counted as finished, by root type.",
            ["project_id", "job_type", "subjob_type"],
            registry=registry,
        )

    @property
    def remembered(self) -> int:
        """How many job IDs are remembered as counted."""
        return len(self._counted)

    def observe(self, before: JobState | None, after: JobState | None) -> None:
        """Take note of one watched job's change of state (None: not watched)."""
        if after is None or after.tree is None or (before is not None and before.finished):
            return
        seen = before is not None and before.tree is not None
        root = after.tree.root
        if not after.finished:
            if not seen:  # first seen under way: its series start at 0
                self._zeros(after.project_id, root.cluster_id, root.job_type)
            return
        if not seen and (root.updated_ns is None or root.updated_ns < self._started_ns):
            return
        if self._remember(after.job_id, root.updated_ns):
            self._count(after.project_id, after.job_id, after.tree)

    def _remember(self, job_id: str, end_ns: int | None) -> bool:
        """Remember a job as counted; return False when it was already."""
        now = self._clock()
        counted = self._counted
        while counted and (next(iter(counted.values())) <= now or len(counted) >= MAX_REMEMBERED):
            counted.popitem(last=False)
        if job_id in counted:
            return False
        # Watched again, it is kept (and could count again) only while its end,
        # no later than now, is within the retention: remembered that long.
        end = now if end_ns is None else max(now, end_ns / 1e9)
        counted[job_id] = end + self._retention
        return True

    def _admit(self, *labels: str) -> bool:
        """Tell whether a label set may be used: known already, or room for it."""
        if labels in self._label_sets:
            return True
        if len(self._label_sets) >= MAX_LABEL_SETS:
            if not self._limit_logged:
                self._limit_logged = True
                event(log, logging.WARNING, "history_label_limit", max_label_sets=MAX_LABEL_SETS)
            return False
        self._label_sets.add(labels)
        return True

    def _zeros(self, p: str, cluster_id: str, job_type: str) -> None:
        """Create a root job's series at 0, so that its first end shows in rate() and increase()."""
        for phase in _PHASES:
            if self._admit("finished", p, cluster_id, job_type, phase):
                self.finished.labels(p, cluster_id, job_type, phase)
            if self._admit("completion", p, job_type, phase):
                self.completion.labels(p, job_type, phase)

    def _count(self, p: str, job_id: str, tree: JobTree) -> None:
        root = tree.root
        job_type, phase = root.job_type, root.phase or ""
        self._zeros(p, root.cluster_id, job_type)
        if self._admit("finished", p, root.cluster_id, job_type, phase):
            self.finished.labels(p, root.cluster_id, job_type, phase).inc()
        created, updated = root.created_ns, root.updated_ns
        if (
            created is not None
            and updated is not None
            and updated >= created
            and self._admit("completion", p, job_type, phase)
        ):
            # The exemplar names the job: from a bucket on a dashboard to the job.
            seconds = (updated - created) / 1_000_000_000
            self.completion.labels(p, job_type, phase).observe(seconds, {"job_id": job_id})
        for node in tree.nodes[1:]:
            if node.phase == "Failed" and self._admit("subjobs", p, job_type, node.job_type):
                self.subjobs_failed.labels(p, job_type, node.job_type).inc()
