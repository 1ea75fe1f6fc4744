"""The demo: the service run against the built-in simulated CCE API, on loopback.

Two simulated regions, each a project of its own on an endpoint of its own,
are watched as two targets (`demo-eu` and `demo-ap`), so that everything
that is per target (labels, the status page's target filter, the
dashboard's target picker) has something to show.
"""

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from exporter.app import SHUTDOWN_GRACE, run_service
from exporter.demo.cloud import (
    CLUSTERS_2,
    DEMO_PROJECT_ID_2,
    DEMO_TOKEN,
    DemoCloud,
    create_demo_app,
)
from exporter.logs import about_target, event
from exporter.settings.model import AUTH_METHODS, Settings
from exporter.settings.targets import PER_TARGET, TargetSettings
from exporter.watch.watchlist import Route, WatchList

log = logging.getLogger(__name__)

# How often the demo looks for newly arrived jobs to watch.
_DEMO_ARRIVAL_CHECK = 2.0
# The demo's poll interval when none is configured: a few seconds, to see movement.
_DEMO_POLL_INTERVAL = 5.0


@dataclass(frozen=True, slots=True)
class _Region:
    """One simulated region: its target's name and its cloud."""

    name: str
    cloud: DemoCloud


def _regions() -> tuple[_Region, ...]:
    """Make the demo's two simulated regions: two projects with jobs and clusters of their own."""
    return (
        _Region("demo-eu", DemoCloud()),
        _Region(
            "demo-ap",
            DemoCloud(
                project_id=DEMO_PROJECT_ID_2,
                clusters=CLUSTERS_2,
                seed="ap/",
                initial_jobs=3,
                arrival=55.0,
            ),
        ),
    )


async def run_demo(
    settings: Settings, stop: asyncio.Event, *, reload: asyncio.Event | None = None
) -> int:
    """Run the service against the built-in simulated CCE API: two regions, two targets."""
    regions = _regions()
    runners = []
    targets = []
    try:
        for region in regions:
            runner = web.AppRunner(
                create_demo_app(region.cloud),
                access_log=None,
                handle_signals=False,
                shutdown_timeout=SHUTDOWN_GRACE,
            )
            runners.append(runner)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}"
            event(log, logging.INFO, "demo_api_started", target=region.name, endpoint=endpoint)
            targets.append(_target(settings, region, endpoint))
        return await run_service(
            _demo_settings(settings, targets),
            stop,
            None
            if settings.discover
            else lambda ex: [_follow_demo_arrivals(regions, ex.watchlist)],
            reload=reload,
        )
    finally:
        for runner in runners:
            await runner.cleanup()


def _target(settings: Settings, region: _Region, endpoint: str) -> TargetSettings:
    """Make the target of one simulated region, with the demo's own token."""
    fields: dict[str, Any] = {
        "name": region.name,
        "endpoint": endpoint,
        "project_id": region.cloud.project_id,
        "auth_token": SecretStr(DEMO_TOKEN),
    }
    if settings.discover:
        # The demo's job list finds the jobs: none is named.
        fields["discover"] = True
        fields["discover_interval"] = settings.discover_interval
        if "discover_interval" not in settings.model_fields_set:
            fields["discover_interval"] = _DEMO_ARRIVAL_CHECK
    else:
        fields["job_ids"] = tuple(job.job_id for job in region.cloud.jobs())
    return TargetSettings(**fields)


def _demo_settings(settings: Settings, targets: list[TargetSettings]) -> Settings:
    """Return the settings with the demo's targets in place of any endpoint, project or auth."""
    interval = settings.poll_interval
    if "poll_interval" not in settings.model_fields_set:
        interval = _DEMO_POLL_INTERVAL
    update: dict[str, Any] = {
        # The demo's own targets replace whatever was configured.
        **dict.fromkeys(name for names in AUTH_METHODS.values() for name in names),
        **{name: Settings.model_fields[name].default for name in PER_TARGET},
        "targets": tuple(targets),
        "poll_interval": interval,
    }
    return settings.model_copy(update=update)


async def _follow_demo_arrivals(regions: tuple[_Region, ...], watchlist: WatchList) -> None:
    """Watch each new demo job as it arrives, through the same gate as every route."""
    offered: set[str] = set()
    while True:
        await asyncio.sleep(_DEMO_ARRIVAL_CHECK)
        for region in regions:
            new = [job.job_id for job in region.cloud.jobs() if job.job_id not in offered]
            offered.update(new)
            with about_target(region.name):
                for job_id in watchlist.add(Route.SETTINGS, new, region.name).added:
                    event(log, logging.INFO, "demo_job_arrived", job_id=job_id)
