from typing import Any

from pydantic import SecretStr

from exporter.app import exporter
from exporter.demo.cloud import DEMO_PROJECT_ID, DEMO_TOKEN, DemoCloud, create_demo_app, to_v2
from exporter.jobs.tree import flatten
from exporter.jobs.v2 import flatten_v2
from exporter.settings.model import Settings


def test_demo_v2_objects_flatten_like_their_v3_objects() -> None:
    """Every demo job, at every stage, reads the same from the v2 list as from the v3 API."""
    now = [1_750_000_000.0]
    cloud = DemoCloud(clock=lambda: now[0], initial_jobs=5)
    for step in range(0, 400, 20):
        now[0] = 1_750_000_000.0 + step
        for job in cloud.jobs():
            v3 = job.to_api(now[0])
            assert flatten_v2(to_v2(v3), job.job_id) == flatten(v3, job.job_id)


async def test_demo_discovery_finds_every_demo_job(aiohttp_server: Any) -> None:
    """With discover on, the demo's job list yields every demo job without naming any."""
    cloud = DemoCloud(initial_jobs=4)  # on the real clock, as the exporter's discovery
    server = await aiohttp_server(create_demo_app(cloud))
    settings = Settings(
        endpoint=str(server.make_url("")).rstrip("/"),
        project_id=DEMO_PROJECT_ID,
        auth_token=SecretStr(DEMO_TOKEN),
        discover=True,
    )
    async with exporter(settings) as ex:
        assert ex.discovery is not None
        result = await ex.discovery.refresh()
        await ex.scheduler.poll_due(jitter=False)
        watched = {state.job_id for state in ex.store}
        ok = all(state.last_ok for state in ex.store)
    assert result.ok
    assert watched == {job.job_id for job in cloud.jobs()}
    assert len(watched) == 4
    assert ok
