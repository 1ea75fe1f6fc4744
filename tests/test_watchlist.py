import logging

import pytest

from exporter.instruments import Instruments
from exporter.sharding import Shard
from exporter.state import JobState
from exporter.watchlist import Route
from tests.conftest import idle_watchlist


def _rejected(instruments: Instruments, reason: str) -> float:
    value = instruments.registry.get_sample_value(
        "cce_exporter_rejected_jobs_total", {"reason": reason}
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
        "cce_exporter_watched_jobs", {"state": "finished"}
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
        "cce_exporter_watched_jobs", {"state": "finished"}
    )
    assert watched == 0
