"""discover_clusters: discovery watches only the jobs of the named clusters."""

import logging
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from exporter.app import exporter
from exporter.jobs.ids import Api
from exporter.settings.model import Settings
from tests.standins.cce import PROJECT_ID, TOKEN, FakeCCE

PROD = "4d1ecb2c-229a-11e8-9c75-0255ac100ceb"
EDGE = "5e2fdc3d-229a-11e8-9c75-0255ac100ceb"
SERVERLESS = "6f30ed4e-229a-11e8-9c75-0255ac100ceb"
UNLISTED = "7041fe5f-229a-11e8-9c75-0255ac100ceb"


@pytest.fixture
def cce() -> FakeCCE:
    """Three named clusters (one Autopilot), two running jobs on each, two on an unlisted one."""
    api = FakeCCE()
    api.clusters.add(PROD, "prod-eu")
    api.clusters.add(EDGE, "edge")
    api.clusters.add(SERVERLESS, "serverless", kind="autopilot")
    now = time.time()
    for cluster, on in ((PROD, Api.CCE), (EDGE, Api.CCE), (SERVERLESS, Api.AUTOPILOT)):
        for n in range(2):
            job_id = f"{cluster[:8]}-{n}"
            api.add_listed(job_id, api=on, created=now - 60)
            listing = api.autopilot_listing if on is Api.AUTOPILOT else api.listing
            listing[-1]["spec"]["clusteruid"] = cluster
    for n in range(2):
        api.add_listed(f"unlisted-{n}", created=now - 60)
        api.listing[-1]["spec"]["clusteruid"] = UNLISTED
    return api


@pytest.fixture
async def server(cce: FakeCCE, aiohttp_server: Any) -> TestServer:
    """Serve the stand-in API on loopback."""
    served: TestServer = await aiohttp_server(cce.app())
    return served


def _settings(server: TestServer, clusters: str) -> Settings:
    return Settings(
        endpoint=str(server.make_url("")).rstrip("/"),
        project_id=PROJECT_ID,
        auth_token=SecretStr(TOKEN),
        discover=True,
        discover_clusters=clusters,  # type: ignore[arg-type]  # the comma-separated form, as from env
    )


async def _watched(server: TestServer, clusters: str) -> set[str]:
    async with exporter(_settings(server, clusters)) as ex:
        assert ex.discovery is not None
        (refresher,) = ex.clusters  # one per target
        await refresher.refresh()
        await ex.discovery.refresh()
        return {state.job_id for state in ex.store}


async def test_names_of_either_kind_pick_their_clusters_jobs_only(server: TestServer) -> None:
    """Names resolve through both cluster lists: only the named clusters' jobs are watched."""
    watched = await _watched(server, "prod-eu,serverless")
    assert watched == {
        f"{PROD[:8]}-0",
        f"{PROD[:8]}-1",
        f"{SERVERLESS[:8]}-0",
        f"{SERVERLESS[:8]}-1",
    }


async def test_an_id_matches_even_when_no_list_shows_it(server: TestServer) -> None:
    """An entry that is a cluster ID matches as it is, listed or not."""
    watched = await _watched(server, f"{EDGE},{UNLISTED}")
    assert watched == {f"{EDGE[:8]}-0", f"{EDGE[:8]}-1", "unlisted-0", "unlisted-1"}


async def test_an_unknown_name_watches_nothing_and_is_said_once(
    server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A name no list shows picks no job, and the warning comes once however many passes."""
    caplog.set_level(logging.WARNING)
    async with exporter(_settings(server, "nowhere")) as ex:
        assert ex.discovery is not None
        (refresher,) = ex.clusters  # one per target
        await refresher.refresh()
        for _ in range(3):
            await ex.discovery.refresh()
        assert len(ex.store) == 0
    said = [r for r in caplog.records if r.getMessage() == "discover_clusters_unresolved"]
    assert len(said) == 1


async def test_a_name_that_comes_to_resolve_is_picked_up_next_pass(
    cce: FakeCCE, server: TestServer
) -> None:
    """A cluster named before it is listed: its jobs are watched from the pass after it appears."""
    async with exporter(_settings(server, "later")) as ex:
        assert ex.discovery is not None
        (refresher,) = ex.clusters  # one per target
        await refresher.refresh()
        await ex.discovery.refresh()
        assert len(ex.store) == 0
        cce.clusters.add(UNLISTED, "later")
        await refresher.refresh()
        await ex.discovery.refresh()
        assert {state.job_id for state in ex.store} == {"unlisted-0", "unlisted-1"}


async def test_without_the_setting_every_cluster_counts(server: TestServer) -> None:
    """No discover_clusters: the jobs of all four clusters are watched."""
    watched = await _watched(server, "")
    assert len(watched) == 8
