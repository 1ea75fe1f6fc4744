"""Several targets over HTTP: the job API names them, the status views show and filter by them."""

import re
from typing import Any

from aiohttp.test_utils import TestClient
from pydantic import SecretStr
from pytest_aiohttp import AiohttpClient

from exporter.jobs.state import JobStore
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.exposition import Renderer
from exporter.server import adminapi
from exporter.server.endpoints import WebContext, create_app
from exporter.server.statuspage import StatusViews
from exporter.watch.watchlist import Route, WatchList
from tests.conftest import idle_watchlist

ADMIN = "admin-token-for-targets"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
TARGETS = {"eu-west": "p-eu", "cn-north": "p-cn"}


async def _client(
    aiohttp_client: AiohttpClient, instruments: Instruments
) -> tuple[TestClient[Any, Any], WatchList, JobStore]:
    watchlist, store, _ = idle_watchlist(instruments, targets=TARGETS)
    context = WebContext(store, Renderer(instruments.registry), lambda: True, "", StatusViews())
    app = create_app(context)
    adminapi.register(app, adminapi.AdminContext(watchlist, SecretStr(ADMIN)))
    return await aiohttp_client(app), watchlist, store


async def test_post_watches_the_jobs_for_the_target_it_names(
    aiohttp_client: AiohttpClient, instruments: Instruments
) -> None:
    """A POST's `target` decides whose jobs they are, and so their project on /metrics."""
    client, _, store = await _client(aiohttp_client, instruments)
    response = await client.post(
        "/api/v1/jobs", json={"job_ids": ["job-a"], "target": "cn-north"}, headers=AUTH
    )
    assert response.status == 200
    assert (await response.json())["target"] == "cn-north"
    state = store.get("job-a")
    assert state is not None
    assert (state.target, state.project_id) == ("cn-north", "p-cn")
    metrics = await (await client.get("/metrics")).text()
    assert 'cce_job_poll_errors_total{error="timeout",job_id="job-a",project_id="p-cn"}' in metrics
    assert 'cce_exporter_watched_jobs{state="active",target="cn-north"} 1.0' in metrics


async def test_post_without_a_known_target_is_a_400_that_adds_nothing(
    aiohttp_client: AiohttpClient, instruments: Instruments
) -> None:
    """With several targets, a POST naming none, an unknown one or not a string is refused."""
    client, _, store = await _client(aiohttp_client, instruments)
    for body, message in (
        ({"job_ids": ["job-a"]}, "name the target of the jobs: one of eu-west, cn-north"),
        ({"job_ids": ["job-a"], "target": "ap-south"}, "unknown target 'ap-south'"),
        ({"job_ids": ["job-a"], "target": 7}, "target must be a string"),
    ):
        response = await client.post("/api/v1/jobs", json=body, headers=AUTH)
        assert response.status == 400
        assert message in (await response.json())["error"]
    assert len(store) == 0


async def test_post_of_a_job_watched_for_another_target_is_a_409(
    aiohttp_client: AiohttpClient, instruments: Instruments
) -> None:
    """An ID another target watches is answered in `other_target`, with 409, and stays there."""
    client, watchlist, store = await _client(aiohttp_client, instruments)
    watchlist.add(Route.SETTINGS, ["job-a"], "eu-west")
    response = await client.post(
        "/api/v1/jobs", json={"job_ids": ["job-a", "job-b"], "target": "cn-north"}, headers=AUTH
    )
    assert response.status == 409
    answer = await response.json()
    assert (answer["added"], answer["other_target"]) == (["job-b"], ["job-a"])
    state = store.get("job-a")
    assert state is not None
    assert state.target == "eu-west"
    # DELETE needs no target: an ID is watched for one.
    assert (await client.delete("/api/v1/jobs/job-a", headers=AUTH)).status == 200
    assert store.get("job-a") is None


async def test_status_views_show_and_filter_by_target(
    aiohttp_client: AiohttpClient, instruments: Instruments
) -> None:
    """Each job names its target and project; `target=` picks one target's jobs in both views."""
    client, watchlist, _ = await _client(aiohttp_client, instruments)
    watchlist.add(Route.SETTINGS, ["job-1", "job-2"], "eu-west")
    watchlist.add(Route.SETTINGS, ["job-3"], "cn-north")
    doc = await (await client.get("/api/v1/jobs")).json()
    assert doc["targets"] == {"cn-north": 1, "eu-west": 2}
    assert {(j["job_id"], j["target"], j["project_id"]) for j in doc["jobs"]} == {
        ("job-1", "eu-west", "p-eu"),
        ("job-2", "eu-west", "p-eu"),
        ("job-3", "cn-north", "p-cn"),
    }
    picked = await (await client.get("/api/v1/jobs?target=cn-north")).json()
    assert [job["job_id"] for job in picked["jobs"]] == ["job-3"]
    html = await (await client.get("/jobs?target=eu-west")).text()
    assert sorted(re.findall(r'data-job-id="(job-\d)" data-target="([^"]+)"', html)) == [
        ("job-1", "eu-west"),
        ("job-2", "eu-west"),
    ]
    assert '<a href="jobs?target=cn-north">cn-north</a> (1)' in html
    assert 'name="target" value="eu-west"' in html
    assert "(project p-eu)" in html


async def test_one_target_shows_no_target_clutter(
    aiohttp_client: AiohttpClient, instruments: Instruments
) -> None:
    """With the one implicit target, the page stays as it was; the JSON still names it."""
    watchlist, store, _ = idle_watchlist(instruments)
    watchlist.add(Route.SETTINGS, ["job-1"])
    app = create_app(WebContext(store, Renderer(instruments.registry), lambda: True, "p"))
    client: TestClient[Any, Any] = await aiohttp_client(app)
    html = await (await client.get("/jobs")).text()
    assert 'class="targets"' not in html
    assert 'name="target"' not in html
    doc = await (await client.get("/api/v1/jobs")).json()
    assert doc["jobs"][0]["target"] == "default"
    assert doc["targets"] == {"default": 1}
