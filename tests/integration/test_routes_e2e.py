import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from exporter.app import exporter
from exporter.server import adminapi
from exporter.server.endpoints import WebContext, create_app
from exporter.settings.model import Settings
from tests.standins.cce import PROJECT_ID, TOKEN, FakeCCE

# Long, so that "within one interval" leaves a wide margin on a busy machine: a
# new job is polled at once (the jobs file is read every second; the poll loop
# adds up to 1 s of jitter), not at the loop's next scheduled pass.
INTERVAL = 20.0


async def _polled(ex: Any, job_id: str) -> None:
    """Wait until the job has been polled once; fail if that takes more than one interval."""
    # The poll loop offers no event to wait on: look until it acts.
    async with asyncio.timeout(INTERVAL):
        while True:
            state = ex.store.get(job_id)
            if state is not None and state.polls:
                return
            await asyncio.sleep(0.02)


async def test_jobs_from_the_file_and_the_api_are_polled_within_one_interval(
    tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any
) -> None:
    """With the service's loops running, a job added to the file or by POST is polled in time."""
    now = time.time()
    cce = FakeCCE()
    for job_id in ("from-file", "from-api", "from-settings"):
        cce.add_listed(job_id, created=now - 60)
    server = await aiohttp_server(cce.app())
    jobs_file = tmp_path / "jobs.txt"
    jobs_file.write_text("# none yet\n")
    settings = Settings(
        endpoint=str(server.make_url("")).rstrip("/"),
        project_id=PROJECT_ID,
        auth_token=SecretStr(TOKEN),
        admin_token=SecretStr("admin"),
        job_ids=("from-settings",),
        job_ids_file=jobs_file,
        poll_interval=INTERVAL,
    )
    async with exporter(settings) as ex:
        app = create_app(WebContext(ex.store, ex.renderer, lambda: ex.scheduler.ready))
        adminapi.register(app, adminapi.AdminContext(ex.watchlist, settings.admin_secret))
        client: TestClient[Any, Any] = await aiohttp_client(app)
        tasks = [asyncio.create_task(coro) for coro in (ex.scheduler.run(), *ex.background())]
        try:
            await _polled(ex, "from-settings")
            jobs_file.write_text("from-file\n")
            await _polled(ex, "from-file")
            response = await client.post(
                "/api/v1/jobs",
                json={"job_ids": ["from-api"]},
                headers={"Authorization": "Bearer admin"},
            )
            assert response.status == 200
            await _polled(ex, "from-api")
            metrics = await (await client.get("/metrics")).text()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    for job_id in ("from-file", "from-api", "from-settings"):
        assert f'cce_job_poll_success{{job_id="{job_id}",project_id="{PROJECT_ID}"}} 1.0' in metrics
    assert cce.requests["from-api"] >= 1
