"""Answers read before: a job whose answer is unchanged costs a digest, not a parse.

Nearly every poll of a running job returns, byte for byte, what the previous
poll returned. Reading it again (JSON, the lenient model, flattening) costs
about as much CPU as the request itself, more for a larger tree, and gives an
equal tree. `KnownAnswers` remembers, for each job, the digest of the body
that each tree was read from, and hands the very same tree back for the same
body: the renderer, which keeps each tree's series until its tree is
replaced, then renders only the job's polling series again.

An entry lives exactly as long as its tree: the trees are held weakly, so
when a job is dropped (or a new answer replaces its tree) and nothing holds
the old tree any more, its entry goes too. Memory stays bounded by the
trees held anyway: one small entry per tree, no copy of any body.
"""

import hashlib
import weakref
from collections.abc import Callable

from exporter.jobs.tree import JobTree

# 128 bits: two different answers of one job that digest alike are out of reach.
_DIGEST_BYTES = 16


def digest(body: bytes) -> bytes:
    """Return the digest that tells one answer body from another."""
    return hashlib.blake2b(body, digest_size=_DIGEST_BYTES).digest()


class KnownAnswers:
    """The trees read from the answers still held, by job and body digest."""

    def __init__(self) -> None:
        self._trees: weakref.WeakValueDictionary[tuple[str, bytes], JobTree] = (
            weakref.WeakValueDictionary()
        )

    def __len__(self) -> int:
        return len(self._trees)

    def read(self, key: str, body: bytes, read: Callable[[], JobTree]) -> JobTree:
        """Return the tree of `body` for the job `key`: the one read before, or `read()` now.

        `key` names the job and how its body is read (its project, its ID):
        the same body read for another key is read afresh. An answer that
        `read` refuses is not remembered.
        """
        entry = (key, digest(body))
        tree = self._trees.get(entry)
        if tree is None:
            tree = read()
            self._trees[entry] = tree
        return tree
