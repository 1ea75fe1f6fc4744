"""When a job counts as stuck: the per-type thresholds of the `CCEJobStuck` alert.

The same values as the `cce-job-stuck-thresholds` group of config/alerts.yml
(a unit test compares them), kept here because an installed package cannot
read config/.
"""

from types import MappingProxyType

# Seconds a job of each type may stay unfinished after its creation.
STUCK_THRESHOLDS = MappingProxyType(
    {
        "CreateCluster": 3600,
        "DeleteCluster": 3600,
        "UpgradeCluster": 10800,
        "CreateNode": 2700,
        "ScaleupCluster": 5400,
        "DeleteNode": 1800,
    }
)
# For every type not listed above.
DEFAULT_STUCK_THRESHOLD = 7200


def stuck_threshold(job_type: str) -> int:
    """Return the seconds a job of this type may run before it counts as stuck."""
    return STUCK_THRESHOLDS.get(job_type, DEFAULT_STUCK_THRESHOLD)
