import hashlib

import pytest

from exporter.watch.sharding import Shard, index_from_hostname, shard_of


@pytest.mark.parametrize(
    ("job_id", "count", "expected"),
    [
        ("354331b2c-229a-11e8-9c75-0255ac100ceb", 3, 2),
        ("e43c6f3b-87e6-11f0-be88-0255ac10003f", 3, 1),
        ("job-0", 5, 2),
        ("anything", 1, 0),
    ],
)
def test_shard_of_known_answers(job_id: str, count: int, expected: int) -> None:
    """The owner of a job is the spec's formula, pinned by answers computed with sha256sum."""
    assert shard_of(job_id, count) == expected
    digest = hashlib.sha256(job_id.encode()).hexdigest()
    assert int(digest[:16], 16) % count == expected


def test_three_shards_split_sixty_jobs_without_overlap_or_gap() -> None:
    """Every one of 60 jobs is owned by exactly one of three shards."""
    job_ids = [f"job-{n:03d}" for n in range(60)]
    shards = [Shard(index, 3) for index in range(3)]
    owned = [{job_id for job_id in job_ids if shard.owns(job_id)} for shard in shards]
    assert set().union(*owned) == set(job_ids)
    assert sum(len(part) for part in owned) == 60
    assert all(part for part in owned)


@pytest.mark.parametrize(
    ("hostname", "count", "expected"),
    [
        ("cce-job-exporter-0", 3, 0),
        ("cce-job-exporter-2", 3, 2),
        ("exporter-12.exporter.monitoring.svc.cluster.local", 16, 12),
    ],
)
def test_index_from_statefulset_hostname(hostname: str, count: int, expected: int) -> None:
    """`auto` takes the trailing -N of a StatefulSet pod's host name."""
    assert index_from_hostname(hostname, count) == expected


@pytest.mark.parametrize(
    ("hostname", "message"),
    [("exporter", "ending in -N"), ("exporter-3", "not below shard_count 3"), ("a-b", "-N")],
)
def test_index_from_hostname_refuses_what_does_not_fit(hostname: str, message: str) -> None:
    """A host name without -N, or with N too large, is an error that says why."""
    with pytest.raises(ValueError, match=message):
        index_from_hostname(hostname, 3)


def test_shard_refuses_an_index_outside_its_count() -> None:
    """A shard index must lie in 0..count-1."""
    with pytest.raises(ValueError, match=r"not in 0\.\.2"):
        Shard(3, 3)
