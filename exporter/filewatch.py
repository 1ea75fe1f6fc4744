"""Has this file settled? Following files that other programs write while we run.

A writer that truncates a file and then writes it (`cat > file`, most
editors' plain save), or that writes a certificate before its key, can be
caught in between. A set of files counts as changed once their signature
(device, inode, modification time and size of each) differs from when they
were last read whole, and as settled once it is the same at two checks in a
row; a read counts only if the signature did not change across it. The jobs
file and the web config both follow their files this way.
"""

import os
from collections.abc import Sequence
from pathlib import Path

# A file's device, inode, modification time and size; None if it cannot be looked at.
FileStat = tuple[int, int, int, int] | None
Signature = tuple[FileStat, ...]


def file_stat(path: Path) -> FileStat:
    """Return what tells a change of `path`, or None when it cannot be looked at."""
    try:
        # stat() follows symbolic links: a Kubernetes ConfigMap or Secret volume swaps one.
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a path with a NUL in it
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def signature(files: Sequence[Path]) -> Signature:
    """Return the signature of a set of files, in their order."""
    return tuple(file_stat(path) for path in files)


class SettledFiles:
    """Decides when a set of files has changed and settled, and so is worth reading."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = tuple(files)
        self._seen: Signature | None = None  # as the last check found them
        self._read_as: Signature | None = None  # as they were when last read whole

    def due(self, *, at_once: bool = False) -> Signature | None:
        """Return the files' signature if they are worth reading now, else None.

        They are when they changed since they were last read whole and are as
        the check before found them; `at_once` skips waiting for that check
        (the first read of all).
        """
        now = signature(self.files)
        previous, self._seen = self._seen, now
        if now == self._read_as or (now != previous and not at_once):
            return None
        return now

    def read(self, before: Signature, files: Sequence[Path] | None = None) -> bool:
        """Note a read of the files begun at signature `before`; tell whether it holds.

        A read holds when no file changed while it went on; `files` replaces
        the set followed (a config may name new files).
        """
        if files is not None:
            self.files = tuple(files)
        self._seen = before
        if signature(self.files) != before:
            return False  # written while read: read again once it settles
        self._read_as = before
        return True

    def forget(self) -> None:
        """Count the files as never read, so the next check that finds them settled reads them."""
        self._read_as = None
