"""Several targets in the watch layer: each job belongs to one, every route names it."""

import logging
import os
from pathlib import Path

import pytest

from exporter.jobs.clusters import Cluster, ClusterDirectory, ClusterKind
from exporter.jobs.state import DEFAULT_TARGET, JobState
from exporter.metrics.cce_exporter import Instruments
from exporter.settings.targets import IMPLICIT_TARGET
from exporter.watch.clusters import AllClusters
from exporter.watch.jobsfile import JobsFile, parse_entries
from exporter.watch.sharding import Shard, shard_of
from exporter.watch.watchlist import Route, UnknownTargetError
from tests.conftest import idle_watchlist

TARGETS = {"eu-west": "p-eu", "cn-north": "p-cn"}


def _rejected(instruments: Instruments, target: str, reason: str) -> float | None:
    return instruments.registry.get_sample_value(
        "cce_exporter_rejected_jobs_total", {"target": target, "reason": reason}
    )


def _watched(instruments: Instruments, target: str) -> float | None:
    return instruments.registry.get_sample_value(
        "cce_exporter_watched_jobs", {"target": target, "state": "active"}
    )


def test_the_implicit_target_has_one_name_everywhere() -> None:
    """Settings, job states and metrics call the implicit target by the same name."""
    assert IMPLICIT_TARGET == DEFAULT_TARGET == "default"


def test_each_job_is_watched_for_its_target_with_its_project(instruments: Instruments) -> None:
    """Jobs carry their target and its project; the watched-jobs gauge counts per target."""
    watchlist, store, scheduler = idle_watchlist(instruments, targets=TARGETS)
    watchlist.add(Route.SETTINGS, ["job-1", "job-2"], "eu-west")
    watchlist.add(Route.SETTINGS, ["job-3"], "cn-north")
    by_id = {state.job_id: state for state in store}
    assert {job_id: (s.target, s.project_id) for job_id, s in by_id.items()} == {
        "job-1": ("eu-west", "p-eu"),
        "job-2": ("eu-west", "p-eu"),
        "job-3": ("cn-north", "p-cn"),
    }
    assert scheduler.target_of("job-3") == "cn-north"
    assert (_watched(instruments, "eu-west"), _watched(instruments, "cn-north")) == (2.0, 1.0)


def test_a_route_must_name_a_target_there_is(instruments: Instruments) -> None:
    """With several targets, no target or an unknown one is refused with what to name."""
    watchlist, store, _ = idle_watchlist(instruments, targets=TARGETS)
    with pytest.raises(UnknownTargetError, match="name the target of the jobs: one of eu-west"):
        watchlist.add(Route.API, ["job-1"])
    with pytest.raises(UnknownTargetError, match="unknown target 'ap-south'"):
        watchlist.add(Route.API, ["job-1"], "ap-south")
    assert len(store) == 0


def test_one_target_need_not_be_named(instruments: Instruments) -> None:
    """With one target, a route that names none means it."""
    watchlist, store, _ = idle_watchlist(instruments)
    assert watchlist.add(Route.API, ["job-1"]).added == ("job-1",)
    assert store.get("job-1") == JobState("job-1", target="default", project_id="p")


def test_the_same_id_for_a_second_target_is_refused_counted_and_logged(
    instruments: Instruments, caplog: pytest.LogCaptureFixture
) -> None:
    """A job ID watched for one target is refused for another, whose rejection counts it."""
    watchlist, store, scheduler = idle_watchlist(instruments, targets=TARGETS)
    watchlist.add(Route.SETTINGS, ["job-1"], "eu-west")
    with caplog.at_level(logging.WARNING):
        outcome = watchlist.add(Route.FILE, ["job-1", "job-2"], "cn-north")
    assert outcome.other_target == ("job-1",)
    assert outcome.added == ("job-2",)
    assert scheduler.target_of("job-1") == "eu-west"
    assert scheduler.routes("job-1") == {"settings"}  # the file's claim was not taken
    assert _rejected(instruments, "cn-north", "other_target") == 1.0
    assert _rejected(instruments, "eu-west", "other_target") == 0.0
    (line,) = [r for r in caplog.records if r.getMessage() == "job_target_conflict"]
    fields = line.fields  # type: ignore[attr-defined]
    assert (fields["target"], fields["watched_by"], fields["job_id"]) == (
        "cn-north",
        "eu-west",
        "job-1",
    )
    assert len(store) == 2


def test_jobs_file_lines_name_their_target() -> None:
    """A line is a job ID, or a target and a job ID; comments and blank lines are skipped."""
    text = "# jobs\njob-a\neu-west job-b  # the upgrade\n\ncn-north\tjob-c\nx y z\n"
    assert [(e.line, e.target, e.job_id) for e in parse_entries(text)] == [
        (2, None, "job-a"),
        (3, "eu-west", "job-b"),
        (5, "cn-north", "job-c"),
        (6, "x", "y z"),
    ]


def test_jobs_file_with_several_targets(
    tmp_path: Path, instruments: Instruments, caplog: pytest.LogCaptureFixture
) -> None:
    """Each line's job is watched for its target; lines without a known target are logged."""
    path = tmp_path / "jobs.txt"
    path.write_text("eu-west job-a\ncn-north job-b\njob-c\nap-south job-d\n")
    watchlist, store, _ = idle_watchlist(instruments, targets=TARGETS)
    with caplog.at_level(logging.WARNING):
        assert JobsFile(path, watchlist).check()
    assert {(s.job_id, s.target) for s in store} == {("job-a", "eu-west"), ("job-b", "cn-north")}
    (line,) = [r for r in caplog.records if r.getMessage() == "jobs_file_lines_ignored"]
    fields = line.fields  # type: ignore[attr-defined]
    assert fields["count"] == 2
    assert fields["first"].startswith("line 3: name the target of the jobs")


def test_a_job_moved_to_another_target_in_the_file_follows(
    tmp_path: Path, instruments: Instruments
) -> None:
    """A line whose target changes moves its job from the old target to the new."""
    path = tmp_path / "jobs.txt"
    path.write_text("eu-west job-a\n")
    watchlist, store, _ = idle_watchlist(instruments, targets=TARGETS)
    jobs_file = JobsFile(path, watchlist)
    assert jobs_file.check()
    stat = path.stat()
    path.write_text("cn-north job-a\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert not jobs_file.check()
    assert jobs_file.check()
    state = store.get("job-a")
    assert state is not None
    assert (state.target, state.project_id) == ("cn-north", "p-cn")


def test_a_single_target_file_reads_as_before(tmp_path: Path, instruments: Instruments) -> None:
    """With one target, bare IDs and IDs after its name are both its jobs."""
    path = tmp_path / "jobs.txt"
    path.write_text("job-a\ndefault job-b\nother job-c\n")
    watchlist, store, _ = idle_watchlist(instruments)
    assert JobsFile(path, watchlist).check()
    assert {s.job_id for s in store} == {"job-a", "job-b"}


class _Source:
    """A target's cluster lists, as the status page reads them."""

    def __init__(self, *clusters: Cluster) -> None:
        self.directory = ClusterDirectory(clusters)

    async def first_read(self) -> ClusterDirectory:
        """Return the directory (read already)."""
        return self.directory


async def test_the_status_page_knows_the_clusters_of_every_target() -> None:
    """Clusters of all targets in one directory, made again only when a target's changes."""
    eu = _Source(Cluster("c-eu", "prod", ClusterKind.CCE))
    cn = _Source(
        Cluster("c-cn", "prod", ClusterKind.CCE), Cluster("c-cn2", "edge", ClusterKind.CCE)
    )
    every = AllClusters([eu, cn])
    merged = every.directory
    assert (merged.name("c-eu"), merged.name("c-cn2")) == ("prod", "edge")
    assert sorted(merged.resolve("prod")) == ["c-cn", "c-eu"]  # a name both share
    assert every.directory is merged  # nothing changed: the same directory
    cn.directory = ClusterDirectory([Cluster("c-cn3", "new", ClusterKind.AUTOPILOT)])
    assert every.directory.name("c-cn3") == "new"
    assert "c-cn" not in every.directory
    assert await every.first_read() is every.directory


def test_shards_split_the_jobs_of_every_target_by_the_same_hash(instruments: Instruments) -> None:
    """A replica owns a job by its ID's hash alone, whichever target names it."""
    shard = Shard(0, 2)
    watchlist, store, _ = idle_watchlist(instruments, targets=TARGETS, shard=shard)
    eu = [f"eu-job-{n}" for n in range(20)]
    cn = [f"cn-job-{n}" for n in range(20)]
    outcomes = [
        watchlist.add(Route.SETTINGS, eu, "eu-west"),
        watchlist.add(Route.FILE, cn, "cn-north"),
    ]
    for ids, outcome in zip((eu, cn), outcomes, strict=True):
        assert outcome.added == tuple(i for i in ids if shard_of(i, 2) == 0)
        assert outcome.other_shard == tuple(i for i in ids if shard_of(i, 2) == 1)
        assert outcome.added
        assert outcome.other_shard
    assert {s.job_id for s in store} == {i for i in eu + cn if shard_of(i, 2) == 0}
