"""The `job_ids_file` route: a file of job IDs, one a line, re-read when it changes.

The file is read again only once it has settled (`exporter.filewatch`), so
that a half-written file never unwatches the jobs it lacks.
"""

import asyncio
import logging
from pathlib import Path

from exporter.filewatch import SettledFiles
from exporter.logs import event
from exporter.watch.watchlist import Route, WatchList

log = logging.getLogger(__name__)

# How often the file's status is looked at; reading it happens only on change.
CHECK_SECONDS = 1.0


def parse_job_ids(text: str) -> list[str]:
    """Return the IDs of a jobs file in order: one a line, `#` starts a comment."""
    ids = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            ids.append(entry)
    return ids


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
        self._entries: set[str] = set()  # every entry of the last read, invalid ones too
        self._problem: str | None = None

    def check(self) -> bool:
        """Re-read the file if it changed and has settled since; return whether it was read.

        The first check reads the file at once. After it, a change is acted on
        at the first check that finds the file as the check before found it,
        and unchanged across the read. A file that cannot be read keeps the
        jobs it named last.
        """
        first, self._checked = not self._checked, True
        before = self._file.due(at_once=first)
        if before is None:
            return False
        try:
            # utf-8-sig: a byte order mark (Windows editors) is not part of an ID.
            text = self._path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            problem = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            if problem != self._problem:
                event(
                    log,
                    logging.WARNING,
                    "jobs_file_unreadable",
                    path=str(self._path),
                    problem=problem or type(exc).__name__,
                )
            self._problem = problem
            return False
        if not self._file.read(before):
            return False
        self._problem = None
        entries = parse_job_ids(text)
        # Only new entries are offered, so that an invalid line is counted once
        # and a job that expired after finishing is not watched again.
        # Removed IDs go first, to make room for the new ones.
        self._watchlist.release(Route.FILE, sorted(self._entries - set(entries)))
        outcome = self._watchlist.add(Route.FILE, [e for e in entries if e not in self._entries])
        # IDs refused for want of room are offered again at the next change.
        self._entries = set(entries) - set(outcome.refused)
        event(log, logging.INFO, "jobs_file_read", path=str(self._path), entries=len(entries))
        return True

    async def run(self) -> None:
        """Check the file for changes for ever; cancel to stop."""
        while True:
            await asyncio.sleep(self._check_seconds)
            self.check()
