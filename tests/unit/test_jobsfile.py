import asyncio
import contextlib
import logging
import os
from pathlib import Path

import pytest

from exporter.jobs.state import JobStore
from exporter.metrics.cce_exporter import Instruments
from exporter.watch import jobsfile
from exporter.watch.jobsfile import JobsFile, parse_job_ids
from exporter.watch.watchlist import Route, WatchList
from tests.conftest import idle_watchlist


def _setup(instruments: Instruments, *, max_jobs: int = 100) -> tuple[WatchList, JobStore]:
    watchlist, store, _ = idle_watchlist(instruments, max_jobs=max_jobs)
    return watchlist, store


def _write(path: Path, text: str) -> None:
    """Write the file and move its modification time on, as a later edit would."""
    stat = path.stat() if path.exists() else None
    path.write_text(text)
    if stat is not None:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def _ids(store: JobStore) -> set[str]:
    return {state.job_id for state in store}


def _settle(jobs_file: JobsFile) -> bool:
    """Check twice, as the run loop does a second apart: a settled change is read at the second."""
    assert not jobs_file.check()  # the change is seen, not yet acted on
    return jobs_file.check()


def test_parse_job_ids_skips_comments_and_blank_lines() -> None:
    """One ID a line; `#` starts a comment anywhere; blank lines are skipped."""
    text = "# watched jobs\njob-a\n\n  job-b   # the upgrade\n#job-c\njob-d\r\n"
    assert parse_job_ids(text) == ["job-a", "job-b", "job-d"]


def test_file_changes_add_and_remove_jobs(tmp_path: Path, instruments: Instruments) -> None:
    """A job added to the file is watched at the next check; one removed is dropped."""
    path = tmp_path / "jobs.txt"
    _write(path, "job-a\njob-b\n")
    watchlist, store = _setup(instruments)
    jobs_file = JobsFile(path, watchlist)
    assert jobs_file.check()
    assert _ids(store) == {"job-a", "job-b"}
    assert not jobs_file.check()  # unchanged: not read again
    _write(path, "job-b\njob-c\n")
    assert not jobs_file.check()  # changed: read once it looks the same at the next check
    assert _ids(store) == {"job-a", "job-b"}
    assert jobs_file.check()
    assert _ids(store) == {"job-b", "job-c"}


def test_file_keeps_jobs_other_routes_name(tmp_path: Path, instruments: Instruments) -> None:
    """Removing an ID from the file keeps it watched while the settings name it."""
    path = tmp_path / "jobs.txt"
    _write(path, "job-a\n")
    watchlist, store = _setup(instruments)
    watchlist.add(Route.SETTINGS, ["job-a"])
    jobs_file = JobsFile(path, watchlist)
    jobs_file.check()
    _write(path, "")
    assert _settle(jobs_file)
    assert _ids(store) == {"job-a"}


def test_unreadable_file_keeps_the_jobs(tmp_path: Path, instruments: Instruments) -> None:
    """A file that disappears or is not text keeps the jobs it named last."""
    path = tmp_path / "jobs.txt"
    _write(path, "job-a\n")
    watchlist, store = _setup(instruments)
    jobs_file = JobsFile(path, watchlist)
    jobs_file.check()
    path.unlink()
    assert not jobs_file.check()
    path.write_bytes(b"\xff\xfe job")
    assert not jobs_file.check()
    assert _ids(store) == {"job-a"}


def test_invalid_lines_are_counted_once(tmp_path: Path, instruments: Instruments) -> None:
    """An invalid line counts once as rejected, not again at every re-read."""
    path = tmp_path / "jobs.txt"
    _write(path, "job-a\nnot/valid\n")
    watchlist, store = _setup(instruments)
    jobs_file = JobsFile(path, watchlist)
    jobs_file.check()
    _write(path, "job-a\nnot/valid\njob-b\n")
    assert _settle(jobs_file)
    rejected = instruments.registry.get_sample_value(
        "cce_exporter_rejected_jobs_total", {"target": "default", "reason": "invalid_id"}
    )
    assert rejected == 1
    assert _ids(store) == {"job-a", "job-b"}


def test_refused_ids_are_offered_again_at_the_next_change(
    tmp_path: Path, instruments: Instruments
) -> None:
    """An ID refused for want of room is watched after the file changes with room made."""
    path = tmp_path / "jobs.txt"
    _write(path, "job-a\njob-b\n")
    watchlist, store = _setup(instruments, max_jobs=1)
    jobs_file = JobsFile(path, watchlist)
    jobs_file.check()
    assert _ids(store) == {"job-a"}
    _write(path, "job-b\n")
    assert _settle(jobs_file)
    assert _ids(store) == {"job-b"}


def test_a_file_caught_half_written_is_not_acted_on(
    tmp_path: Path, instruments: Instruments, caplog: pytest.LogCaptureFixture
) -> None:
    """A file seen truncated, then partly written, unwatches nothing; the finished file is read."""
    path = tmp_path / "jobs.txt"
    _write(path, "job-a\njob-b\n")
    watchlist, store = _setup(instruments)
    jobs_file = JobsFile(path, watchlist)
    assert jobs_file.check()
    states = {state.job_id: state for state in store}
    with caplog.at_level(logging.INFO, logger="exporter"):
        for text in ("", "job-a\njob-", "job-a\njob-b\njob-c\n"):
            _write(path, text)  # each look finds the file changed again: not yet settled
            assert not jobs_file.check()
            assert _ids(store) == {"job-a", "job-b"}
        assert jobs_file.check()  # unchanged since the last look: read
    assert _ids(store) == {"job-a", "job-b", "job-c"}
    assert all(store.get(job_id) is state for job_id, state in states.items())
    messages = [record.getMessage() for record in caplog.records]
    assert "jobs_unwatched" not in messages
    assert messages.count("jobs_file_read") == 1


def test_a_file_written_while_it_is_read_is_read_again_once_settled(
    tmp_path: Path, instruments: Instruments, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that changes during the read is not acted on; it is read again once settled."""
    path = tmp_path / "jobs.txt"
    _write(path, "job-a\njob-b\n")
    watchlist, store = _setup(instruments)
    jobs_file = JobsFile(path, watchlist)
    jobs_file.check()
    _write(path, "job-a\n")  # a writer that truncates, caught after one line...
    assert not jobs_file.check()
    read = jobsfile.read_jobs_file

    def read_then_write(read_path: Path) -> str:
        text = read(read_path)
        _write(path, "job-a\njob-b\njob-c\n")  # ... finishes right after the read
        return text

    with monkeypatch.context() as patch:
        patch.setattr(jobsfile, "read_jobs_file", read_then_write)
        assert not jobs_file.check()
    assert _ids(store) == {"job-a", "job-b"}
    assert _settle(jobs_file)
    assert _ids(store) == {"job-a", "job-b", "job-c"}


def test_an_atomic_replace_is_read_at_the_next_check(
    tmp_path: Path, instruments: Instruments
) -> None:
    """A ConfigMap-style swap of a symbolic link is acted on one check later, once settled."""
    first = tmp_path / "v1"
    first.write_text("job-a\n")
    path = tmp_path / "jobs.txt"
    path.symlink_to(first)
    watchlist, store = _setup(instruments)
    jobs_file = JobsFile(path, watchlist)
    assert jobs_file.check()
    second = tmp_path / "v2"
    second.write_text("job-b\n")
    swap = tmp_path / "swap"
    swap.symlink_to(second)
    swap.replace(path)
    assert _settle(jobs_file)
    assert _ids(store) == {"job-b"}


@pytest.mark.parametrize("link", [True, False])
def test_run_loop_picks_up_an_edit(tmp_path: Path, instruments: Instruments, link: bool) -> None:
    """The loop notices an edit, also when the path is a symbolic link swapped to a new file."""
    target = tmp_path / "v1"
    _write(target, "job-a\n")
    path = tmp_path / "jobs.txt"
    if link:
        path.symlink_to(target)
    else:
        path = target
    watchlist, store = _setup(instruments)
    jobs_file = JobsFile(path, watchlist, check_seconds=0.01)
    jobs_file.check()

    async def scenario() -> None:
        task = asyncio.create_task(jobs_file.run())
        try:
            if link:
                new = tmp_path / "v2"
                new.write_text("job-a\njob-b\n")
                tmp_link = tmp_path / "tmp-link"
                tmp_link.symlink_to(new)
                tmp_link.replace(path)  # the ConfigMap way: an atomic swap of the link
            else:
                _write(path, "job-a\njob-b\n")
            # The loop under test offers no event to wait on: look until it acts.
            async with asyncio.timeout(5):
                while "job-b" not in store:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()

    asyncio.run(scenario())
    assert _ids(store) == {"job-a", "job-b"}


def test_a_byte_order_mark_is_not_part_of_the_first_id(
    tmp_path: Path, instruments: Instruments
) -> None:
    """A file saved with a UTF-8 byte order mark (Windows editors) names its first job as is."""
    path = tmp_path / "jobs.txt"
    path.write_bytes(b"\xef\xbb\xbfjob-a\njob-b\n")
    watchlist, store = _setup(instruments)
    assert JobsFile(path, watchlist).check()
    assert _ids(store) == {"job-a", "job-b"}


def test_a_line_removed_from_a_large_file_stops_its_job(
    tmp_path: Path, instruments: Instruments
) -> None:
    """With thousands of IDs read at once, deleting one line stops watching that job."""
    path = tmp_path / "jobs.txt"
    job_ids = [f"job-{n}" for n in range(3000)]
    _write(path, "".join(f"{job_id}\n" for job_id in job_ids))
    watchlist, store = _setup(instruments, max_jobs=10000)
    jobs_file = JobsFile(path, watchlist)
    assert jobs_file.check()
    assert len(store) == 3000
    _write(path, "".join(f"{job_id}\n" for job_id in job_ids[1:]))
    assert _settle(jobs_file)
    assert "job-0" not in store
    assert watchlist.routes("job-0") == frozenset()
    assert _ids(store) == set(job_ids[1:])


def _unblock(path: Path) -> None:
    """Open a FIFO's write end once, so that a reader stuck opening it (the old code) goes on."""
    with contextlib.suppress(OSError):  # no reader waits: nothing to unblock
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


async def test_a_fifo_swapped_in_keeps_the_jobs_and_never_hangs(
    tmp_path: Path, instruments: Instruments, caplog: pytest.LogCaptureFixture
) -> None:
    """A FIFO in place of the file is refused at once, the jobs stay, and the log says so once."""
    path = tmp_path / "jobs.txt"
    _write(path, "job-a\n")
    watchlist, store = _setup(instruments)
    jobs_file = JobsFile(path, watchlist)
    jobs_file.check()
    path.unlink()
    os.mkfifo(path)
    try:
        with caplog.at_level(logging.WARNING, logger="exporter.watch.jobsfile"):
            for _ in range(4):
                assert not await asyncio.wait_for(asyncio.to_thread(jobs_file.check), 5)
                assert not await asyncio.wait_for(jobs_file.check_async(), 5)
    finally:
        _unblock(path)
    assert _ids(store) == {"job-a"}
    problems = [r for r in caplog.records if r.getMessage() == "jobs_file_unreadable"]
    assert len(problems) == 1
    assert "FIFO" in problems[0].fields["problem"]


@pytest.mark.parametrize("kind", ["directory", "device", "oversized"])
def test_a_file_that_is_not_a_small_regular_file_keeps_the_jobs(
    tmp_path: Path, instruments: Instruments, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """A directory, a device or a file past the size cap keeps the jobs the file named last."""
    path = tmp_path / "jobs.txt"
    _write(path, "job-a\n")
    watchlist, store = _setup(instruments)
    jobs_file = JobsFile(path, watchlist)
    jobs_file.check()
    if kind == "directory":
        path.unlink()
        path.mkdir()
    elif kind == "device":
        path.unlink()
        path.symlink_to("/dev/zero")
    else:
        _write(path, "job-b\n" * (jobsfile.MAX_BYTES // 6 + 1))
    with caplog.at_level(logging.WARNING, logger="exporter.watch.jobsfile"):
        for _ in range(4):
            assert not jobs_file.check()
    assert _ids(store) == {"job-a"}
    assert [r.getMessage() for r in caplog.records] == ["jobs_file_unreadable"]


async def test_a_forced_check_reads_an_unchanged_file(
    tmp_path: Path, instruments: Instruments
) -> None:
    """A forced check (SIGHUP) reads the file again at once, changed or not."""
    path = tmp_path / "jobs.txt"
    _write(path, "job-a\n")
    watchlist, store = _setup(instruments)
    jobs_file = JobsFile(path, watchlist)
    assert await jobs_file.check_async()
    assert not await jobs_file.check_async()
    assert await jobs_file.check_async(force=True)
    assert _ids(store) == {"job-a"}
