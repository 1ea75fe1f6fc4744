"""The `job_ids_file` route: a file of job IDs, one a line, re-read when it changes.

The file is read again only once it has settled (`exporter.filewatch`), so
that a half-written file never unwatches the jobs it lacks. Only a regular
file of at most MAX_BYTES is read, and off the event loop: a FIFO, a device
or a directory swapped in, or a file grown past the cap, keeps the jobs the
file named last, and the log says why once.

A line is a job ID, or a target's name and a job ID (`eu-west 3b44...`): a
line without a target names the only one, and with several targets is
ignored, as is a line that names no target there is; the log says which
lines at each read.
"""

import asyncio
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from exporter.filewatch import SettledFiles, Signature
from exporter.logs import event
from exporter.watch.watchlist import Route, UnknownTargetError, WatchList

log = logging.getLogger(__name__)

# How often the file's status is looked at; reading it happens only on change.
CHECK_SECONDS = 1.0
# max_jobs IDs of 64 characters fit in a few MiB, with room for comments.
MAX_BYTES = 8 * 1024 * 1024


class _UnusableError(Exception):
    """The jobs file is there but cannot be used; the message says why."""


def read_jobs_file(path: Path) -> str:
    """Read a jobs file as text; raise OSError, or _UnusableError for anything but a small file.

    Opened without blocking, so that a FIFO with no writer cannot hang the
    read; its kind is checked on what was opened, so a swap cannot slip in.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO, socket or device"
            msg = f"not a regular file but {kind}"
            raise _UnusableError(msg)
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read(MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        msg = f"larger than {MAX_BYTES // 2**20} MiB"
        raise _UnusableError(msg)
    try:
        # utf-8-sig: a byte order mark (Windows editors) is not part of an ID.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        msg = "not UTF-8 text"
        raise _UnusableError(msg) from None


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a jobs file that names a job: its number, the target named (if any), the ID."""

    line: int
    target: str | None
    job_id: str


def parse_entries(text: str) -> list[Entry]:
    """Return the entries of a jobs file in order: `[target] job_id` a line, `#` a comment."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split(maxsplit=1)
        if len(words) == 1:
            entries.append(Entry(number, None, words[0]))
        elif words:
            # More than one ID on the line stays one entry: an invalid ID, counted as such.
            entries.append(Entry(number, words[0], words[1].strip()))
    return entries


def parse_job_ids(text: str) -> list[str]:
    """Return the IDs of a jobs file in order, whatever targets its lines name."""
    return [entry.job_id for entry in parse_entries(text)]


class JobsFile:
    """Follows a jobs file: IDs added to it are watched, IDs removed from it are not."""

    def __init__(
        self, path: Path, watchlist: WatchList, *, check_seconds: float = CHECK_SECONDS
    ) -> None:
        self._path = path
        self._watchlist = watchlist
        self._check_seconds = check_seconds
        self._file = SettledFiles([path])
        self._checked = False
        # Every (target, job ID) of the last read, invalid IDs too; not those
        # refused for room or for another target, to be offered again.
        self._entries: set[tuple[str, str]] = set()
        self._problem: str | None = None

    def check(self) -> bool:
        """Re-read the file if it changed and has settled since; return whether it was read.

        The first check reads the file at once. After it, a change is acted on
        at the first check that finds the file as the check before found it,
        and unchanged across the read. A file that cannot be used keeps the
        jobs it named last.
        """
        before = self._due()
        if before is None:
            return False
        return self._apply(before, self._load())

    async def check_async(self, *, force: bool = False) -> bool:
        """Do as `check`, reading the file in a thread; `force` reads it even if unchanged."""
        if force:
            self._file.forget()
        before = self._due(at_once=force)
        if before is None:
            return False
        return self._apply(before, await asyncio.to_thread(self._load))

    async def run(self) -> None:
        """Check the file for changes for ever; cancel to stop."""
        while True:
            await asyncio.sleep(self._check_seconds)
            await self.check_async()

    def _due(self, *, at_once: bool = False) -> Signature | None:
        first, self._checked = not self._checked, True
        return self._file.due(at_once=at_once or first)

    def _load(self) -> str | _UnusableError:
        """Read the file; a problem is returned, not raised, to cross from a thread."""
        try:
            return read_jobs_file(self._path)
        except OSError as exc:
            return _UnusableError(exc.strerror or type(exc).__name__)
        except _UnusableError as exc:
            return exc

    def _apply(self, before: Signature, text: str | _UnusableError) -> bool:
        """Act on what a read found: the IDs it names, or the problem with the file."""
        if isinstance(text, _UnusableError):
            problem = str(text)
            if problem != self._problem:
                event(
                    log,
                    logging.WARNING,
                    "jobs_file_unreadable",
                    path=str(self._path),
                    problem=problem,
                    kept="the jobs it named last",
                )
            self._problem = problem
            return False
        if not self._file.read(before):
            return False
        self._problem = None
        parsed = parse_entries(text)
        entries: dict[tuple[str, str], None] = {}
        ignored: list[str] = []
        for entry in parsed:
            try:
                entries[self._watchlist.target(entry.target), entry.job_id] = None
            except UnknownTargetError as exc:
                ignored.append(f"line {entry.line}: {exc}")
        # Only new entries are offered, so that an invalid line is counted once
        # and a job that expired after finishing is not watched again.
        # Removed IDs go first, to make room for the new ones.
        removed = sorted(job_id for _, job_id in self._entries - entries.keys())
        self._watchlist.release(Route.FILE, removed)
        offered: dict[str, list[str]] = {}
        for target, job_id in entries:
            if (target, job_id) not in self._entries:
                offered.setdefault(target, []).append(job_id)
        again: set[tuple[str, str]] = set()
        for target, job_ids in offered.items():
            outcome = self._watchlist.add(Route.FILE, job_ids, target)
            # IDs refused for want of room, or watched for another target, are
            # offered again at the next change.
            again.update((target, job_id) for job_id in outcome.refused + outcome.other_target)
        self._entries = set(entries) - again
        if ignored:
            event(
                log,
                logging.WARNING,
                "jobs_file_lines_ignored",
                path=str(self._path),
                count=len(ignored),
                first=ignored[0],
            )
        event(log, logging.INFO, "jobs_file_read", path=str(self._path), entries=len(parsed))
        return True
