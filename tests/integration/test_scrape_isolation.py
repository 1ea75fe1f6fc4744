"""A scrape never calls the CCE API and never waits on it: shown with every answer held back."""

import asyncio
import gzip
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from exporter.app import exporter
from exporter.server.endpoints import WebContext, create_app
from exporter.settings.model import Settings
from exporter.watch.watchlist import Route
from tests.standins.cce import TOKEN, FakeCCE, Fault

PROJECT = "proj"
JOBS = ("held-1", "held-2", "held-3")
# Answered at once: until one request is answered the API's verdict on the
# credentials is unknown, and the auth gate lets only that one request try.
WARM = "warm"
# Only guards against a hang: no answer here is timed.
HANG_GUARD = 10.0
SCRAPES = 5


async def test_scrapes_answer_and_send_nothing_while_every_poll_is_held(
    aiohttp_server: AiohttpServer, aiohttp_client: Any
) -> None:
    """With every poll waiting on the API, /metrics answers 200 and adds no API request."""
    api = FakeCCE()
    release = asyncio.Event()
    for job_id in JOBS:
        api.add_job(job_id)
        api.faults[job_id] = Fault(hold=release)
    api.add_job(WARM)
    warmed, arrived = asyncio.Event(), asyncio.Event()

    def on_request(_request: web.Request) -> None:
        warmed.set()  # the first request, WARM's, has passed the auth gate
        if api.requests.total() > len(JOBS):
            arrived.set()

    api.on_request = on_request
    server = await aiohttp_server(api.app())
    settings = Settings(
        endpoint=str(server.make_url("")).rstrip("/"),
        project_id=PROJECT,
        auth_token=SecretStr(TOKEN),
        job_ids=(WARM,),
        # Long enough that no timeout (and so no retry) sends another request.
        request_timeout=300.0,
        poll_interval=300.0,
    )
    async with exporter(settings) as ex:
        app = create_app(WebContext(ex.store, ex.renderer, ex.ready, PROJECT))
        client: TestClient[Any, Any] = await aiohttp_client(app)
        poller = asyncio.create_task(ex.scheduler.run())
        try:
            async with asyncio.timeout(HANG_GUARD):
                await warmed.wait()
            # WARM's request went first: the held jobs' polls follow it through the
            # auth gate once it is answered, and all wait on the stand-in together.
            ex.watchlist.add(Route.SETTINGS, JOBS)
            async with asyncio.timeout(HANG_GUARD):
                await arrived.wait()  # every held job's request reached the stand-in
            before = dict(api.requests)
            assert before == dict.fromkeys((WARM, *JOBS), 1)
            bodies = []
            async with asyncio.timeout(HANG_GUARD):
                for _ in range(SCRAPES):
                    response = await client.get("/metrics")
                    assert response.status == 200
                    bodies.append(await response.text())
                openmetrics = await client.get(
                    "/metrics", headers={"Accept": "application/openmetrics-text"}
                )
                assert openmetrics.status == 200
                zipped = await client.get(
                    "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
                )
                assert zipped.status == 200
                # The process metrics (CPU seconds) move between scrapes: compare jobs only.
                assert f'job_id="{JOBS[0]}"'.encode() in gzip.decompress(await zipped.read())
                status = await client.get("/jobs")
                assert status.status == 200
            # The polls are still waiting on their answers, and no scrape asked again.
            assert api.in_flight == len(JOBS)
            assert dict(api.requests) == before
            for job_id in JOBS:
                # Watched but never answered: its series say nothing was polled yet.
                assert f'job_id="{job_id}"' in bodies[-1]
                assert f'cce_job_poll_success{{job_id="{job_id}"' not in bodies[-1]
        finally:
            release.set()
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
