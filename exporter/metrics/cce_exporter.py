"""The exporter's own metrics, in a private prometheus-client registry."""

import platform
from collections.abc import Callable, Iterable
from typing import cast

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
            ["state"],
            registry=r,
        )
        for state in ("active", "finished"):
            self.watched_jobs.labels(state)
        self.api_requests = Counter(
            "cce_exporter_api_requests_total",
            "Requests to the CCE and IAM APIs by operation and HTTP status (error when none).",
            ["operation", "code"],
            registry=r,
        )
        self.api_latency = Histogram(
            "cce_exporter_api_request_duration_seconds",
            "Latency of requests to the CCE and IAM APIs.",
            ["operation"],
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
            ["reason"],
            registry=r,
        )
        for reason in ("max_jobs", "invalid_id"):
            self.rejected_jobs.labels(reason)
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
        )
        r.register(self.token_expiry)


class UnsetGauge(Collector):
    """A gauge without labels that has no sample until it is first set."""

    def __init__(self, name: str, documentation: str) -> None:
        self._name = name
        self._documentation = documentation
        self._value: float | None = None

    def set(self, value: float) -> None:
        """Set the value."""
        self._value = value

    def collect(self) -> Iterable[Metric]:
        """Yield the family, with its sample once set."""
        family = GaugeMetricFamily(self._name, self._documentation)
        if self._value is not None:
            family.add_metric([], self._value)
        yield family
