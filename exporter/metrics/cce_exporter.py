"""The exporter's own metrics, in a private prometheus-client registry.

The metrics about one target's API traffic, token, watched and rejected jobs
carry its name in `target` (`default` for the one implicit target).
`Instruments.target` gives the view of them bound to one target, with the
same attribute names and label values less `target`: each target's client,
authenticator and discovery count through their own view, and cannot count
under another's name.
"""

import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.jobs.state import DEFAULT_TARGET

# Why a job ID was refused: the values of `reason`, each present from the start.
REJECT_REASONS = ("max_jobs", "invalid_id", "other_target")

# API latency buckets: CCE answers in tens to hundreds of milliseconds; the
# default request timeout is 10 s.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Instruments:
    """Every metric of the exporter itself; job metrics are rendered elsewhere."""

    def __init__(self, *, shard_index: int = 0, shard_count: int = 1) -> None:
        # `_created` series double the counters and no dashboard or alert reads them.
        cast(Callable[[], None], disable_created_metrics)()  # shipped without annotations
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        r = self.registry
        self.build_info = Gauge(
            "cce_exporter_build_info",
            "Version of the exporter and of Python it runs on; always 1.",
            ["version", "python_version"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.watched_jobs = Gauge(
            "cce_exporter_watched_jobs",
            "Watched jobs: active ones are still polled, finished ones are kept until retention.",
            ["target", "state"],
            registry=r,
        )
        self.api_requests = Counter(
            "cce_exporter_api_requests_total",
            "Requests to the CCE and IAM APIs by operation and HTTP status (error when none).",
            ["target", "operation", "code"],
            registry=r,
        )
        self.api_latency = Histogram(
            "cce_exporter_api_request_duration_seconds",
            "Latency of requests to the CCE and IAM APIs.",
            ["target", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.poll_cycle = Gauge(
            "cce_exporter_poll_cycle_duration_seconds",
            "How long the last pass over the due jobs took.",
            registry=r,
        )
        self.parse_errors = Counter(
            "cce_exporter_parse_errors_total",
            "Values in API answers that could not be parsed, by field.",
            ["field"],
            registry=r,
        )
        self.rejected_jobs = Counter(
            "cce_exporter_rejected_jobs_total",
            "Job IDs refused, by reason.",
            ["target", "reason"],
            registry=r,
        )
        self.shard_info = Gauge(
            "cce_exporter_shard_info",
            "Which share of the jobs this instance watches; always 1.",
            ["shard_index", "shard_count"],
            registry=r,
        )
        self.shard_info.labels(str(shard_index), str(shard_count)).set(1)
        self.token_expiry = UnsetGauge(
            "cce_exporter_token_expiry_timestamp_seconds",
            "When the IAM token in use expires (IAM authentication only).",
            "target",
        )
        r.register(self.token_expiry)
        self.target_info = Gauge(
            "cce_exporter_target_info",
            "Each target: its project, region and endpoint; always 1.",
            ["target", "project_id", "region", "endpoint"],
            registry=r,
        )
        self._targets: dict[str, TargetInstruments] = {}

    def target(self, name: str) -> "TargetInstruments":
        """Return the metrics of one target, bound to its name (made on first use)."""
        view = self._targets.get(name)
        if view is None:
            view = self._targets[name] = TargetInstruments(
                name,
                api_requests=Bound(self.api_requests, name),
                api_latency=Bound(self.api_latency, name),
                watched_jobs=Bound(self.watched_jobs, name),
                rejected_jobs=Bound(self.rejected_jobs, name),
                token_expiry=BoundExpiry(self.token_expiry, name),
            )
            # Present from the start, at 0, so that rates and alerts see them begin.
            for state in ("active", "finished"):
                view.watched_jobs.labels(state)
            for reason in REJECT_REASONS:
                view.rejected_jobs.labels(reason)
        return view

    def describe_target(self, name: str, project_id: str, region: str, endpoint: str) -> None:
        """Set `cce_exporter_target_info` for one target."""
        self.target_info.labels(name, project_id, region, endpoint).set(1)


_M = TypeVar("_M", Counter, Gauge, Histogram)


class Bound(Generic[_M]):
    """A labelled family seen from one target: `labels` takes the other label values."""

    __slots__ = ("_family", "_target")

    def __init__(self, family: _M, target: str) -> None:
        self._family: _M = family
        self._target = target

    def labels(self, *values: str) -> _M:
        """Return the child of these label values, for this target."""
        return self._family.labels(self._target, *values)


class UnsetGauge(Collector):
    """A gauge with one label that has no sample for a value until it is first set."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self._name = name
        self._documentation = documentation
        self._label = label
        self._values: dict[str, float] = {}

    def set(self, label_value: str, value: float) -> None:
        """Set the value of the series with this label value."""
        self._values[label_value] = value

    def collect(self) -> Iterable[Metric]:
        """Yield the family, with a sample for each label value set."""
        family = GaugeMetricFamily(self._name, self._documentation, labels=[self._label])
        for label_value, value in sorted(self._values.items()):
            family.add_metric([label_value], value)
        yield family


@dataclass(frozen=True, slots=True)
class BoundExpiry:
    """The token expiry gauge of one target."""

    gauge: UnsetGauge
    target: str

    def set(self, value: float) -> None:
        """Set when the target's token expires."""
        self.gauge.set(self.target, value)


@dataclass(frozen=True, slots=True)
class TargetInstruments:
    """The metrics of one target, bound to its name: what its client, auth and discovery use."""

    name: str
    api_requests: Bound[Counter]
    api_latency: Bound[Histogram]
    watched_jobs: Bound[Gauge]
    rejected_jobs: Bound[Counter]
    token_expiry: BoundExpiry


def bound(instruments: "Instruments | TargetInstruments") -> TargetInstruments:
    """Return a target's view: as given, or the whole set's view of the implicit target."""
    if isinstance(instruments, TargetInstruments):
        return instruments
    return instruments.target(DEFAULT_TARGET)
