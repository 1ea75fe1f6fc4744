"""The demo: the service run against the built-in simulated CCE API, on loopback."""

import asyncio
import logging
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from exporter.app import SHUTDOWN_GRACE, run_service
from exporter.demo.cloud import DEMO_PROJECT_ID, DEMO_TOKEN, DemoCloud, create_demo_app
from exporter.logs import event
from exporter.settings.model import AUTH_METHODS, Settings
from exporter.watch.watchlist import Route, WatchList

log = logging.getLogger(__name__)

# How often the demo looks for newly arrived jobs to watch.
_DEMO_ARRIVAL_CHECK = 2.0
# The demo's poll interval when none is configured: a few seconds, to see movement.
_DEMO_POLL_INTERVAL = 5.0


async def run_demo(
    settings: Settings, stop: asyncio.Event, *, reload: asyncio.Event | None = None
) -> int:
    """Run the service against the built-in simulated CCE API."""
    cloud = DemoCloud()
    runner = web.AppRunner(
        create_demo_app(cloud),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_GRACE,
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    interval = settings.poll_interval
    if "poll_interval" not in settings.model_fields_set:
        interval = _DEMO_POLL_INTERVAL
    update: dict[str, Any] = {
        "endpoint": f"http://127.0.0.1:{port}",
        "project_id": DEMO_PROJECT_ID,
        # The demo's own token replaces whatever credentials were configured.
        **dict.fromkeys(name for names in AUTH_METHODS.values() for name in names),
        "auth_token": SecretStr(DEMO_TOKEN),
        "poll_interval": interval,
    }
    if settings.discover:
        # The demo's job list finds the jobs: none is named.
        if "discover_interval" not in settings.model_fields_set:
            update["discover_interval"] = _DEMO_ARRIVAL_CHECK
    else:
        update["job_ids"] = tuple(job.job_id for job in cloud.jobs())
    demo_settings = settings.model_copy(update=update)
    event(log, logging.INFO, "demo_api_started", endpoint=demo_settings.endpoint)
    try:
        return await run_service(
            demo_settings,
            stop,
            None if settings.discover else lambda ex: [_follow_demo_arrivals(cloud, ex.watchlist)],
            reload=reload,
        )
    finally:
        await runner.cleanup()


async def _follow_demo_arrivals(cloud: DemoCloud, watchlist: WatchList) -> None:
    """Watch each new demo job as it arrives, through the same gate as every route."""
    offered: set[str] = set()
    while True:
        await asyncio.sleep(_DEMO_ARRIVAL_CHECK)
        new = [job.job_id for job in cloud.jobs() if job.job_id not in offered]
        offered.update(new)
        for job_id in watchlist.add(Route.SETTINGS, new).added:
            event(log, logging.INFO, "demo_job_arrived", job_id=job_id)
