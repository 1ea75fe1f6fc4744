"""Shared fixtures: the API page's example job, fresh instruments, exposition parsing."""

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from prometheus_client.parser import text_string_to_metric_families

from exporter.jobs.ids import Api
from exporter.jobs.state import JobStore
from exporter.jobs.tree import JobTree
from exporter.metrics.cce_exporter import Instruments
from exporter.scheduler import PollSettings, PollTarget, Scheduler
from exporter.watch.sharding import Shard
from exporter.watch.watchlist import WatchList
from tests.standins import jobs

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]

# Hypothesis: no test may fail on how long an example took (a busy 2-core CI
# machine, coverage on). CI (the CI variable, set by .ci/run) also draws the
# same examples on every run, with no example database, so a red run is
# reproducible and a green one cannot turn red by chance. Locally examples stay
# random and remembered, to go on finding new failures. HYPOTHESIS_PROFILE
# picks a profile by name.
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


class NoReads:
    """A job reader for tests that must not poll: any read is a failure."""

    async def show_job(self, project_id: str, job_id: str, api: Api = Api.CCE) -> JobTree:
        """Fail the test."""
        msg = f"no poll expected, yet {job_id} was read"
        raise AssertionError(msg)

    async def find_job(self, project_id: str, job_id: str) -> tuple[Api, JobTree]:
        """Find every job on CCE."""
        return Api.CCE, await self.show_job(project_id, job_id)


@pytest.fixture
def example_job() -> dict[str, Any]:
    """The response example of the API page, as decoded JSON."""
    return jobs.example_job()


@pytest.fixture
def instruments() -> Instruments:
    """A fresh set of exporter metrics in their own registry."""
    return Instruments()


def idle_watchlist(
    instruments: Instruments,
    *,
    max_jobs: int = 100,
    shard: Shard | None = None,
    targets: dict[str, str] | None = None,
) -> tuple[WatchList, JobStore, Scheduler]:
    """A watch list over a scheduler that must not poll (its reader fails any read).

    `targets` maps each target's name to its project; without it, the one
    implicit target of project `p`.
    """
    store = JobStore()
    reader = NoReads()
    scheduler = Scheduler(
        [PollTarget(name, project, reader) for name, project in targets.items()]
        if targets
        else reader,
        store,
        instruments,
        PollSettings(project_id="p", poll_interval=30, poll_concurrency=4, finished_retention=60),
        clock=lambda: 1000.0,
        monotonic=lambda: 1000.0,
    )
    return (
        WatchList(scheduler, instruments, shard=shard, max_jobs=max_jobs),
        store,
        scheduler,
    )


def parse_series(text: str) -> Series:
    """Parse exposition text with prometheus-client's parser into {(name, labels): value}."""
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in series, f"duplicate series {key}"
            series[key] = sample.value
    return series


def labels(**kwargs: str) -> frozenset[tuple[str, str]]:
    """Build the label set of a series, for looking it up in parse_series' result."""
    return frozenset(kwargs.items())


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the proxies of the machine running the tests out of every test's requests."""
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment without any CCE_EXPORTER_ variable."""
    for key in list(os.environ):
        if key.upper().startswith("CCE_EXPORTER_"):
            monkeypatch.delenv(key)
    return monkeypatch
