import aiohttp
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from exporter.cce.auth.base import TokenAuth
from exporter.cce.client import CCEClient
from exporter.demo import run as demo_run
from exporter.demo.cloud import (
    CLUSTERS_2,
    DEMO_PROJECT_ID,
    DEMO_PROJECT_ID_2,
    DEMO_TOKEN,
    DemoCloud,
    create_demo_app,
    go_time,
)
from exporter.jobs.state import JobStore
from exporter.jobs.timestamps import parse_timestamp
from exporter.jobs.tree import flatten
from exporter.metrics.cce_exporter import Instruments
from exporter.scheduler import PollSettings, Scheduler
from exporter.settings.model import Settings
from exporter.settings.resolved import resolve_targets
from tests.standins.clocks import Clock


def test_jobs_move_through_their_phases() -> None:
    """A demo job goes Initializing, Running, then Success, with sub-jobs in step."""
    clock = Clock(1_800_000_000.0)
    cloud = DemoCloud(clock=clock, initial_jobs=1)
    (job,) = cloud.jobs()
    seen = []
    for _ in range(60):
        tree = flatten(job.to_api(clock.now), job.job_id)
        seen.append(tree.root.phase)
        clock.now += 5
    assert seen[0] == "Initializing"
    assert "Running" in seen
    assert seen[-1] == "Success"
    assert seen.index("Running") < seen.index("Success")
    assert all(node.phase == "Success" for node in tree.nodes)


def test_failing_template_fails_with_a_reason() -> None:
    """The scale-up demo job ends Failed with the reason on the job and its sub-job."""
    clock = Clock(1_800_000_000.0)
    cloud = DemoCloud(clock=clock, initial_jobs=3)
    job = next(job for job in cloud.jobs() if job.template.job_type == "ScaleupCluster")
    clock.now += 600
    tree = flatten(job.to_api(clock.now), job.job_id)
    assert tree.root.phase == "Failed"
    assert "recycle resource" in tree.root.reason
    assert [node.phase for node in tree.nodes[1:]] == ["Success", "Failed"]


def test_new_jobs_keep_arriving() -> None:
    """Every arrival interval one more job exists."""
    clock = Clock(1_800_000_000.0)
    cloud = DemoCloud(clock=clock, initial_jobs=4, arrival=40)
    assert len(cloud.jobs()) == 4
    clock.now += 40
    assert len(cloud.jobs()) == 5
    clock.now += 400
    assert len(cloud.jobs()) == 15
    assert len({job.job_id for job in cloud.jobs()}) == 15


def test_timestamps_are_in_go_form() -> None:
    """The demo writes times the way CCE does, and they parse back to the nanosecond."""
    text = go_time(1_533_197_560.5)
    assert text == "2018-08-02 08:12:40.500000000 +0000 UTC"
    assert parse_timestamp(text) == 1_533_197_560_500_000_000


async def test_exporter_follows_the_demo_through_the_real_client(
    aiohttp_server: AiohttpServer, instruments: Instruments
) -> None:
    """Polled over HTTP, demo jobs change phase as the simulated time passes."""
    clock = Clock(1_800_000_000.0)
    cloud = DemoCloud(clock=clock)
    server = await aiohttp_server(create_demo_app(cloud))
    store = JobStore()
    async with aiohttp.ClientSession() as session:
        client = CCEClient(
            session, str(server.make_url("")), TokenAuth(SecretStr(DEMO_TOKEN)), instruments,
            timeout=5,
        )  # fmt: skip
        scheduler = Scheduler(
            client,
            store,
            instruments,
            PollSettings(DEMO_PROJECT_ID, poll_interval=5, poll_concurrency=4,
                         finished_retention=3600),
            clock=clock, monotonic=clock,
        )  # fmt: skip
        scheduler.watch(job.job_id for job in cloud.jobs())
        await scheduler.poll_due(jitter=False)
        before = {state.job_id: state.tree.root.phase for state in store if state.tree}
        clock.now += 400
        scheduler.watch(job.job_id for job in cloud.jobs())
        await scheduler.poll_due(jitter=False)
        after = {state.job_id: state.tree.root.phase for state in store if state.tree}
    assert all(state.last_ok for state in store)
    assert len(after) > len(before)
    assert any(before[job_id] != after[job_id] for job_id in before)
    assert {"Success", "Failed"} <= set(after.values())


def test_the_demo_watches_two_regions_as_two_targets() -> None:
    """The demo's settings resolve to two targets: two projects, two endpoints, no shared job."""
    regions = demo_run._regions()
    targets = [
        demo_run._target(Settings(), region, f"http://127.0.0.1:{9000 + index}")
        for index, region in enumerate(regions)
    ]
    resolved = resolve_targets(demo_run._demo_settings(Settings(project_id="x"), targets))
    assert [t.name for t in resolved] == ["demo-eu", "demo-ap"]
    assert len({t.project_id for t in resolved}) == 2
    assert len({t.endpoint for t in resolved}) == 2
    assert all(t.auth_method == "token" for t in resolved)
    first, second = (set(t.job_ids) for t in resolved)
    assert first
    assert second
    assert not first & second
    clusters = [{c.cluster_id for c in region.cloud.clusters} for region in regions]
    assert not clusters[0] & clusters[1]


async def test_a_demo_region_serves_only_its_own_project(aiohttp_server: AiohttpServer) -> None:
    """Each simulated region answers for its own project and refuses the other's."""
    cloud = DemoCloud(project_id=DEMO_PROJECT_ID_2, clusters=CLUSTERS_2, seed="ap/")
    server = await aiohttp_server(create_demo_app(cloud))
    job = cloud.jobs()[0]
    headers = {"X-Auth-Token": DEMO_TOKEN}
    async with aiohttp.ClientSession() as session:
        own = server.make_url(f"/api/v3/projects/{DEMO_PROJECT_ID_2}/jobs/{job.job_id}")
        other = server.make_url(f"/api/v3/projects/{DEMO_PROJECT_ID}/jobs/{job.job_id}")
        async with session.get(own, headers=headers) as response:
            assert response.status == 200
        async with session.get(other, headers=headers) as response:
            assert response.status == 403
