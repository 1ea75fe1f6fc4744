import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.jobs.ids import Api
from exporter.jobs.state import JobState
from exporter.jobs.v2 import ListedJob, read_listing
from exporter.metrics.cce_exporter import Instruments
from exporter.watch.discovery import Discovery, DiscoverySettings
from exporter.watch.sharding import Shard
from exporter.watch.watchlist import Route
from tests.conftest import idle_watchlist
from tests.standins.jobs import v2_job


def _rejected(instruments: Instruments, reason: str) -> float:
    value = instruments.registry.get_sample_value(
        "cce_exporter_rejected_jobs_total", {"target": "default", "reason": reason}
    )
    assert value is not None
    return value


def test_routes_join_one_watched_set(instruments: Instruments) -> None:
    """A job named by several routes is watched once, and each route is remembered."""
    watchlist, store, _ = idle_watchlist(instruments)
    first = watchlist.add(Route.SETTINGS, ["job-a", "job-b", "job-a"])
    second = watchlist.add(Route.FILE, ["job-b", "job-c"])
    assert first.added == ("job-a", "job-b")
    assert second.added == ("job-c",)
    assert second.already_watched == ("job-b",)
    assert sorted(state.job_id for state in store) == ["job-a", "job-b", "job-c"]
    assert watchlist.routes("job-b") == {Route.SETTINGS, Route.FILE}


def test_max_jobs_refuses_and_counts(instruments: Instruments) -> None:
    """Past max_jobs, further IDs are refused and counted with reason max_jobs."""
    watchlist, store, _ = idle_watchlist(instruments, max_jobs=3)
    outcome = watchlist.add(Route.API, ["j1", "j2", "j3", "j4", "j5"])
    assert outcome.added == ("j1", "j2", "j3")
    assert outcome.refused == ("j4", "j5")
    assert len(store) == 3
    assert _rejected(instruments, "max_jobs") == 2
    assert watchlist.add(Route.FILE, ["j1"]).already_watched == ("j1",)


def test_invalid_ids_are_refused_and_counted(instruments: Instruments) -> None:
    """An ID that may not go into a URL is refused with reason invalid_id."""
    watchlist, store, _ = idle_watchlist(instruments)
    outcome = watchlist.add(Route.FILE, ["ok-1", "../etc", "a b", ""])
    assert outcome.added == ("ok-1",)
    assert outcome.invalid == ("../etc", "a b", "")
    assert _rejected(instruments, "invalid_id") == 3
    assert len(store) == 1


def test_other_shards_jobs_are_left_alone(instruments: Instruments) -> None:
    """Only the jobs of this instance's shard are watched, from any route."""
    shard = Shard(1, 3)
    watchlist, store, _ = idle_watchlist(instruments, shard=shard)
    job_ids = [f"job-{n}" for n in range(30)]
    outcome = watchlist.add(Route.SETTINGS, job_ids)
    assert set(outcome.added) == {j for j in job_ids if shard.owns(j)}
    assert set(outcome.other_shard) == {j for j in job_ids if not shard.owns(j)}
    assert outcome.added
    assert outcome.other_shard
    assert len(store) == len(outcome.added)


def test_release_keeps_jobs_another_route_names(instruments: Instruments) -> None:
    """A route dropping an ID stops the job only when no other route names it."""
    watchlist, store, _ = idle_watchlist(instruments)
    watchlist.add(Route.SETTINGS, ["shared"])
    watchlist.add(Route.FILE, ["shared", "file-only"])
    assert watchlist.release(Route.FILE, ["shared", "file-only"]) == ["file-only"]
    assert "shared" in store
    assert "file-only" not in store


def test_remove_stops_a_job_whatever_named_it(instruments: Instruments) -> None:
    """Removing (the job API's DELETE) stops the job even if other routes name it."""
    watchlist, store, _ = idle_watchlist(instruments)
    watchlist.add(Route.SETTINGS, ["job-a"])
    assert watchlist.remove("job-a")
    assert "job-a" not in store
    assert watchlist.routes("job-a") == frozenset()
    assert not watchlist.remove("job-a")


def test_adopt_stores_a_finished_state_without_scheduling_a_poll(
    instruments: Instruments,
) -> None:
    """A job whose finished state is known is stored and never due."""
    watchlist, store, scheduler = idle_watchlist(instruments)
    state = JobState("done-1", polls=1, last_ok=True, finished_at=990.0)
    assert watchlist.adopt(Route.DISCOVERY, state).added == ("done-1",)
    assert store.get("done-1") is state
    assert scheduler.due_jobs() == []
    assert watchlist.adopt(Route.DISCOVERY, state).already_watched == ("done-1",)
    watched = instruments.registry.get_sample_value(
        "cce_exporter_watched_jobs", {"target": "default", "state": "finished"}
    )
    assert watched == 1


@pytest.mark.parametrize("route", list(Route))
def test_every_route_passes_the_same_gate(instruments: Instruments, route: Route) -> None:
    """Whatever the route, a full watch list refuses and counts."""
    watchlist, _, _ = idle_watchlist(instruments, max_jobs=1)
    watchlist.add(Route.SETTINGS, ["first"])
    assert watchlist.add(route, ["second"]).refused == ("second",)
    assert _rejected(instruments, "max_jobs") == 1


def test_adopt_drops_a_finished_state_whose_retention_is_over(
    instruments: Instruments, caplog: pytest.LogCaptureFixture
) -> None:
    """A known finished state that ended longer ago than the retention is never stored."""
    watchlist, store, _ = idle_watchlist(instruments)  # at 1000 s, retention 60 s
    state = JobState("done-1", polls=1, last_ok=True, finished_at=940.0)
    with caplog.at_level(logging.INFO, logger="exporter.scheduler"):
        watchlist.adopt(Route.DISCOVERY, state)
    assert "done-1" not in store
    assert [r.getMessage() for r in caplog.records] == ["job_expired"]
    watched = instruments.registry.get_sample_value(
        "cce_exporter_watched_jobs", {"target": "default", "state": "finished"}
    )
    assert watched == 0


def test_a_batch_of_thousands_remembers_every_route(instruments: Instruments) -> None:
    """Every ID of a batch of thousands keeps its route, so releasing one stops it."""
    watchlist, store, _ = idle_watchlist(instruments, max_jobs=10000)
    job_ids = [f"job-{n}" for n in range(3000)]
    assert len(watchlist.add(Route.FILE, job_ids).added) == 3000
    assert all(watchlist.routes(job_id) == {Route.FILE} for job_id in job_ids)
    assert watchlist.release(Route.FILE, ["job-0"]) == ["job-0"]
    assert "job-0" not in store
    assert len(store) == 2999


def test_an_expired_job_leaves_with_its_routes(instruments: Instruments) -> None:
    """An expired job forgets who named it: watched again by another route, it is that route's."""
    watchlist, store, scheduler = idle_watchlist(instruments, max_jobs=10000)
    watchlist.add(Route.FILE, [f"old-{n}" for n in range(2000)])
    for n in range(2000):
        scheduler.unwatch(f"old-{n}")  # as retention does
    assert watchlist.routes("old-0") == frozenset()
    watchlist.add(Route.API, ["old-0"])
    assert watchlist.routes("old-0") == {Route.API}
    assert watchlist.release(Route.FILE, ["old-0"]) == []
    assert [state.job_id for state in store] == ["old-0"]


# Operations on a pool of IDs, in ranges, so that one can be a batch of thousands.
POOL = 3000
RANGES = st.tuples(st.integers(0, POOL - 1), st.integers(1, 2500))
OPERATIONS = st.lists(
    st.tuples(st.just("add"), st.sampled_from(list(Route)), RANGES)
    | st.tuples(st.just("release"), st.sampled_from(list(Route)), RANGES)
    | st.tuples(st.just("remove"), st.just(Route.API), RANGES)
    | st.tuples(st.just("expire"), st.just(Route.API), RANGES),
    max_size=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=OPERATIONS, max_jobs=st.sampled_from([700, 10000]))
def test_a_job_is_watched_while_some_route_names_it(
    operations: list[tuple[str, Route, tuple[int, int]]], max_jobs: int
) -> None:
    """After any adds and releases across routes, the watched set is what the routes name.

    Beside adding and releasing, a job may be removed (the job API's DELETE) or
    expire (its retention over): either forgets every route's claim on it. A
    route's ID refused for want of room under max_jobs does not count as named.
    """
    watchlist, store, scheduler = idle_watchlist(Instruments(), max_jobs=max_jobs)
    named: dict[Route, set[str]] = {route: set() for route in Route}
    for action, route, (start, count) in operations:
        job_ids = [f"job-{n % POOL}" for n in range(start, start + count)]
        if action == "add":
            watched = set().union(*named.values())
            refused = []
            for job_id in dict.fromkeys(job_ids):
                if job_id in watched or len(watched) < max_jobs:
                    watched.add(job_id)
                    named[route].add(job_id)
                else:
                    refused.append(job_id)
            assert list(watchlist.add(route, job_ids).refused) == refused
        elif action == "release":
            watchlist.release(route, job_ids)
            named[route].difference_update(job_ids)
        else:
            for job_id in job_ids:
                if action == "remove":
                    watchlist.remove(job_id)
                else:
                    scheduler.unwatch(job_id)
                for ids in named.values():
                    ids.discard(job_id)
        assert {state.job_id for state in store} == set().union(*named.values())
        for n in range(POOL):
            job_id = f"job-{n}"
            assert watchlist.routes(job_id) == {r for r, ids in named.items() if job_id in ids}


class _Lister:
    """A job list of `count` running jobs, created now."""

    def __init__(self, count: int, now: float) -> None:
        self._listed = read_listing([v2_job(f"listed-{n:05d}", created=now) for n in range(count)])

    async def list_jobs(self, project_id: str, api: Api = Api.CCE) -> list[ListedJob]:
        """Return the same list at every read, all of it on CCE."""
        return self._listed if api is Api.CCE else []


async def test_refusals_for_max_jobs_are_logged_as_counts_not_per_job(
    instruments: Instruments, caplog: pytest.LogCaptureFixture
) -> None:
    """Three passes over 2,000 listed jobs with room for 10 log one refusal line, not 5,970."""
    now = 1_750_000_000.0
    watchlist, _store, scheduler = idle_watchlist(instruments, max_jobs=10)
    discovery = Discovery(
        _Lister(2000, now), watchlist, instruments, DiscoverySettings("p"), clock=lambda: now
    )
    with caplog.at_level(logging.INFO, logger="exporter.watch"):
        for _ in range(3):
            await discovery.refresh()
    assert len(scheduler) == 10
    refused = [r for r in caplog.records if r.getMessage() == "jobs_refused"]
    assert len(refused) == 1
    assert (
        instruments.registry.get_sample_value(
            "cce_exporter_rejected_jobs_total", {"target": "default", "reason": "max_jobs"}
        )
        == 3 * 1990
    )
