"""The timestamp cache holds bounded text: over-long timestamps are refused before it."""

import tracemalloc

from exporter.jobs.timestamps import parse_timestamp
from exporter.jobs.tree import flatten
from tests.standins.jobs import job_object

MIB = 1024 * 1024


def test_long_fractions_do_not_grow_the_cache() -> None:
    """Forty distinct timestamps with 1 MB fractions parse to None and leave no memory behind."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        parsed = set()
        for index in range(40):
            text = f"2025-09-02 10:23:38.{index:02d}{'1' * MIB} +0000 UTC"
            parsed.add(parse_timestamp(text))
            del text
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 2 * MIB
    assert parsed == {None}


def test_an_over_long_timestamp_is_a_parse_error_of_its_field() -> None:
    """A creation time past the length limit is counted as a parse error; the job is read."""
    job = job_object("j1")
    job["metadata"]["creationTimestamp"] = "2025-09-02 10:23:38." + "5" * 1000
    tree = flatten(job, "j1")
    assert tree.root.created_ns is None
    assert tree.parse_errors == ("metadata.creationTimestamp",)
    assert tree.root.updated_ns is not None
