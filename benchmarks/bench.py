"""Benchmarks of the exporter at scale: scrape, polling, requests over a day, memory, /jobs.

    .venv/bin/python benchmarks/bench.py            # every goal, full size
    .venv/bin/python benchmarks/bench.py scrape     # one of: scrape poll requests memory status
    .venv/bin/python benchmarks/bench.py --quick    # tiny sizes: a smoke run, goals not judged

Each benchmark prints its figures and, for each goal, the ratio of the figure
to the goal (at most 1.00 meets it). The exit status is 1 when a goal is
missed. Run it on a quiet machine: the figures are wall-clock times.
"""

import argparse
import asyncio
import gc
import gzip
import itertools
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

# The job objects are built by the tests' stand-ins (tests/standins/jobs.py):
# the repository's root is importable however this script is started.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.app import exporter
from exporter.errors import ApiError, ErrorKind
from exporter.jobs.ids import Api
from exporter.jobs.state import JobState, JobStore
from exporter.jobs.tree import JobTree, flatten
from exporter.jobs.v2 import ListedJob, read_listing
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.cce_job import FAMILIES
from exporter.metrics.exposition import Renderer
from exporter.scheduler import PollSettings, Scheduler
from exporter.server.endpoints import WebContext, create_app
from exporter.settings.model import Settings
from exporter.watch.discovery import Discovery, DiscoverySettings
from exporter.watch.watchlist import Route, WatchList
from tests.standins.jobs import job_object, v2_job, v3_job

HERE = Path(__file__).resolve().parent
PROJECT = "0123456789abcdef0123456789abcdef"
TOKEN = "bench-token"  # noqa: S105 - the stand-in's token


@dataclass
class Goal:
    """One goal: the measured figure, the most it may be, and how to say it."""

    name: str
    value: float
    limit: float
    unit: str

    @property
    def ratio(self) -> float:
        """The figure as a share of the goal: at most 1 meets it."""
        return self.value / self.limit if self.limit else float("inf")

    @property
    def met(self) -> bool:
        """Tell whether the goal is met."""
        return self.value <= self.limit


@dataclass
class Report:
    """Figures and goals of a run."""

    goals: list[Goal] = field(default_factory=list)

    def figure(self, name: str, value: float, unit: str) -> None:
        """Print a figure that has no goal."""
        print(f"  {name:<58} {value:>12.4g} {unit}")

    def goal(self, name: str, value: float, limit: float, unit: str) -> None:
        """Print a figure with its goal, and remember whether it was met."""
        goal = Goal(name, value, limit, unit)
        self.goals.append(goal)
        verdict = "ok" if goal.met else "MISSED"
        ratio = f"{goal.ratio:.3f}" if limit else "-"
        print(
            f"  {name:<58} {value:>12.4g} {unit}  goal <= {limit:.4g} {unit}"
            f"  ratio {ratio}  {verdict}"
        )


# --- the job trees -----------------------------------------------------------

PHASE_MIX = ("Success", "Success", "Success", "Running", "Initializing", "Failed")


def realistic_job(job_id: str, subjobs: int, rng: random.Random, now: float) -> dict[str, Any]:
    """Build a realistic v3 job with `subjobs` sub-jobs in mixed phases."""
    created = now - rng.uniform(60, 3600)
    phases = [rng.choice(PHASE_MIX) for _ in range(subjobs)]
    failed = "Failed" in phases
    updated = created + rng.uniform(1, 600)
    job_type = rng.choice(["CreateCluster", "CreateNode", "ScaleupCluster", "UpgradeCluster"])
    cluster = f"c{rng.getrandbits(64):016x}-83db-11f0-8baa-0255ac10003e"
    resource_id = f"r{rng.getrandbits(64):016x}-87e6-11f0-be88-0255ac10003f"
    resource_name = f"node-{rng.getrandbits(24):06x}"
    sub_jobs = [
        job_object(
            f"{job_id[:24]}-s{n:02d}-{rng.getrandbits(32):08x}",
            phase,
            job_type=f"Step{n}",
            created=created + n,
            updated=created + n + rng.uniform(1, 300),
            cluster=f"c{rng.getrandbits(64):016x}",
            reason="Something bad happened at server" if phase == "Failed" else None,
        )
        for n, phase in enumerate(phases)
    ]
    return job_object(
        job_id,
        "Failed" if failed else "Running",
        sub_jobs,
        job_type=job_type,
        cluster=cluster,
        created=created,
        updated=updated,
        resource_name=resource_name,
        resource_id=resource_id,
        reason="Something bad happened at server, recycle resource" if failed else "",
    )


def job_states(jobs: int, subjobs: int, *, seed: int = 1) -> list[JobState]:
    """Read `jobs` trees the way the client does (JSON bytes, then flatten) into states."""
    rng = random.Random(seed)  # noqa: S311 - test data, not cryptography
    now = time.time()
    states = []
    for n in range(jobs):
        job_id = f"{rng.getrandbits(32):08x}-{n:04d}-11f0-be88-0255ac10003f"
        body = json.dumps(realistic_job(job_id, subjobs, rng, now)).encode()
        state = JobState(job_id, project_id=PROJECT).succeeded(
            flatten(json.loads(body), job_id), now - 5
        )
        if n % 7 == 0:
            state = state.failed(ErrorKind.TIMEOUT, "timeout: no answer within 10 s", now)
        states.append(state)
    return states


def fill(store: JobStore, states: list[JobState]) -> None:
    """Put states into a store."""
    for state in states:
        store.put(state)


# --- scrape ------------------------------------------------------------------


class SameSeriesCollector:
    """The same job series as the exporter's, as prometheus-client collectors make them."""

    def __init__(self, text: str) -> None:
        self._families = _families_from_text(text)

    def collect(self) -> Iterator[Metric]:
        """Yield fresh metric families, as a custom collector does on every scrape."""
        for name, kind, help_text, samples in self._families:
            family: Metric
            if kind == "counter":
                family = CounterMetricFamily(
                    name, help_text, labels=list(samples[0][0]) if samples else []
                )
            else:
                family = GaugeMetricFamily(
                    name, help_text, labels=list(samples[0][0]) if samples else []
                )
            for labels, value in samples:
                family.add_metric(list(labels.values()), value)
            yield family


def _families_from_text(
    text: str,
) -> list[tuple[str, str, str, list[tuple[dict[str, str], float]]]]:
    """Read the job families of an exposition back into (name, type, help, samples)."""
    wanted = {family.value[0].removesuffix("_total") for family in FAMILIES}
    out = []
    for family in text_string_to_metric_families(text):
        if family.name not in wanted:
            continue
        samples = [(dict(s.labels), s.value) for s in family.samples]
        name = family.name
        out.append((name, family.type, family.documentation, samples))
    return out


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Run `fn` `repeat` times; return each run's seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


async def _serve(store: JobStore, renderer: Renderer) -> tuple[web.AppRunner, str]:
    app = create_app(WebContext(store, renderer, lambda: True))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"


async def _scrape_times(
    session: aiohttp.ClientSession, url: str, repeat: int, *, gzip_body: bool
) -> tuple[list[float], int]:
    headers = {"Accept-Encoding": "gzip" if gzip_body else "identity"}
    times = []
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        async with session.get(url, headers=headers) as response:
            body = await response.read()
        times.append(time.perf_counter() - started)
        size = len(body)
    return times, size


def bench_scrape(report: Report, jobs: int, subjobs: int, *, repeat: int) -> None:
    """/metrics with gzip against prometheus-client's generate_latest plus gzip."""
    print(f"scrape: {jobs} watched jobs of {subjobs} sub-jobs each")
    states = job_states(jobs, subjobs)
    store = JobStore()
    fill(store, states)
    instruments = Instruments()
    renderer = Renderer(instruments.registry)
    text = Renderer(CollectorRegistry()).render(store).decode()
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    report.figure("job series", series, "series")

    async def ours() -> tuple[list[float], list[float], float, int, float, str]:
        runner, url = await _serve(store, renderer)
        try:
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                cold, _ = await _scrape_times(session, url, 1, gzip_body=True)
                warm, size = await _scrape_times(session, url, repeat, gzip_body=True)
                plain, _ = await _scrape_times(session, url, repeat, gzip_body=False)
                # A poll pass replaces a tenth of the states: those are rendered again.
                for state in states[: max(1, jobs // 10)]:
                    store.put(replace(state, last_success=time.time()))
                changed, _ = await _scrape_times(session, url, 1, gzip_body=True)
                async with session.get(url, headers={"Accept-Encoding": "gzip"}) as response:
                    check = gzip.decompress(await response.read()).decode()
            return warm, plain, cold[0], size, changed[0] if changed else 0.0, check
        finally:
            await runner.cleanup()

    warm, plain, cold, size, changed, check = asyncio.run(ours())
    job_lines = sum(1 for line in text.splitlines() if line.startswith("cce_job_"))
    assert sum(1 for line in check.splitlines() if line.startswith("cce_job_")) == job_lines

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SameSeriesCollector(text))
    theirs_text = generate_latest(registry).decode()
    theirs_series = sum(1 for line in theirs_text.splitlines() if line and not line.startswith("#"))
    assert theirs_series == series, f"prometheus-client made {theirs_series} series, not {series}"
    theirs = timed(lambda: gzip.compress(generate_latest(registry)), max(1, repeat // 3))

    ours_median = statistics.median(warm)
    theirs_median = statistics.median(theirs)
    report.figure("/metrics gzip, first scrape (renders every job)", cold, "s")
    report.figure("/metrics gzip, after a tenth of the jobs changed", changed, "s")
    report.figure("/metrics plain text, unchanged (median)", statistics.median(plain), "s")
    report.figure("/metrics gzip body", size / 1e6, "MB")
    report.figure("prometheus-client generate_latest + gzip (median)", theirs_median, "s")
    report.figure("/metrics gzip, unchanged since last poll (median)", ours_median, "s")
    report.goal(
        "/metrics gzip time / (generate_latest + gzip time)",
        ours_median / theirs_median,
        1 / 100,
        "x",
    )


# --- series: dense and sparse ------------------------------------------------


def bench_series(report: Report, jobs: int, subjobs: int) -> None:
    """Series of the same jobs in the dense form and in the sparse form (sparse_metrics)."""
    print(f"series: {jobs} watched jobs of {subjobs} sub-jobs each, dense and sparse")
    store = JobStore()
    fill(store, job_states(jobs, subjobs))
    counts = []
    for sparse in (False, True):
        renderer = Renderer(CollectorRegistry(), sparse=sparse)
        text = renderer.render(store)
        counts.append(sum(1 for line in text.splitlines() if line.startswith(b"cce_job_")))
        form = "sparse" if sparse else "dense"
        report.figure(f"job series, {form} form", counts[-1], "series")
        report.figure(f"job series per job, {form} form", counts[-1] / jobs, "series")
        gzipped = len(renderer.render_gzip(store))
        report.figure(f"/metrics gzip body, {form} form", gzipped / 1e6, "MB")
    report.goal("job series, sparse / dense", counts[1] / counts[0], 0.5, "x")


# --- status page -------------------------------------------------------------


async def _status_times(
    store: JobStore, states: list[JobState], path: str, repeat: int
) -> tuple[list[float], int, int]:
    """Fetch `path` `repeat` times, each after a job changed: every answer is a fresh build."""
    runner, url = await _serve(store, Renderer(CollectorRegistry()))
    url = url.removesuffix("/metrics") + path
    times = []
    packed = plain = 0
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            for n in range(repeat):
                state = states[n % len(states)]
                store.put(replace(state, last_success=time.time()))
                started = time.perf_counter()
                async with session.get(url, headers={"Accept-Encoding": "gzip"}) as response:
                    body = await response.read()
                times.append(time.perf_counter() - started)
                packed = len(body)
            async with session.get(url, headers={"Accept-Encoding": "identity"}) as response:
                plain = len(await response.read())
    finally:
        await runner.cleanup()
    return times, packed, plain


def bench_status(report: Report, jobs: int, subjobs: int, *, repeat: int) -> None:
    """/jobs (and /api/v1/jobs) gzipped, each request a fresh build after a job changed."""
    print(f"status: /jobs with {jobs} watched jobs of {subjobs} sub-jobs each")
    states = job_states(jobs, subjobs)
    store = JobStore()
    fill(store, states)
    page, packed, plain = asyncio.run(_status_times(store, states, "/jobs", repeat))
    failed, failed_packed, _ = asyncio.run(
        _status_times(store, states, "/jobs?phase=Failed&q=0", repeat)
    )
    api, api_packed, api_plain = asyncio.run(
        _status_times(store, states, "/api/v1/jobs", max(1, repeat // 3))
    )
    report.figure("/jobs body, plain", plain / 1e3, "KB")
    report.figure("/jobs?phase=Failed&q=0 gzip (median)", statistics.median(failed), "s")
    report.figure("/jobs?phase=Failed&q=0 gzip body", failed_packed / 1e3, "KB")
    report.figure("/api/v1/jobs gzip (median)", statistics.median(api), "s")
    report.figure("/api/v1/jobs body, gzip", api_packed / 1e3, "KB")
    report.figure("/api/v1/jobs body, plain", api_plain / 1e6, "MB")
    report.goal("/jobs gzip body", packed / 1e3, 300, "KB")
    report.goal("/jobs gzip, built afresh (median)", statistics.median(page), 0.5, "s")


# --- polling -----------------------------------------------------------------


def _settings(**values: Any) -> Settings:
    # Lift a request rate limit, where the settings have one: the goal is about
    # concurrency and latency, not the (configurable) rate.
    if "rate_limit" in Settings.model_fields:
        values.setdefault("rate_limit", 1_000_000)
    return Settings(**values)


def bench_poll(report: Report, jobs: int, latency: float, concurrency: int, passes: int) -> None:
    """Full passes over running jobs against a stand-in API that answers in `latency`."""
    floor = jobs * latency / concurrency
    print(
        f"poll: {jobs} running jobs, API latency {latency * 1000:.0f} ms, concurrency {concurrency}"
    )
    standin = subprocess.Popen(  # noqa: S603 - our own script, with this interpreter
        [sys.executable, str(HERE / "standin.py"), f"--latency={latency}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert standin.stdout is not None
        port = int(standin.stdout.readline())
        job_ids = [f"job-{n:05d}" for n in range(jobs)]
        settings = _settings(
            endpoint=f"http://127.0.0.1:{port}",
            project_id=PROJECT,
            auth_token=SecretStr(TOKEN),
            job_ids=job_ids,
            poll_concurrency=concurrency,
            poll_interval=30,
            max_jobs=max(jobs, 1),
        )
        durations = asyncio.run(_passes(settings, job_ids, passes))
    finally:
        assert standin.stdin is not None
        standin.stdin.close()
        standin.wait(timeout=10)
    report.figure("floor: jobs x latency / concurrency", floor, "s")
    report.figure("first pass (opens the connections)", durations[0], "s")
    for n, duration in enumerate(durations[1:], 2):
        report.figure(f"pass {n}", duration, "s")
    later = durations[1:] or durations
    report.figure("worst pass after the first / floor", max(later) / floor, "x")
    # The median pass, not the worst: on a machine shared with other work one
    # pass can lose the CPU for a while.
    report.goal(
        "full pass / floor (median of the passes after the first)",
        statistics.median(later) / floor,
        1.3,
        "x",
    )


async def _passes(settings: Settings, job_ids: list[str], passes: int) -> list[float]:
    durations = []
    async with exporter(settings) as ex:
        for n in range(passes):
            if n:
                # Watch the jobs anew: each is due at once, as at the start of a pass.
                for job_id in job_ids:
                    ex.watchlist.remove(job_id)
                ex.watchlist.add(Route.SETTINGS, job_ids)
            started = time.perf_counter()
            polled = await ex.scheduler.poll_due(jitter=True)
            durations.append(time.perf_counter() - started)
            assert len(polled) == len(job_ids), "not every job was due"
            failed = [state.job_id for state in ex.store if not state.last_ok]
            assert not failed, f"{len(failed)} polls failed: {ex.store.get(failed[0])}"
    return durations


# --- CPU per poll ------------------------------------------------------------


def bench_cpu(report: Report, jobs: int, subjobs: int, rounds: int, moves: float) -> None:
    """CPU per poll of the exporter against a bare aiohttp + json.loads loop, side by side."""
    print(
        f"cpu: {jobs} running jobs of {subjobs} sub-jobs polled every second, API answering"
        f" at once; {moves:.0%} of answers new"
    )
    standin = subprocess.Popen(  # noqa: S603 - our own script, with this interpreter
        [
            sys.executable,
            str(HERE / "standin.py"),
            "--latency=0",
            f"--subjobs={subjobs}",
            f"--moves={moves}",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert standin.stdout is not None
        port = int(standin.stdout.readline())
        job_ids = [f"job-{n:05d}" for n in range(jobs)]
        settings = _settings(
            endpoint=f"http://127.0.0.1:{port}",
            project_id=PROJECT,
            auth_token=SecretStr(TOKEN),
            job_ids=job_ids,
            poll_concurrency=50,
            poll_interval=1,
            max_jobs=max(jobs, 1),
        )
        ours, bare = asyncio.run(_cpu_rounds(settings, job_ids, rounds))
    finally:
        assert standin.stdin is not None
        standin.stdin.close()
        standin.wait(timeout=10)
    # The first round opens the connections and reads every job for the first time.
    ours_ms = statistics.median(ours[1:] or ours) / jobs * 1000
    bare_ms = statistics.median(bare[1:] or bare) / jobs * 1000
    # Each round's two passes ran one after the other: their ratio is little
    # disturbed by other work on the machine, which comes and goes.
    ratios = [a / b for a, b in zip(ours[1:] or ours, bare[1:] or bare, strict=True)]
    report.figure("exporter, first pass (reads every job afresh)", ours[0] / jobs * 1000, "ms")
    report.figure("exporter CPU per poll (median of the later passes)", ours_ms, "ms")
    report.figure("aiohttp GET + json.loads CPU per request (median)", bare_ms, "ms")
    report.figure("exporter / bare loop, highest of the rounds", max(ratios), "x")
    report.goal(
        "exporter CPU per poll / bare loop's (median of the rounds)",
        statistics.median(ratios),
        2.0,
        "x",
    )


async def _cpu_rounds(
    settings: Settings, job_ids: list[str], rounds: int
) -> tuple[list[float], list[float]]:
    """Alternate an exporter pass and a bare pass over the same jobs; return each one's CPU."""
    ours: list[float] = []
    bare: list[float] = []
    base = f"{settings.cce_endpoint}/api/v3/projects/{PROJECT}/jobs/"
    urls = [base + job_id for job_id in job_ids]
    connector = aiohttp.TCPConnector(limit=settings.poll_concurrency)
    async with exporter(settings) as ex, aiohttp.ClientSession(connector=connector) as session:
        headers = {"X-Auth-Token": TOKEN, "Content-Type": "application/json"}
        sizes = 0

        async def get(url: str) -> None:
            nonlocal sizes
            async with session.get(url, headers=headers) as response:
                body = await response.read()
            sizes += len(json.loads(body))

        async def bare_pass() -> None:
            cpu = time.process_time()
            await asyncio.gather(*map(get, urls))
            bare.append(time.process_time() - cpu)

        for n in range(rounds):
            started = time.monotonic()
            if n % 2:  # every other round the bare loop goes first
                await bare_pass()
            cpu = time.process_time()
            polled = await ex.scheduler.poll_due(jitter=True)
            ours.append(time.process_time() - cpu)
            assert len(polled) == len(job_ids), f"{len(polled)} of {len(job_ids)} jobs were due"
            failed = [state.job_id for state in ex.store if not state.last_ok]
            assert not failed, f"{len(failed)} polls failed: {ex.store.get(failed[0])}"
            if not n % 2:
                await bare_pass()
            # Polled every second: each job is due again a second after it was due
            # (a request that went out late, after it).
            await asyncio.sleep(max(0.0, started + settings.poll_interval - time.monotonic()))
            for _ in range(1000):  # at most 10 s more
                if len(ex.scheduler.due_jobs()) == len(job_ids):
                    break
                await asyncio.sleep(0.01)
    return ours, bare


# --- requests over a simulated day -------------------------------------------


@dataclass
class SimJob:
    """A job of the simulated day: when it starts and how long it runs."""

    job_id: str
    job_type: str
    start: float
    runs: float
    fails: bool
    final: dict[str, Any] | None = None  # the v2 object once finished: it changes no more

    def phase(self, now: float) -> str:
        """Return the job's phase at `now`."""
        if now < self.start + 5:
            return "Initializing"
        if now < self.start + self.runs:
            return "Running"
        return "Failed" if self.fails else "Success"

    def updated(self, now: float) -> float:
        """Return the job's last update at `now`."""
        return min(now, self.start + self.runs)

    def _facts(self, now: float) -> dict[str, Any]:
        """Return the job at `now` as arguments of the stand-ins' `v3_job` and `v2_job`."""
        return {
            "created": self.start,
            "updated": self.updated(now),
            "job_type": self.job_type,
            "phase": self.phase(now),
            "subjobs": 1,
        }

    def v3(self, now: float) -> dict[str, Any]:
        """Render the job as the v3 API does at `now`."""
        return v3_job(self.job_id, **self._facts(now))

    def v2(self, now: float) -> dict[str, Any]:
        """Render the job as the v2 list does at `now`."""
        if self.final is not None:
            return self.final
        listed = v2_job(self.job_id, **self._facts(now))
        if self.phase(now) in ("Success", "Failed"):
            self.final = listed
        return listed


class SimCloud:
    """The simulated project: answers list_jobs and show_job at the virtual time; counts them."""

    def __init__(self, jobs: list[SimJob], clock: Callable[[], float]) -> None:
        self._jobs = {job.job_id: job for job in jobs}
        self._clock = clock
        self.store: JobStore | None = None
        self.lists = 0
        self.shows: dict[str, list[float]] = {}
        self.known_finished = 0  # show_job for a job the exporter knew had finished
        self.found_finished: dict[str, int] = {}  # show_job that found the job ended

    async def list_jobs(self, project_id: str, api: Api = Api.CCE) -> list[ListedJob]:
        """Answer the job list: every job started by now (CCE keeps them all day); all on CCE."""
        if api is Api.AUTOPILOT:
            return []
        self.lists += 1
        now = self._clock()
        return read_listing([job.v2(now) for job in self._jobs.values() if job.start <= now])

    async def show_job(self, project_id: str, job_id: str, api: Api = Api.CCE) -> JobTree:
        """Answer one job at the virtual time, and note the request."""
        now = self._clock()
        self.shows.setdefault(job_id, []).append(now)
        state = self.store.get(job_id) if self.store is not None else None
        if state is not None and state.finished:
            self.known_finished += 1
        job = self._jobs.get(job_id)
        if job is None or job.start > now:
            raise ApiError(ErrorKind.NOT_FOUND, "no such job", status=404)
        if job.phase(now) in ("Success", "Failed"):
            self.found_finished[job_id] = self.found_finished.get(job_id, 0) + 1
        return flatten(job.v3(now), job_id)

    async def find_job(self, project_id: str, job_id: str) -> tuple[Api, JobTree]:
        """Find every job on CCE."""
        return Api.CCE, await self.show_job(project_id, job_id)


def bench_requests(report: Report, per_day: int, interval: float, discover_every: float) -> None:
    """Simulate a day of jobs: no request for a job known finished, one per interval at most."""
    print(f"requests: a simulated day, {per_day} jobs a day, poll every {interval:.0f} s")
    day = 86400.0
    rng = random.Random(7)  # noqa: S311 - simulation, not cryptography
    # Jobs over two days: the exporter starts at the start of the second, with a
    # list full of yesterday's jobs, most of them finished.
    jobs = []
    for n in range(2 * per_day):
        start = rng.uniform(0, 2 * day)
        runs = rng.choice([rng.uniform(20, 120), rng.uniform(120, 1800), rng.uniform(1800, 4000)])
        jobs.append(
            SimJob(
                f"job-{n:06d}",
                rng.choice(["CreateCluster", "CreateNode", "DeleteNode", "ScaleupCluster"]),
                start,
                runs,
                fails=rng.random() < 0.1,
            )
        )
    now = [day]
    clock = lambda: now[0]  # noqa: E731 - the virtual clock
    cloud = SimCloud(jobs, clock)
    instruments = Instruments()
    store = JobStore()
    cloud.store = store
    scheduler = Scheduler(
        cloud,
        store,
        instruments,
        PollSettings(
            project_id=PROJECT,
            poll_interval=interval,
            poll_concurrency=16,
            finished_retention=3600,
            jitter=0,
        ),
        clock=clock,
        monotonic=clock,
    )
    watchlist = WatchList(scheduler, instruments)
    discovery = Discovery(
        cloud,
        watchlist,
        instruments,
        DiscoverySettings(project_id=PROJECT, interval=discover_every, finished_retention=3600),
        clock=clock,
    )
    adopted = watched = 0

    async def simulate() -> None:
        nonlocal adopted, watched
        next_list = now[0]
        while now[0] < 2 * day:
            if now[0] >= next_list:
                result = await discovery.refresh()
                adopted += result.stored_finished
                watched += result.watched
                next_list += discover_every
            await scheduler.poll_due(jitter=False)
            now[0] += 1.0

    started = time.perf_counter()
    asyncio.run(simulate())
    elapsed = time.perf_counter() - started
    shows = sum(len(times) for times in cloud.shows.values())
    gaps = [b - a for times in cloud.shows.values() for a, b in itertools.pairwise(times)]
    seen_running = sum(1 for job in jobs if job.job_id in cloud.shows)
    report.figure("simulated jobs started that day", sum(1 for j in jobs if j.start >= day), "jobs")
    report.figure("jobs stored finished from the list (no v3 request)", adopted, "jobs")
    report.figure("jobs handed over for polling", watched, "jobs")
    report.figure("jobs polled through v3", seen_running, "jobs")
    report.figure("job list reads", cloud.lists, "requests")
    report.figure("v3 job requests", shows, "requests")
    report.figure("simulation time", elapsed, "s")
    report.figure(
        "v3 requests that found their job ended", sum(cloud.found_finished.values()), "requests"
    )
    report.goal("v3 requests for jobs known finished", cloud.known_finished, 0, "requests")
    report.goal(
        "v3 requests that found one job ended (most for any job)",
        max(cloud.found_finished.values(), default=0),
        1,
        "requests",
    )
    shortest = min(gaps) if gaps else interval
    report.goal(
        "requests per running job per interval (interval / shortest gap)",
        interval / shortest,
        1.0,
        "x",
    )


# --- memory ------------------------------------------------------------------


def _status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def memory_child(jobs: int, subjobs: int) -> None:
    """In a fresh process: hold the tree set and serve it; report memory when asked.

    The parent scrapes it over HTTP, so that the scraper's own buffers are not
    counted. Each line on standard input asks for a report, printed as JSON.
    """
    states = job_states(jobs, subjobs)
    store = JobStore()
    fill(store, states)
    del states
    renderer = Renderer(Instruments().registry)

    async def serve() -> None:
        runner, url = await _serve(store, renderer)
        print(url, flush=True)
        loop = asyncio.get_running_loop()
        try:
            while await loop.run_in_executor(None, sys.stdin.readline):
                gc.collect()
                report = {"rss_kib": _status_kib("VmRSS"), "peak_kib": _status_kib("VmHWM")}
                print(json.dumps(report), flush=True)
        finally:
            await runner.cleanup()

    asyncio.run(serve())


def bench_memory(report: Report, jobs: int, subjobs: int) -> None:
    """Resident memory of an exporter process holding the tree set, scraped both ways."""
    print(f"memory: {jobs} watched jobs of {subjobs} sub-jobs each, scraped gzip and plain")
    child = subprocess.Popen(  # noqa: S603 - this script, with this interpreter
        [sys.executable, __file__, "--memory-child", f"--jobs={jobs}", f"--subjobs={subjobs}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None

    def ask() -> dict[str, int]:
        assert child.stdin is not None
        assert child.stdout is not None
        child.stdin.write("report\n")
        child.stdin.flush()
        figures: dict[str, int] = json.loads(child.stdout.readline())
        return figures

    try:
        url = child.stdout.readline().strip()
        held = ask()

        async def scrape() -> None:
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                await _scrape_times(session, url, 3, gzip_body=True)

        asyncio.run(scrape())
        after_gzip = ask()

        async def scrape_plain() -> None:
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                await _scrape_times(session, url, 3, gzip_body=False)

        asyncio.run(scrape_plain())
        after_plain = ask()
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    report.figure(
        "resident memory holding the trees, before any scrape", held["rss_kib"] / 1024, "MB"
    )
    report.figure(
        "peak resident memory after gzip scrapes (VmHWM)", after_gzip["peak_kib"] / 1024, "MB"
    )
    report.figure(
        "peak resident memory after plain scrapes too", after_plain["peak_kib"] / 1024, "MB"
    )
    report.goal(
        "resident memory after gzip scrapes (VmRSS)", after_gzip["rss_kib"] / 1024, 100, "MB"
    )
    report.goal(
        "resident memory after plain scrapes too (VmRSS)", after_plain["rss_kib"] / 1024, 100, "MB"
    )


# --- main --------------------------------------------------------------------


def machine() -> str:
    """Say what machine this runs on."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}, "
        f"load average {load:.2f} at start"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; return 1 if a goal is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "which",
        nargs="*",
        default=["scrape", "poll", "cpu", "requests", "memory", "series", "status"],
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes; goals are not judged")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--subjobs", type=int, default=10)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.jobs, args.subjobs)
        return 0
    quick = args.quick
    logging.disable(logging.WARNING)  # the simulated jobs that fail would log each
    print(f"machine: {machine()}")
    report = Report()
    for name in args.which:
        if name == "scrape":
            jobs = 20 if quick else args.jobs
            bench_scrape(report, jobs, 3 if quick else args.subjobs, repeat=3 if quick else 15)
        elif name == "poll":
            bench_poll(report, 20 if quick else 1000, 0.05, 50, 2 if quick else 6)
        elif name == "cpu":
            bench_cpu(report, 20 if quick else 1000, 3, 3 if quick else 11, 0.01)
        elif name == "requests":
            bench_requests(report, 30 if quick else 2000, 30.0, 60.0)
        elif name == "series":
            bench_series(report, 20 if quick else args.jobs, 3 if quick else args.subjobs)
        elif name == "memory":
            bench_memory(report, 20 if quick else args.jobs, 3 if quick else args.subjobs)
        elif name == "status":
            jobs = 20 if quick else args.jobs
            bench_status(report, jobs, 3 if quick else args.subjobs, repeat=3 if quick else 15)
        else:
            parser.error(f"unknown benchmark {name!r}")
    missed = [goal for goal in report.goals if not goal.met]
    print(f"goals: {len(report.goals) - len(missed)} met, {len(missed)} missed")
    if quick:
        print("(quick run: sizes too small for the goals to mean anything; not judged)")
        return 0
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
