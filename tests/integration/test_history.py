"""The history counters and histogram against a stand-in API whose jobs run and end."""

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from exporter.cce.auth.base import TokenAuth
from exporter.cce.client import CCEClient
from exporter.jobs.state import JobStore
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.exposition import Renderer
from exporter.metrics.history import JobHistory
from exporter.scheduler import PollSettings, Scheduler
from exporter.server.endpoints import WebContext, create_app
from exporter.watch.discovery import Discovery, DiscoverySettings
from exporter.watch.watchlist import Route, WatchList
from tests.conftest import labels, parse_series
from tests.standins import scenario
from tests.standins.cce import PROJECT_ID, TOKEN, FakeCCE
from tests.standins.clocks import Clock, Sleeps
from tests.standins.lifecycle import Lifecycle

RETENTION = 600.0
START = 1_800_000_000.0  # when the process under test started


@dataclass
class Rig:
    """A scheduler with its history, the watch list and discovery, on a stand-in API."""

    api: FakeCCE
    jobs: Lifecycle
    clock: Clock
    store: JobStore
    scheduler: Scheduler
    watchlist: WatchList
    discovery: Discovery
    instruments: Instruments

    async def poll(self, seconds: float = 0.0) -> None:
        """Let `seconds` pass, then poll every due job."""
        self.clock.now += seconds
        await self.scheduler.poll_due(jitter=False)

    def value(self, name: str, **wanted: str) -> float | None:
        """Return one sample of the registry (project_id implied)."""
        return self.instruments.registry.get_sample_value(
            name, {"project_id": PROJECT_ID, **wanted}
        )

    def finished(self, cluster: str, job_type: str, phase: str) -> float | None:
        """Return cce_jobs_finished_total of one label set."""
        return self.value(
            "cce_jobs_finished_total", cluster_id=cluster, job_type=job_type, phase=phase
        )

    def total_finished(self) -> float:
        """Return the sum of cce_jobs_finished_total over every label set."""
        return sum(
            sample.value
            for metric in self.instruments.registry.collect()
            if metric.name == "cce_jobs_finished"
            for sample in metric.samples
            if sample.name == "cce_jobs_finished_total"
        )

    def render(self, *, openmetrics: bool = False) -> str:
        """Return the whole exposition, as /metrics serves it."""
        renderer = Renderer(self.instruments.registry)
        return renderer.render(self.store, openmetrics=openmetrics).decode()


@pytest.fixture
async def rig(aiohttp_server: AiohttpServer, instruments: Instruments) -> AsyncIterator[Rig]:
    """The rig at START: interval 30 s, retention 600 s, every clock the test's."""
    api = FakeCCE(project_id=PROJECT_ID)
    server = await aiohttp_server(api.app())
    clock = Clock(START)
    store = JobStore()
    history = JobHistory(instruments.registry, started=clock(), retention=RETENTION, clock=clock)
    async with aiohttp.ClientSession() as session:
        client = CCEClient(
            session,
            str(server.make_url("")),
            TokenAuth(SecretStr(TOKEN)),
            instruments,
            timeout=5,
            sleep=Sleeps().sleep,
        )
        settings = PollSettings(
            project_id=PROJECT_ID,
            poll_interval=30,
            poll_concurrency=4,
            finished_retention=RETENTION,
        )
        scheduler = Scheduler(
            client, store, instruments, settings, clock=clock, monotonic=clock, history=history
        )
        watchlist = WatchList(scheduler, instruments)
        discovery = Discovery(
            client,
            watchlist,
            instruments,
            DiscoverySettings(project_id=PROJECT_ID, finished_retention=RETENTION),
            clock=clock,
        )
        yield Rig(
            api, Lifecycle(api, clock), clock, store, scheduler, watchlist, discovery, instruments
        )
        await scheduler.stop()


async def test_counters_and_histogram_equal_what_happened(rig: Rig) -> None:
    """Jobs that run then end are counted by cluster, type and phase, with their durations."""
    rig.jobs.start("a1", job_type="CreateNode", cluster="c-1")
    rig.jobs.start("a2", job_type="CreateNode", cluster="c-1")
    steps = ("UpgradeMaster", "UpgradeNodes", "UpgradeAddons")
    rig.jobs.start("u1", job_type="UpgradeCluster", cluster="c-2", steps=steps)
    rig.watchlist.add(Route.SETTINGS, ["a1", "a2", "u1"])
    await rig.poll()
    # Seen under way: the series exist at 0, so that rate() sees the first end.
    assert rig.finished("c-1", "CreateNode", "Failed") == 0.0
    assert rig.finished("c-2", "UpgradeCluster", "Success") == 0.0
    rig.clock.now += 150
    rig.jobs.succeed("a1")
    rig.jobs.fail("a2")  # its last step, InstallNode, failed
    await rig.poll()
    rig.clock.now += 3000
    rig.jobs.fail("u1", failed_steps=(0, 2))
    await rig.poll()
    await rig.poll(3600)  # nothing is polled or counted twice
    assert rig.finished("c-1", "CreateNode", "Success") == 1.0
    assert rig.finished("c-1", "CreateNode", "Failed") == 1.0
    assert rig.finished("c-2", "UpgradeCluster", "Failed") == 1.0
    assert rig.finished("c-2", "UpgradeCluster", "Success") == 0.0
    assert rig.total_finished() == 3.0
    duration = "cce_job_completion_duration_seconds"
    node_ok = {"job_type": "CreateNode", "phase": "Success"}
    assert rig.value(f"{duration}_count", **node_ok) == 1.0
    assert rig.value(f"{duration}_sum", **node_ok) == 150.0
    assert rig.value(f"{duration}_bucket", **node_ok, le="120.0") == 0.0
    assert rig.value(f"{duration}_bucket", **node_ok, le="300.0") == 1.0
    upgrade = {"job_type": "UpgradeCluster", "phase": "Failed"}
    assert rig.value(f"{duration}_sum", **upgrade) == 3150.0
    assert rig.value(f"{duration}_bucket", **upgrade, le="2700.0") == 0.0
    assert rig.value(f"{duration}_bucket", **upgrade, le="3600.0") == 1.0
    failed = "cce_subjobs_failed_total"
    assert rig.value(failed, job_type="CreateNode", subjob_type="InstallNode") == 1.0
    assert rig.value(failed, job_type="CreateNode", subjob_type="CreateServer") is None
    assert rig.value(failed, job_type="UpgradeCluster", subjob_type="UpgradeMaster") == 1.0
    assert rig.value(failed, job_type="UpgradeCluster", subjob_type="UpgradeAddons") == 1.0
    assert rig.value(failed, job_type="UpgradeCluster", subjob_type="UpgradeNodes") is None


async def test_failed_subjobs_are_counted_at_any_depth(rig: Rig) -> None:
    """A failed sub-job of a sub-job counts, under the root job's type."""
    rig.jobs.start("deep", job_type="CreateCluster", cluster="c-1")
    rig.watchlist.add(Route.SETTINGS, ["deep"])
    await rig.poll()
    rig.clock.now += 60
    rig.jobs.fail("deep")
    body = rig.api.jobs["deep"]
    inner = {"kind": "Job", "metadata": {"uid": "deep-inner"}, "spec": {"type": "InstallAddon"}}
    body["spec"]["subJobs"][0]["spec"]["subJobs"] = [inner | {"status": {"phase": "Failed"}}]
    await rig.poll()
    failed = "cce_subjobs_failed_total"
    assert rig.value(failed, job_type="CreateCluster", subjob_type="InstallAddon") == 1.0
    assert rig.value(failed, job_type="CreateCluster", subjob_type="InstallNode") == 1.0


async def test_counters_survive_the_retention(rig: Rig) -> None:
    """Once a finished job's own series are gone, its counts and duration remain."""
    rig.jobs.start("n1", cluster="c-1")
    rig.watchlist.add(Route.SETTINGS, ["n1"])
    await rig.poll()
    rig.clock.now += 90
    rig.jobs.fail("n1")
    await rig.poll()
    assert 'cce_job_info{api="cce",cluster_id="c-1"' in rig.render()
    await rig.poll(RETENTION + 1)
    assert "n1" not in rig.store
    text = rig.render()
    assert 'job_id="n1"' not in text
    series = parse_series(text)
    kept = labels(project_id=PROJECT_ID, cluster_id="c-1", job_type="CreateNode", phase="Failed")
    assert series[("cce_jobs_finished_total", kept)] == 1.0
    count = labels(project_id=PROJECT_ID, job_type="CreateNode", phase="Failed")
    assert series[("cce_job_completion_duration_seconds_count", count)] == 1.0
    assert series[("cce_job_completion_duration_seconds_sum", count)] == 90.0


async def test_jobs_that_ended_before_the_start_are_not_counted(rig: Rig) -> None:
    """A job first seen finished counts only when it ended after the process started."""
    rig.api.add_job("old", "Failed", job_type="DeleteNode", updated=START - 100)
    rig.clock.now += 50
    rig.api.add_job("late", "Failed", job_type="CreateNode", updated=START + 20)
    rig.api.add_job("unknown", "Success", job_type="ScaleupCluster")
    del rig.api.jobs["unknown"]["metadata"]["updateTimestamp"]
    rig.watchlist.add(Route.SETTINGS, ["old", "late", "unknown"])
    await rig.poll()
    # All three are shown by their own series: they ended within the retention.
    assert all(state.finished for state in rig.store)
    assert len(rig.store) == 3
    assert rig.finished("c-1", "CreateNode", "Failed") == 1.0
    assert rig.finished("c-1", "DeleteNode", "Failed") is None
    assert rig.finished("c-1", "ScaleupCluster", "Success") is None
    assert rig.total_finished() == 1.0


async def test_every_route_counts_a_job_once(rig: Rig) -> None:
    """Named by settings, file, discovery and the job API, removed and added again: counted once."""
    rig.jobs.start("multi", job_type="CreateNode", cluster="c-1", listed=True)
    rig.watchlist.add(Route.SETTINGS, ["multi"])
    rig.watchlist.add(Route.FILE, ["multi"])
    await rig.discovery.refresh()
    rig.watchlist.add(Route.API, ["multi"])
    await rig.poll()
    rig.clock.now += 120
    rig.jobs.succeed("multi")
    await rig.discovery.refresh()
    await rig.poll()
    assert rig.finished("c-1", "CreateNode", "Success") == 1.0
    # The job API drops it, and names it again within its retention: shown again, not counted.
    assert rig.watchlist.remove("multi")
    rig.watchlist.add(Route.API, ["multi"])
    await rig.poll(1)
    assert rig.store.get("multi") is not None
    assert rig.finished("c-1", "CreateNode", "Success") == 1.0
    assert rig.api.requests["multi"] == 3


async def test_discovery_counts_jobs_listed_finished_after_the_start(rig: Rig) -> None:
    """A job listed as ended after the start counts without a v3 read; an older one does not."""
    rig.clock.now += 300
    rig.jobs.start("listed-old", job_type="DeleteNode", listed=True, created=START - 500)
    rig.clock.now = START - 10
    rig.jobs.fail("listed-old")
    rig.clock.now = START + 300
    rig.jobs.start("listed-new", job_type="CreateNode", listed=True, created=START + 100)
    rig.jobs.fail("listed-new", failed_steps=(0, 1))
    outcome = await rig.discovery.refresh()
    assert outcome.stored_finished == 2
    assert rig.api.requests == {}
    assert rig.finished("c-1", "CreateNode", "Failed") == 1.0
    assert rig.finished("c-1", "DeleteNode", "Failed") is None
    duration = {"job_type": "CreateNode", "phase": "Failed"}
    assert rig.value("cce_job_completion_duration_seconds_sum", **duration) == 200.0
    failed = "cce_subjobs_failed_total"
    assert rig.value(failed, job_type="CreateNode", subjob_type="CreateServer") == 1.0


async def test_no_series_carries_a_job_id(rig: Rig) -> None:
    """The history families have no job label; the job ID appears only as an exemplar."""
    for index in range(5):
        rig.jobs.start(f"j{index}", cluster="c-1")
    rig.watchlist.add(Route.SETTINGS, [f"j{index}" for index in range(5)])
    await rig.poll()
    rig.clock.now += 45
    for index in range(5):
        rig.jobs.fail(f"j{index}")
    await rig.poll()
    await rig.poll(RETENTION + 1)
    text = rig.render()
    history = re.findall(r"^cce_(?:jobs|job_completion|subjobs)_.*$", text, flags=re.MULTILINE)
    assert history
    assert not any("job_id" in line for line in history)
    assert rig.finished("c-1", "CreateNode", "Failed") == 5.0


async def test_exemplar_in_openmetrics_only(rig: Rig, aiohttp_client: Any) -> None:
    """OpenMetrics /metrics parses and has the job's exemplar on its bucket; text has none."""
    rig.jobs.start("ex-1", job_type="CreateNode", cluster="c-1")
    rig.watchlist.add(Route.SETTINGS, ["ex-1"])
    await rig.poll()
    rig.clock.now += 150
    rig.jobs.succeed("ex-1")
    await rig.poll()
    renderer = Renderer(rig.instruments.registry)
    client = await aiohttp_client(create_app(WebContext(rig.store, renderer, lambda: True)))
    accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
    openmetrics = await (await client.get("/metrics", headers=accept)).text()
    families = {family.name: family for family in parse_openmetrics(openmetrics)}
    buckets = [
        sample
        for sample in families["cce_job_completion_duration_seconds"].samples
        if sample.name.endswith("_bucket") and sample.labels["phase"] == "Success"
    ]
    with_exemplar = [sample for sample in buckets if sample.exemplar is not None]
    assert [sample.labels["le"] for sample in with_exemplar] == ["300.0"]
    (exemplar,) = [sample.exemplar for sample in with_exemplar]
    assert exemplar.labels == {"job_id": "ex-1"}
    assert exemplar.value == 150.0
    assert families["cce_jobs_finished"].type == "counter"
    assert families["cce_subjobs_failed"].type == "counter"
    text = await (await client.get("/metrics")).text()
    assert "# {" not in text
    series = parse_series(text)
    ok = labels(project_id=PROJECT_ID, cluster_id="c-1", job_type="CreateNode", phase="Success")
    assert series[("cce_jobs_finished_total", ok)] == 1.0


async def test_the_system_scenario_moves_its_jobs_to_an_end_the_history_counts(
    aiohttp_server: AiohttpServer, instruments: Instruments
) -> None:
    """The scenario's moving jobs answer Running, then end; the history counts both, once."""
    api = scenario.scenario_api()
    server = await aiohttp_server(api.app())
    clock = Clock(time.time())
    store = JobStore()
    history = JobHistory(instruments.registry, started=clock(), retention=RETENTION, clock=clock)
    async with aiohttp.ClientSession() as session:
        client = CCEClient(
            session, str(server.make_url("")), TokenAuth(SecretStr(TOKEN)), instruments, timeout=5
        )
        settings = PollSettings(
            PROJECT_ID, poll_interval=1, poll_concurrency=2, finished_retention=60
        )
        scheduler = Scheduler(
            client, store, instruments, settings, clock=clock, monotonic=clock, history=history
        )
        scheduler.watch(scenario.MOVING_JOBS)
        phases = []
        for _ in range(3):
            await scheduler.poll_due(jitter=False)
            phases.append({s.job_id: s.tree.root.phase for s in store if s.tree is not None})
            clock.now += 1
        await scheduler.stop()
    ok, failed = scenario.SUCCEEDING_JOB, scenario.FAILING_STEPS_JOB
    assert phases[0] == {ok: "Running", failed: "Running"}
    assert phases[1] == phases[2] == {ok: "Success", failed: "Failed"}
    value = instruments.registry.get_sample_value
    finished = "cce_jobs_finished_total"
    p = PROJECT_ID
    ok_labels = {"job_type": "CreateNode", "phase": "Success", "cluster_id": scenario.CLUSTER_A}
    failed_labels = {"job_type": "ScaleupCluster", "phase": "Failed"}
    assert value(finished, {"project_id": p, **ok_labels}) == 1.0
    assert (
        value(finished, {"project_id": p, **failed_labels, "cluster_id": scenario.CLUSTER_B}) == 1.0
    )
    subjobs = "cce_subjobs_failed_total"
    for step, count in (("CreateServer", None), ("InstallNode", 1.0), ("InstallAddons", 1.0)):
        labels_ = {"project_id": p, "job_type": "ScaleupCluster", "subjob_type": step}
        assert value(subjobs, labels_) == count
    # It had run for MOVING_AGE seconds when the scenario began: minutes, in the histogram.
    duration = value("cce_job_completion_duration_seconds_sum", {"project_id": p, **failed_labels})
    assert duration is not None
    assert scenario.MOVING_AGE <= duration < scenario.MOVING_AGE + 120
