"""The cluster lists read through the real client from the stand-in API, and their series."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from exporter.app import exporter
from exporter.cce.auth.base import TokenAuth
from exporter.cce.client import CCEClient
from exporter.jobs.clusters import CLUSTER_PHASES, ClusterKind, ClusterList
from exporter.jobs.state import JobStore
from exporter.metrics.cce_cluster import ClusterCollector
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.exposition import Renderer
from exporter.scheduler import PollSettings, Scheduler
from exporter.settings.model import Settings
from exporter.watch.clusters import ClusterRefresher, ClusterRefreshSettings
from tests.conftest import Series, labels, parse_series
from tests.standins.cce import PROJECT_ID, TOKEN, FakeCCE
from tests.standins.clocks import Clock, Sleeps

PROD = "4d1ecb2c-229a-11e8-9c75-0255ac100ceb"
EDGE = "7ec8b73d-83db-11f0-8baa-0255ac10003e"
SERVERLESS = "a1b2c3d4-0000-4000-8000-000000000001"
INTERNAL_500 = json.dumps({"error_code": "CCE.01500001", "error_msg": "Internal error"})
FORBIDDEN = json.dumps({"error_code": "CCE.01403001", "error_msg": "Forbidden"})


@dataclass
class Rig:
    """A refresher, with its collector in the registry, reading the stand-in's cluster lists."""

    api: FakeCCE
    client: CCEClient
    refresher: ClusterRefresher
    instruments: Instruments

    def series(self) -> Series:
        """Return every series of /metrics, in the text format."""
        return parse_series(self.render())

    def render(self, *, openmetrics: bool = False) -> str:
        """Return the whole exposition (no job is watched)."""
        renderer = Renderer(self.instruments.registry)
        return renderer.render([], openmetrics=openmetrics).decode()

    def requests(self, operation: str, code: str) -> float | None:
        """Return cce_exporter_api_requests_total of one operation and code."""
        return self.instruments.registry.get_sample_value(
            "cce_exporter_api_requests_total",
            {"target": "default", "operation": operation, "code": code},
        )


@pytest.fixture
async def rig(aiohttp_server: AiohttpServer, instruments: Instruments) -> AsyncIterator[Rig]:
    """The rig on a stand-in API of one project; retries of the client do not wait."""
    api = FakeCCE(project_id=PROJECT_ID)
    server = await aiohttp_server(api.app())
    async with aiohttp.ClientSession() as session:
        client = CCEClient(
            session,
            str(server.make_url("")),
            TokenAuth(SecretStr(TOKEN)),
            instruments,
            timeout=5,
            sleep=Sleeps().sleep,
        )
        refresher = ClusterRefresher(client, instruments, ClusterRefreshSettings(PROJECT_ID))
        instruments.registry.register(ClusterCollector({PROJECT_ID: lambda: refresher.directory}))
        yield Rig(api, client, refresher, instruments)


def _info(cluster_id: str, name: str, kind: str, **spec: str) -> frozenset[tuple[str, str]]:
    fields = {"category": "CCE", "cluster_type": "VirtualMachine", "flavor": "cce.s2.small"}
    fields |= {"version": "v1.28"} | spec
    return labels(
        project_id=PROJECT_ID,
        cluster_id=cluster_id,
        cluster_name=name,
        cluster_kind=kind,
        **fields,
    )


def _phases(series: Series, cluster_id: str) -> dict[str, float]:
    return {
        dict(key)["phase"]: value
        for (name, key), value in series.items()
        if name == "cce_cluster_status_phase" and dict(key)["cluster_id"] == cluster_id
    }


async def test_cce_and_autopilot_clusters_give_info_and_phases(rig: Rig) -> None:
    """Each cluster of both lists has its info series and a state set over the documented phases."""
    rig.api.clusters.add(PROD, "prod-eu", version="v1.29")
    rig.api.clusters.add(EDGE, "edge", phase="Unavailable", category="Turbo", cluster_type="ARM64")
    rig.api.clusters.add(SERVERLESS, "serverless", kind="autopilot", phase="Hibernation")
    assert await rig.refresher.refresh()
    series = rig.series()
    info = {key: value for (name, key), value in series.items() if name == "cce_cluster_info"}
    assert info == {
        _info(PROD, "prod-eu", "cce", version="v1.29"): 1.0,
        _info(EDGE, "edge", "cce", category="Turbo", cluster_type="ARM64"): 1.0,
        _info(SERVERLESS, "serverless", "autopilot"): 1.0,
    }
    for cluster_id, current in ((PROD, "Available"), (EDGE, "Unavailable")):
        phases = _phases(series, cluster_id)
        assert set(phases) == set(CLUSTER_PHASES)
        assert {phase for phase, value in phases.items() if value} == {current}
    assert _phases(series, SERVERLESS)["Hibernation"] == 1.0
    assert rig.requests("list_clusters", "200") == 1.0
    assert rig.requests("list_autopilot_clusters", "200") == 1.0
    directory = rig.refresher.directory
    assert [c.kind for c in directory] == [ClusterKind.CCE, ClusterKind.CCE, ClusterKind.AUTOPILOT]
    assert directory.name(SERVERLESS) == "serverless"
    assert directory.resolve("edge") == (EDGE,)


async def test_an_unknown_phase_is_kept_and_a_missing_one_is_no_phase(rig: Rig) -> None:
    """An undocumented phase gets its own series at 1; a cluster without a phase has all at 0."""
    rig.api.clusters.add(PROD, "prod", phase="Freezing")
    rig.api.clusters.add(EDGE, "edge")
    del rig.api.clusters.items["cce"][1]["status"]
    await rig.refresher.refresh()
    series = rig.series()
    frozen = _phases(series, PROD)
    assert frozen["Freezing"] == 1.0
    assert sum(frozen.values()) == 1.0
    assert len(frozen) == len(CLUSTER_PHASES) + 1
    unknown = _phases(series, EDGE)
    assert set(unknown) == set(CLUSTER_PHASES)
    assert sum(unknown.values()) == 0.0


async def test_a_cluster_that_disappears_leaves_no_series(rig: Rig) -> None:
    """A cluster the lists no longer show has neither info nor phase series at the next scrape."""
    rig.api.clusters.add(PROD, "prod")
    rig.api.clusters.add(SERVERLESS, "serverless", kind="autopilot")
    await rig.refresher.refresh()
    assert SERVERLESS in rig.render()
    rig.api.clusters.remove(SERVERLESS)
    rig.api.clusters.set_phase(PROD, "Upgrading")
    await rig.refresher.refresh()
    text = rig.render()
    assert SERVERLESS not in text
    assert SERVERLESS not in rig.refresher.directory
    assert _phases(rig.series(), PROD)["Upgrading"] == 1.0


async def test_a_failed_refresh_keeps_the_last_list_and_counts_the_failure(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A list answering 500 keeps its clusters, counts its requests, logs once; the other moves."""
    rig.api.clusters.add(PROD, "prod")
    rig.api.clusters.add(SERVERLESS, "serverless", kind="autopilot")
    await rig.refresher.refresh()
    before = rig.render()
    rig.api.clusters.fault["cce"] = (500, INTERNAL_500)
    rig.api.clusters.set_phase(SERVERLESS, "Awaking")
    with caplog.at_level(logging.DEBUG, logger="exporter.watch.clusters"):
        assert not await rig.refresher.refresh()
        assert not await rig.refresher.refresh()
    assert rig.refresher.directory.name(PROD) == "prod"
    series = rig.series()
    assert _phases(series, PROD)["Available"] == 1.0
    assert _phases(series, SERVERLESS)["Awaking"] == 1.0
    assert ("cce_cluster_info", _info(PROD, "prod", "cce")) in series
    assert before != rig.render()
    # Three attempts per refresh, as for any transient failure of the API.
    assert rig.requests("list_clusters", "500") == 6.0
    failed = [r for r in caplog.records if r.getMessage() == "cluster_list_failed"]
    assert len(failed) == 1
    assert failed[0].levelno == logging.WARNING
    del rig.api.clusters.fault["cce"]
    rig.api.clusters.remove(PROD)
    with caplog.at_level(logging.INFO, logger="exporter.watch.clusters"):
        assert await rig.refresher.refresh()
    assert "cluster_list_recovered" in [r.getMessage() for r in caplog.records]
    assert PROD not in rig.render()


async def test_a_list_that_is_not_a_cluster_list_keeps_the_last_one(rig: Rig) -> None:
    """An answer that is not a cluster list is an invalid response; the clusters stay."""
    rig.api.clusters.add(PROD, "prod")
    await rig.refresher.refresh()
    rig.api.clusters.fault["cce"] = (200, json.dumps({"items": {"not": "a list"}}))
    assert not await rig.refresher.refresh()
    assert PROD in rig.refresher.directory
    assert rig.requests("list_clusters", "200") == 2.0


async def test_bad_items_cost_only_themselves_and_count_as_parse_errors(rig: Rig) -> None:
    """Items without an ID or of the wrong shape are skipped and counted; the others are served."""
    rig.api.clusters.add(PROD, "prod")
    rig.api.clusters.items["cce"] += [17, {"metadata": {"name": "no-id"}}]
    await rig.refresher.refresh()
    assert [c.cluster_id for c in rig.refresher.directory] == [PROD]
    errors = "cce_exporter_parse_errors_total"
    registry = rig.instruments.registry
    assert registry.get_sample_value(errors, {"field": "cluster"}) == 1.0
    assert registry.get_sample_value(errors, {"field": "cluster.metadata.uid"}) == 1.0


async def test_forbidden_cluster_lists_do_not_stop_job_polling(
    rig: Rig, instruments: Instruments, caplog: pytest.LogCaptureFixture
) -> None:
    """A 403 on the cluster lists is logged once with a hint, and jobs are polled all the same."""
    rig.api.add_job("job-1")
    rig.api.clusters.fault["cce"] = (403, FORBIDDEN)
    rig.api.clusters.fault["autopilot"] = (403, FORBIDDEN)
    clock = Clock()
    store = JobStore()
    settings = PollSettings(PROJECT_ID, poll_interval=30, poll_concurrency=2, finished_retention=60)
    scheduler = Scheduler(rig.client, store, instruments, settings, clock=clock, monotonic=clock)
    scheduler.watch(["job-1"])
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert not await rig.refresher.refresh()
            clock.now += 30
            await scheduler.poll_due(jitter=False)
    state = store.get("job-1")
    assert state is not None
    assert state.polls == 3
    assert state.last_ok
    failed = [r for r in caplog.records if r.getMessage() == "cluster_list_failed"]
    assert len(failed) == 2  # once for each list
    assert all("cce:cluster:list" in str(r.__dict__.get("fields")) for r in failed)
    refused = [r for r in caplog.records if r.getMessage() == "authentication_failed"]
    actions = sorted(r.__dict__["fields"]["action"] for r in refused)
    assert actions == ["cce:cluster:list", "cce:cluster:list (Autopilot)"]
    assert rig.api.requests["job-1"] == 3


async def test_the_refresher_reads_on_its_interval() -> None:
    """run() reads both lists, then waits cluster_refresh_interval, again and again."""

    class Lister:
        def __init__(self) -> None:
            self.calls: list[ClusterKind] = []

        async def list_clusters(self, project_id: str, kind: ClusterKind) -> ClusterList:
            self.calls.append(kind)
            return ClusterList(())

    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            raise asyncio.CancelledError

    lister = Lister()
    refresher = ClusterRefresher(
        lister, Instruments(), ClusterRefreshSettings("p", interval=120.0), sleep=sleep
    )
    with pytest.raises(asyncio.CancelledError):
        await refresher.run()
    assert waits == [120.0, 120.0, 120.0]
    assert lister.calls == [ClusterKind.CCE, ClusterKind.AUTOPILOT] * 3


async def test_the_service_serves_cluster_series_in_both_formats(
    aiohttp_server: AiohttpServer,
) -> None:
    """Wired by the composition root, the clusters appear in text and in parseable OpenMetrics."""
    api = FakeCCE(project_id=PROJECT_ID)
    api.clusters.add(PROD, "prod-eu")
    api.clusters.add(SERVERLESS, "serverless", kind="autopilot", phase="Creating")
    api.add_job("job-1")
    server = await aiohttp_server(api.app())
    settings = Settings(
        endpoint=str(server.make_url("")).rstrip("/"),
        project_id=PROJECT_ID,
        auth_token=SecretStr(TOKEN),
        cluster_refresh_interval=600,
        job_ids=("job-1",),
    )
    async with exporter(settings) as ex:
        (refresher,) = ex.clusters  # one per target
        assert await refresher.refresh()
        await ex.scheduler.poll_due(jitter=False)
        text = ex.renderer.render(ex.store).decode()
        openmetrics = ex.renderer.render(ex.store, openmetrics=True).decode()
    series = parse_series(text)
    assert series[("cce_cluster_info", _info(PROD, "prod-eu", "cce"))] == 1.0
    families = {family.name: family for family in parse_openmetrics(openmetrics)}
    phases = {
        sample.labels["phase"]: sample.value
        for sample in families["cce_cluster_status_phase"].samples
        if sample.labels["cluster_id"] == SERVERLESS
    }
    assert phases["Creating"] == 1.0
    assert families["cce_cluster_info"].type in ("gauge", "info")
    assert text.index("# HELP cce_exporter_build_info") < text.index("# HELP cce_cluster_info")
    assert text.index("# HELP cce_cluster_info") < text.index("# HELP cce_job_info")
