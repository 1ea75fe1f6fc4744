"""The composition root: settings in, a running exporter out (run_service), and its --once form."""

import asyncio
import contextlib
import logging
import os
import re
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from exporter import __version__
from exporter.cce.auth.base import Authenticator
from exporter.cce.proxy import Proxies
from exporter.cce.ratelimit import RateLimiter
from exporter.cce.targets import target_auth, target_client
from exporter.jobs.state import JobStore
from exporter.logs import crash, event
from exporter.metrics.cce_cluster import ClusterCollector
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.exposition import Renderer
from exporter.metrics.history import JobHistory
from exporter.scheduler import PollSettings, PollTarget, Scheduler
from exporter.server import adminapi
from exporter.server.connections import ConnectionGuard, GuardedSite, Limits
from exporter.server.endpoints import WebContext, create_app
from exporter.server.webconfig.format import WebConfigError
from exporter.server.webconfig.live import LiveWebConfig, secure
from exporter.settings.load import ConfigError, Problem
from exporter.settings.model import Settings, split_host_port
from exporter.settings.resolved import Target, resolve_targets
from exporter.watch.clusters import AllClusters, ClusterRefresher, ClusterRefreshSettings
from exporter.watch.discovery import Discovery, DiscoverySettings, JobLister
from exporter.watch.jobsfile import JobsFile
from exporter.watch.sharding import Shard
from exporter.watch.watchlist import Route, WatchList

log = logging.getLogger(__name__)

# Seconds a scrape under way may take to finish once the process is told to stop:
# the whole shutdown must fit in the 5 s that orchestrators usually wait.
SHUTDOWN_GRACE = 2.0


@dataclass(slots=True)
class _Latch:
    """A flag that, once up, stays up; and the jobs it still waits for."""

    up: bool = False
    # The jobs watched when the job lists had first been read, less those
    # polled since: None until then. Jobs added later are not waited for.
    waiting: set[str] | None = None


@dataclass(frozen=True, slots=True)
class Exporter:
    """The parts of a running exporter."""

    settings: Settings
    instruments: Instruments
    store: JobStore
    scheduler: Scheduler
    renderer: Renderer
    watchlist: WatchList
    jobs_file: JobsFile | None = None
    discoveries: tuple[Discovery, ...] = ()  # one per target that discovers
    targets: tuple[Target, ...] = ()
    clusters: tuple[ClusterRefresher, ...] = ()  # one per target
    started: _Latch = field(default_factory=_Latch, repr=False)

    @property
    def discovery(self) -> Discovery | None:
        """The discovery of the first target that discovers, if any (the only one, usually)."""
        return self.discoveries[0] if self.discoveries else None

    def ready(self) -> bool:
        """Tell whether start-up is done: every watched job polled once, the job list read once.

        Once ready, always ready: jobs added later (discovery, the jobs file,
        the job API) are polled as they come, and a thousand of them at once
        must not take the exporter out of its Service for minutes.
        """
        latch = self.started
        if latch.up or not all(discovery.tried for discovery in self.discoveries):
            return latch.up
        if latch.waiting is None:
            # The jobs there are now, and no more: while jobs keep arriving (a
            # busy project, the demo), some new one is always unpolled, and a
            # probe that came at such a moment would never see the exporter ready.
            latch.waiting = {state.job_id for state in self.store}
        store = self.store
        latch.waiting = {
            job_id
            for job_id in latch.waiting
            if (state := store.get(job_id)) is not None and state.polls == 0
        }
        latch.up = not latch.waiting
        return latch.up

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """Return the loops that feed the watch list beside the poll loop."""
        loops = []
        if self.jobs_file is not None:
            loops.append(self.jobs_file.run())
        loops += [discovery.run() for discovery in self.discoveries]
        loops += [clusters.run() for clusters in self.clusters]
        return loops


def ssl_context(settings: Settings) -> ssl.SSLContext | bool:
    """TLS trust for the outgoing connections."""
    if settings.insecure_skip_verify:
        event(log, logging.WARNING, "tls_verification_disabled", setting="insecure_skip_verify")
        return False
    if settings.ca_bundle is not None:
        # The bundle adds to the system's trust: the IAM endpoint may be public
        # while the CCE endpoint sits behind a private CA.
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=str(settings.ca_bundle))
        return context
    return True


def make_auth(
    settings: Settings,
    session: aiohttp.ClientSession,
    instruments: Instruments,
    limiter: RateLimiter | None = None,
) -> Authenticator:
    """Return the authenticator of the settings' first (or only) target."""
    target = resolve_targets(settings)[0]
    return target_auth(target, session, instruments.target(target.name), limiter)


def _discovery(
    target: Target,
    watchlist: WatchList,
    instruments: Instruments,
    settings: Settings,
    *,
    reader: JobLister,
    clusters: ClusterRefresher,
) -> Discovery:
    """Build the discovery of a target that discovers, with its target's cluster lists."""
    job_types = target.discover_job_types
    return Discovery(
        reader,
        watchlist,
        instruments,
        DiscoverySettings(
            project_id=target.project_id,
            interval=target.discover_interval,
            max_age=target.discover_max_age,
            job_types=re.compile(job_types) if job_types is not None else None,
            finished_retention=settings.finished_retention,
            target=target.name,
            clusters=target.discover_clusters,
        ),
        clusters=clusters,
    )


@contextlib.asynccontextmanager
async def exporter(settings: Settings) -> AsyncIterator[Exporter]:
    """Build the exporter: one HTTP session for its whole life, closed at the end."""
    shard = Shard(settings.shard, settings.shard_count)
    instruments = Instruments(shard_index=shard.index, shard_count=shard.count)
    targets = resolve_targets(settings)
    # Room for each target's discovery and IAM requests besides the polls:
    # a target whose API hangs holds no connection another's polls need.
    limit = settings.poll_concurrency + 2 * (len(targets) - 1)
    connector = aiohttp.TCPConnector(limit=limit, ssl=ssl_context(settings))
    async with aiohttp.ClientSession(connector=connector) as session:
        clients = {}
        for target in targets:
            view = instruments.target(target.name)
            instruments.describe_target(
                target.name, target.project_id, target.region or "", target.endpoint
            )
            clients[target.name] = target_client(target, session, view)
        store = JobStore()
        # One history for every target: each job counts under its own project_id.
        history = JobHistory(
            instruments.registry, started=time.time(), retention=settings.finished_retention
        )
        scheduler = Scheduler(
            [PollTarget(t.name, t.project_id, clients[t.name]) for t in targets],
            store,
            instruments,
            PollSettings(
                project_id=targets[0].project_id,
                poll_interval=settings.poll_interval,
                poll_concurrency=settings.poll_concurrency,
                finished_retention=settings.finished_retention,
                jitter=min(1.0, settings.poll_interval / 10),
            ),
            history=history,
        )
        watchlist = WatchList(scheduler, instruments, shard=shard, max_jobs=settings.max_jobs)
        for target in targets:
            watchlist.add(Route.SETTINGS, target.job_ids, target.name)
        jobs_file = None
        if settings.job_ids_file is not None:
            jobs_file = JobsFile(settings.job_ids_file, watchlist)
            jobs_file.check()
        clusters = tuple(
            ClusterRefresher(
                clients[target.name],
                instruments,
                ClusterRefreshSettings(
                    target.project_id,
                    interval=settings.cluster_refresh_interval,
                    target=target.name,
                ),
            )
            for target in targets
        )
        discoveries = tuple(
            _discovery(
                target,
                watchlist,
                instruments,
                settings,
                reader=clients[target.name],
                clusters=refresher,
            )
            for target, refresher in zip(targets, clusters, strict=True)
            if target.discover
        )
        instruments.registry.register(ClusterCollector({c.project_id: c.current for c in clusters}))
        event(log, logging.INFO, "shard", index=shard.index, count=shard.count, jobs=len(store))
        proxies = Proxies.from_environ(os.environ).describe()
        if proxies:  # without credentials
            event(log, logging.INFO, "proxies", **proxies)
        try:
            yield Exporter(
                settings,
                instruments,
                store,
                scheduler,
                Renderer(instruments.registry, sparse=settings.sparse_metrics),
                watchlist,
                jobs_file,
                discoveries,
                targets,
                clusters,
            )
        finally:
            await scheduler.stop()


async def run_once(settings: Settings) -> int:
    """Poll every watched job once and print the exposition; 0 if every poll succeeded."""
    async with exporter(settings) as ex:
        # Cluster names and phases, first: discovery keeps to the clusters it names.
        await asyncio.gather(*(clusters.refresh() for clusters in ex.clusters))
        passes = await asyncio.gather(*(discovery.refresh() for discovery in ex.discoveries))
        listed = all(result.ok for result in passes)
        if not ex.store:
            event(
                log,
                logging.WARNING,
                "no_jobs",
                hint="set job_ids, job_ids_file or discover to choose the jobs to poll",
            )
        await ex.scheduler.poll_due(jitter=False)
        sys.stdout.buffer.write(ex.renderer.render(ex.store))
        sys.stdout.flush()
        return 0 if listed and all(state.last_ok for state in ex.store) else 1


async def _serve_http(ex: Exporter) -> tuple[web.AppRunner, LiveWebConfig | None]:
    """Start the HTTP server; return it, and the web config it follows (if any)."""
    # The page names the project when there is one; with several, each job names its own.
    project_id = ex.targets[0].project_id if len(ex.targets) == 1 else ""
    context = WebContext(
        ex.store, ex.renderer, ex.ready, project_id, clusters=AllClusters(ex.clusters)
    )
    app = create_app(context)
    web_config = None
    if ex.settings.web_config_file is not None:
        try:
            web_config = LiveWebConfig(ex.settings.web_config_file)
        except WebConfigError as exc:  # changed since the settings were checked
            raise ConfigError([Problem("web_config_file", "", str(exc))]) from None
    server_tls = secure(app, web_config)
    adminapi.register(app, adminapi.AdminContext(ex.watchlist, ex.settings.admin_secret))
    guard = ConnectionGuard(Limits())
    app.middlewares.insert(0, guard.middleware)  # before basic auth, which may wait
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE
    )
    await runner.setup()
    host, port = split_host_port(ex.settings.listen_address)
    site = GuardedSite(runner, guard, host, port, ssl_context=server_tls)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        reason = exc.strerror or str(exc)
        problem = Problem("listen_address", "", f"cannot listen on {host}:{port}: {reason}")
        raise ConfigError([problem]) from None
    event(log, logging.INFO, "listening", address=ex.settings.listen_address, version=__version__)
    return runner, web_config


async def run_service(
    settings: Settings,
    stop: asyncio.Event,
    companions: Callable[[Exporter], list[Coroutine[Any, Any, None]]] | None = None,
    *,
    reload: asyncio.Event | None = None,
) -> int:
    """Serve /metrics and poll until `stop` is set; return the exit status.

    `companions` gives more tasks to run beside the poll loop, owned and
    cancelled the same way. Setting `reload` reads the jobs file and the web
    config again.
    """
    async with exporter(settings) as ex:
        runner, web_config = await _serve_http(ex)
        coros = [
            ex.scheduler.run(),
            *ex.background(),
            *([web_config.run()] if web_config is not None else []),
            *(companions(ex) if companions else []),
            *([_reload_on_request(ex.jobs_file, web_config, reload)] if reload else []),
        ]
        tasks = [asyncio.create_task(coro) for coro in coros]
        broken: list[asyncio.Task[None]] = []

        def ended(task: asyncio.Task[None]) -> None:
            # These loops run until cancelled: one that ends is a bug, and a
            # process that silently stopped polling would serve stale data.
            if task.cancelled() or stop.is_set():
                return
            broken.append(task)
            error = task.exception() or RuntimeError("the loop returned")
            crash(
                log,
                "loop_ended",
                error,
                task=getattr(task.get_coro(), "__qualname__", task.get_name()),
            )
            stop.set()

        for task in tasks:
            task.add_done_callback(ended)
        event(
            log,
            logging.INFO,
            "started",
            jobs=len(ex.store),
            poll_interval=settings.poll_interval,
            targets=len(ex.targets),
        )
        for target in ex.targets:
            event(
                log,
                logging.INFO,
                "target_configured",
                target=target.name,
                project_id=target.project_id,
                endpoint=target.endpoint,
                auth=target.auth_method,
                discover=target.discover,
            )
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)
            await runner.cleanup()
    event(log, logging.INFO, "stopped")
    return 1 if broken else 0


def install_signal_handlers(stop: asyncio.Event, reload: asyncio.Event) -> None:
    """Handle every signal that would otherwise end the process without a word.

    SIGTERM, SIGINT and SIGQUIT set `stop`: the service shuts down cleanly.
    SIGHUP sets `reload`: the jobs file and the web config are read again.
    SIGUSR1 and SIGUSR2 mean nothing here: they are logged and ignored.
    """
    loop = asyncio.get_running_loop()

    def received(signum: signal.Signals, action: str, flag: asyncio.Event | None) -> None:
        event(log, logging.INFO, "signal_received", signal=signum.name, action=action)
        if flag is not None:
            flag.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        loop.add_signal_handler(signum, received, signum, "stop", stop)
    loop.add_signal_handler(signal.SIGHUP, received, signal.SIGHUP, "reload", reload)
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        loop.add_signal_handler(signum, received, signum, "ignored", None)


async def _reload_on_request(
    jobs_file: JobsFile | None, web_config: LiveWebConfig | None, reload: asyncio.Event
) -> None:
    """Read the jobs file and the web config again each time `reload` is set (SIGHUP)."""
    while True:
        await reload.wait()
        reload.clear()
        if jobs_file is not None:
            await jobs_file.check_async(force=True)
        if web_config is not None:
            await web_config.check(force=True)
