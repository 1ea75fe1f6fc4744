"""The demo's clusters and its stream of finishing jobs, read through the real client."""

import aiohttp
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from exporter.cce.auth.base import TokenAuth
from exporter.cce.client import CCEClient
from exporter.demo.cloud import CLUSTERS, DEMO_PROJECT_ID, DEMO_TOKEN, DemoCloud, create_demo_app
from exporter.jobs.clusters import ClusterKind
from exporter.jobs.state import JobStore
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.history import JobHistory
from exporter.scheduler import PollSettings, Scheduler
from exporter.watch.clusters import ClusterRefresher, ClusterRefreshSettings
from tests.standins.clocks import Clock


def _client(session: aiohttp.ClientSession, url: str, instruments: Instruments) -> CCEClient:
    return CCEClient(session, url, TokenAuth(SecretStr(DEMO_TOKEN)), instruments, timeout=5)


async def test_demo_lists_named_clusters_of_both_kinds(
    aiohttp_server: AiohttpServer, instruments: Instruments
) -> None:
    """The demo's cluster lists give named CCE and Autopilot clusters, one of them Unavailable."""
    cloud = DemoCloud(clock=Clock(1_800_000_000.0))
    server = await aiohttp_server(create_demo_app(cloud))
    async with aiohttp.ClientSession() as session:
        client = _client(session, str(server.make_url("")), instruments)
        refresher = ClusterRefresher(client, instruments, ClusterRefreshSettings(DEMO_PROJECT_ID))
        assert await refresher.refresh()
    directory = refresher.directory
    assert len(directory) == len(CLUSTERS) >= 4
    assert {cluster.kind for cluster in directory} == {ClusterKind.CCE, ClusterKind.AUTOPILOT}
    assert all(cluster.name and cluster.phase and cluster.version for cluster in directory)
    assert "Unavailable" in {cluster.phase for cluster in directory}
    # Every job runs on a CCE cluster the lists show.
    jobs = cloud.jobs()
    assert {job.cluster_id for job in jobs} <= {
        cluster.cluster_id for cluster in directory if cluster.kind is ClusterKind.CCE
    }
    assert len({job.cluster_id for job in jobs}) > 1


async def test_demo_jobs_keep_finishing_in_success_and_failure(
    aiohttp_server: AiohttpServer, instruments: Instruments
) -> None:
    """Watched on arrival, demo jobs end Success and Failed, with failed steps, time after time."""
    clock = Clock(1_800_000_000.0)
    cloud = DemoCloud(clock=clock)
    server = await aiohttp_server(create_demo_app(cloud))
    history = JobHistory(instruments.registry, started=clock(), retention=600, clock=clock)
    value = instruments.registry.get_sample_value
    totals: list[dict[str, float]] = []
    async with aiohttp.ClientSession() as session:
        scheduler = Scheduler(
            _client(session, str(server.make_url("")), instruments),
            JobStore(),
            instruments,
            PollSettings(
                DEMO_PROJECT_ID, poll_interval=30, poll_concurrency=8, finished_retention=600
            ),
            clock=clock,
            monotonic=clock,
            history=history,
        )
        offered: set[str] = set()
        for _ in range(2):
            for _ in range(60):  # half an hour, 30 s at a time
                new = [job.job_id for job in cloud.jobs() if job.job_id not in offered]
                offered.update(new)
                scheduler.watch(new)
                await scheduler.poll_due(jitter=False)
                clock.now += 30
            totals.append(_finished_by_phase(instruments))
        await scheduler.stop()
    first, second = totals
    assert first["Success"] > 0
    assert first["Failed"] > 0
    assert second["Success"] > first["Success"]
    assert second["Failed"] > first["Failed"]
    failed_steps = sum(
        sample.value
        for metric in instruments.registry.collect()
        if metric.name == "cce_subjobs_failed"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
    assert failed_steps >= second["Failed"]
    # Not every job of a type fails: the failure ratio is a ratio.
    scaleup = {"project_id": DEMO_PROJECT_ID, "job_type": "ScaleupCluster"}
    ok = value("cce_job_completion_duration_seconds_count", {**scaleup, "phase": "Success"})
    failed = value("cce_job_completion_duration_seconds_count", {**scaleup, "phase": "Failed"})
    assert ok
    assert failed


def _finished_by_phase(instruments: Instruments) -> dict[str, float]:
    totals = {"Success": 0.0, "Failed": 0.0}
    for metric in instruments.registry.collect():
        if metric.name == "cce_jobs_finished":
            for sample in metric.samples:
                if sample.name == "cce_jobs_finished_total":
                    totals[sample.labels["phase"]] += sample.value
    return totals
