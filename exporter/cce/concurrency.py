"""The bound on requests in flight: a slot held for each poll, given up while its retries wait.

The scheduler holds a slot for each poll (`RequestSlots.hold`); the client,
deep inside that poll, gives it up while it waits between two attempts, for a
backoff or a Retry-After (`slot_given_up`), and queues for it again before
the next attempt. A job that hangs or is throttled so holds a slot only while
a request of it is in flight, and healthy jobs are polled meanwhile. The slot
travels with the task in a context variable: the client needs no argument
for it, and a client used without a scheduler has no slot to give up.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar


class _Hold:
    """One holder's slot, and whether it holds it right now."""

    __slots__ = ("held", "semaphore")

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self.semaphore = semaphore
        self.held = True


_current: ContextVar[_Hold | None] = ContextVar("request_slot", default=None)


class RequestSlots:
    """At most `limit` holders at once, each of which may give its slot up for a while."""

    def __init__(self, limit: int) -> None:
        self._semaphore = asyncio.Semaphore(limit)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold a slot for the block (waiting for one first)."""
        await self._semaphore.acquire()
        hold = _Hold(self._semaphore)
        token = _current.set(hold)
        try:
            yield
        finally:
            _current.reset(token)
            if hold.held:  # not when cancelled while queueing to take it back
                self._semaphore.release()


@contextlib.asynccontextmanager
async def slot_given_up() -> AsyncIterator[None]:
    """Give up the slot this task holds, if any, for the block; queue for it again after."""
    hold = _current.get()
    if hold is None or not hold.held:
        yield
        return
    hold.held = False
    hold.semaphore.release()
    try:
        yield
    finally:
        await hold.semaphore.acquire()
        hold.held = True
