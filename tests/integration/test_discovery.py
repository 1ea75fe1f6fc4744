import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from exporter.app import Exporter, exporter
from exporter.errors import ErrorKind
from exporter.jobs.tree import MAX_NODES
from exporter.settings.model import Settings
from tests.standins.cce import PROJECT_ID, TOKEN, FakeCCE
from tests.standins.jobs import v2_job

HOUR = 3600.0


@pytest.fixture
def cce() -> FakeCCE:
    """Return an empty stand-in project."""
    return FakeCCE()


@pytest.fixture
async def server(cce: FakeCCE, aiohttp_server: Any) -> TestServer:
    """Serve the stand-in API on loopback, on a port of its own."""
    served: TestServer = await aiohttp_server(cce.app())
    return served


def _settings(server: TestServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "endpoint": str(server.make_url("")).rstrip("/"),
        "project_id": PROJECT_ID,
        "auth_token": SecretStr(TOKEN),
        "discover": True,
        "poll_interval": 30,
    }
    return Settings(**(values | overrides))


def _ids(ex: Exporter) -> set[str]:
    return {state.job_id for state in ex.store}


@pytest.fixture
def forty(cce: FakeCCE) -> float:
    """40 listed jobs: 30 created in the last hours and running, 10 created days ago."""
    now = time.time()
    for n in range(30):
        cce.add_listed(f"recent-{n:02d}", created=now - n * 60)
    for n in range(10):
        cce.add_listed(f"old-{n:02d}", created=now - 3 * 86400 - n)
    return now


@pytest.mark.usefixtures("forty")
async def test_forty_listed_thirty_recent_become_thirty_watched(
    cce: FakeCCE, server: TestServer
) -> None:
    """With no job ID configured, the 30 recent of 40 listed jobs are watched and polled."""
    async with exporter(_settings(server)) as ex:
        assert ex.discovery is not None
        result = await ex.discovery.refresh()
        assert result.listed == 40
        assert result.watched == 30
        assert _ids(ex) == {f"recent-{n:02d}" for n in range(30)}
        polled = await ex.scheduler.poll_due(jitter=False)
    assert len(polled) == 30
    assert cce.requests.total() == 30
    assert cce.lists == 1
    assert all(state.last_ok for state in ex.store)


@pytest.mark.usefixtures("forty")
async def test_a_failing_list_keeps_the_jobs_known(cce: FakeCCE, server: TestServer) -> None:
    """A job list that fails changes nothing; its requests (retried) count as list_jobs."""
    async with exporter(_settings(server)) as ex:
        assert ex.discovery is not None
        await ex.discovery.refresh()
        cce.list_status = 500
        result = await ex.discovery.refresh()
        assert not result.ok
        assert len(ex.store) == 30
        failures = ex.instruments.registry.get_sample_value(
            "cce_exporter_api_requests_total",
            {"target": "default", "operation": "list_jobs", "code": "500"},
        )
        assert failures == 3  # the first try and the client's two retries


async def test_jobs_listed_finished_cost_no_v3_request(cce: FakeCCE, server: TestServer) -> None:
    """A job the list shows finished, with all the metrics need, is stored without a poll."""
    now = time.time()
    cce.add_listed("ran-ok", created=now - 600, updated=now - 60, phase="Success", subjobs=3)
    cce.add_listed("ran-bad", created=now - 600, updated=now - 30, phase="Failed", reason="boom")
    cce.add_listed("long-gone", created=now - 20 * HOUR, updated=now - 10 * HOUR, phase="Success")
    cce.add_listed("running", created=now - 60)
    async with exporter(_settings(server, finished_retention=HOUR)) as ex:
        assert ex.discovery is not None
        result = await ex.discovery.refresh()
        assert result.stored_finished == 2
        assert result.watched == 1
        assert _ids(ex) == {"ran-ok", "ran-bad", "running"}
        await ex.scheduler.poll_due(jitter=False)
        text = ex.renderer.render(ex.store).decode()
        ok = ex.store.get("ran-ok")
    assert cce.requests.total() == 1
    assert cce.requests["running"] == 1
    assert ok is not None
    assert ok.finished_at == pytest.approx(now - 60, abs=1)
    assert ok.tree is not None
    assert len(ok.tree.nodes) == 4
    assert (
        'cce_job_status_reason_info{job_id="ran-bad",job_type="CreateCluster",'
        f'project_id="{PROJECT_ID}",reason="boom",root_job_id="ran-bad"}} 1.0'
    ) in text


async def test_a_finished_job_the_list_cannot_fully_tell_is_polled(
    cce: FakeCCE, server: TestServer
) -> None:
    """A finished job whose listed object lacks what the metrics need is read through v3."""
    now = time.time()
    cce.add_listed("odd", created=now - 600, phase="Success")
    cce.listing[0]["metadata"]["updateTimestamp"] = "yesterday"
    async with exporter(_settings(server)) as ex:
        assert ex.discovery is not None
        result = await ex.discovery.refresh()
        await ex.scheduler.poll_due(jitter=False)
    assert result.watched == 1
    assert result.stored_finished == 0
    assert cce.requests["odd"] == 1


async def test_a_finished_job_listed_with_a_zero_completion_time_ended_at_its_update(
    cce: FakeCCE, server: TestServer
) -> None:
    """Go's zero time as completionTime is absent: the job ended at its update time."""
    now = time.time()
    cce.add_listed("zero-end", created=now - 600, updated=now - 60, phase="Success")
    cce.listing[0]["status"]["completionTime"] = "0001-01-01 00:00:00 +0000 UTC"
    async with exporter(_settings(server, finished_retention=HOUR)) as ex:
        assert ex.discovery is not None
        result = await ex.discovery.refresh()
        state = ex.store.get("zero-end")
    assert result.stored_finished == 1
    assert state is not None
    assert state.finished_at == pytest.approx(now - 60, abs=1)


async def test_job_types_and_age_choose_the_jobs(cce: FakeCCE, server: TestServer) -> None:
    """Only jobs whose type matches the whole expression, and recent enough, are picked up."""
    now = time.time()
    cce.add_listed("c1", created=now - 60, job_type="CreateCluster")
    cce.add_listed("c2", created=now - 7200, job_type="CreateNode")
    cce.add_listed("d1", created=now - 60, job_type="DeleteNode")
    cce.add_listed("x1", created=now - 60, job_type="XCreateCluster")
    cce.listing.append({"metadata": {"uid": "no-time"}, "spec": {"type": "CreateNode"}})
    settings = _settings(server, discover_job_types="Create.*", discover_max_age=HOUR)
    async with exporter(settings) as ex:
        assert ex.discovery is not None
        await ex.discovery.refresh()
        assert _ids(ex) == {"c1"}


async def test_a_removed_or_expired_job_is_not_picked_up_again(
    cce: FakeCCE, server: TestServer
) -> None:
    """A discovered job stopped through the job API stays stopped while the list shows it."""
    now = time.time()
    cce.add_listed("job-a", created=now - 60)
    cce.add_listed("job-b", created=now - 60)
    async with exporter(_settings(server)) as ex:
        assert ex.discovery is not None
        await ex.discovery.refresh()
        assert ex.watchlist.remove("job-a")
        await ex.discovery.refresh()
        assert _ids(ex) == {"job-b"}
        # Once the list forgets it, and it shows up again, it is new again.
        saved = cce.listing[:]
        cce.listing[:] = [job for job in saved if job["metadata"]["uid"] != "job-a"]
        await ex.discovery.refresh()
        cce.listing[:] = saved
        await ex.discovery.refresh()
        assert _ids(ex) == {"job-a", "job-b"}


async def test_invalid_listed_ids_are_counted_once(cce: FakeCCE, server: TestServer) -> None:
    """A listed job whose ID may not go into a URL is refused once, not every pass."""
    now = time.time()
    cce.listing.append(v2_job("bad/id", created=now - 60))
    cce.add_listed("good", created=now - 60)
    async with exporter(_settings(server)) as ex:
        assert ex.discovery is not None
        await ex.discovery.refresh()
        await ex.discovery.refresh()
        rejected = ex.instruments.registry.get_sample_value(
            "cce_exporter_rejected_jobs_total", {"target": "default", "reason": "invalid_id"}
        )
        assert _ids(ex) == {"good"}
    assert rejected == 1


async def test_max_jobs_holds_for_discovery(cce: FakeCCE, server: TestServer) -> None:
    """Discovery stops at max_jobs and counts the rest as refused."""
    now = time.time()
    for n in range(5):
        cce.add_listed(f"job-{n}", created=now - 60)
    async with exporter(_settings(server, max_jobs=3)) as ex:
        assert ex.discovery is not None
        await ex.discovery.refresh()
        assert len(ex.store) == 3
        refused = ex.instruments.registry.get_sample_value(
            "cce_exporter_rejected_jobs_total", {"target": "default", "reason": "max_jobs"}
        )
    assert refused == 2


async def test_three_replicas_split_sixty_jobs(cce: FakeCCE, server: TestServer) -> None:
    """Three exporters with shard_count 3 watch 60 listed jobs with no overlap and no gap."""
    now = time.time()
    all_ids = {f"job-{n:02d}" for n in range(60)}
    for job_id in sorted(all_ids):
        cce.add_listed(job_id, created=now - 60)
    shares = []
    for index in range(3):
        settings = _settings(server, shard_count=3, shard_index=index)
        async with exporter(settings) as ex:
            assert ex.discovery is not None
            await ex.discovery.refresh()
            shares.append(_ids(ex))
            info = ex.instruments.registry.get_sample_value(
                "cce_exporter_shard_info", {"shard_index": str(index), "shard_count": "3"}
            )
            assert info == 1
    assert set().union(*shares) == all_ids
    assert sum(len(share) for share in shares) == 60
    assert all(shares)


async def test_not_ready_before_the_first_read_of_the_list(
    cce: FakeCCE, server: TestServer
) -> None:
    """A discovering exporter is ready once the list was read and its jobs polled, then stays so."""
    cce.add_listed("running", created=time.time() - 60)
    async with exporter(_settings(server)) as ex:
        assert ex.discovery is not None
        assert not ex.ready()
        await ex.discovery.refresh()
        assert not ex.ready()  # the jobs it found are not polled yet
        await ex.scheduler.poll_due(jitter=False)
        assert ex.ready()
        # Once ready, always: a job found later is polled as it comes.
        cce.add_listed("later", created=time.time() - 30)
        await ex.discovery.refresh()
        assert "later" in ex.store
        assert not ex.scheduler.ready
        assert ex.ready()


async def test_jobs_that_arrive_after_the_first_probe_do_not_hold_readiness_back(
    cce: FakeCCE, server: TestServer
) -> None:
    """Readiness waits for the jobs there were when first asked, not for every job since."""
    cce.add_listed("first", created=time.time() - 60)
    async with exporter(_settings(server)) as ex:
        assert ex.discovery is not None
        await ex.discovery.refresh()
        assert not ex.ready()  # asked with "first" not polled yet: it is waited for
        await ex.scheduler.poll_due(jitter=False)
        # A job that arrives before the next probe, as in a busy project, is not waited for.
        cce.add_listed("next", created=time.time() - 30)
        await ex.discovery.refresh()
        assert not ex.scheduler.ready
        assert ex.ready()


async def test_after_a_restart_no_route_exports_a_job_that_ended_long_ago(
    cce: FakeCCE, server: TestServer, tmp_path: Path
) -> None:
    """Named in the settings, the jobs file or the list, a job that ended too long ago stays out."""
    now = time.time()
    for job_id, ended in (("old-a", now - 2 * HOUR), ("old-b", now - 2 * HOUR)):
        cce.add_listed(job_id, created=ended - 600, updated=ended, phase="Failed", reason="boom")
    cce.add_listed("recent", created=now - 1200, updated=now - 600, phase="Failed", reason="boom")
    jobs_file = tmp_path / "jobs.txt"
    jobs_file.write_text("old-b\n")
    settings = _settings(
        server, job_ids=("old-a", "recent"), job_ids_file=jobs_file, finished_retention=HOUR
    )
    async with exporter(settings) as ex:
        assert ex.discovery is not None
        await ex.discovery.refresh()
        await ex.scheduler.poll_due(jitter=False)
        await ex.discovery.refresh()
        await ex.scheduler.poll_due(jitter=False)
        text = ex.renderer.render(ex.store).decode()
        recent = ex.store.get("recent")
        assert _ids(ex) == {"recent"}
    assert 'job_id="old-' not in text
    assert cce.requests["old-a"] == cce.requests["old-b"] == 1
    assert recent is not None
    assert recent.finished_at == pytest.approx(now - 600, abs=1)


async def test_a_listed_end_time_in_the_future_counts_as_now(
    cce: FakeCCE, server: TestServer
) -> None:
    """A job listed finished with an end time ahead of the clock keeps its series from now on."""
    now = time.time()
    cce.add_listed("ahead", created=now - 600, updated=now + HOUR, phase="Success")
    async with exporter(_settings(server, finished_retention=HOUR)) as ex:
        assert ex.discovery is not None
        result = await ex.discovery.refresh()
        state = ex.store.get("ahead")
    assert result.stored_finished == 1
    assert state is not None
    assert state.finished_at is not None
    assert now <= state.finished_at <= time.time()


async def test_a_listed_job_over_the_node_cap_costs_only_itself(
    cce: FakeCCE, server: TestServer
) -> None:
    """A finished job whose listed tree passes MAX_NODES is polled instead, and only it fails."""
    now = time.time()
    for job_id, subjobs in (("at-cap", MAX_NODES - 1), ("over-cap", MAX_NODES), ("small", 3)):
        cce.add_listed(
            job_id, created=now - 600, updated=now - 60, phase="Success", subjobs=subjobs
        )
    async with exporter(_settings(server, finished_retention=HOUR)) as ex:
        assert ex.discovery is not None
        result = await ex.discovery.refresh()
        assert (result.stored_finished, result.watched) == (2, 1)
        await ex.scheduler.poll_due(jitter=False)
        at_cap, over, small = (ex.store.get(j) for j in ("at-cap", "over-cap", "small"))
    assert cce.requests.total() == cce.requests["over-cap"] == 1
    assert over is not None
    assert over.tree is None
    assert over.last_error_kind is ErrorKind.INVALID_RESPONSE
    assert over.last_error is not None
    assert f"job tree has more than {MAX_NODES} nodes" in over.last_error
    assert at_cap is not None
    assert at_cap.tree is not None
    assert len(at_cap.tree.nodes) == MAX_NODES
    assert small is not None
    assert small.tree is not None
    assert len(small.tree.nodes) == 4
