"""The bound on requests in flight: a slot held for each poll, given up while its retries wait.

The scheduler holds a slot for each poll (`RequestSlots.hold`); the client,
deep inside that poll, gives it up while it waits between two attempts, for a
backoff or a Retry-After (`slot_given_up`), and queues for it again before
the next attempt. A job that hangs or is throttled so holds a slot only while
a request of it is in flight, and healthy jobs are polled meanwhile. The slot
travels with the task in a context variable: the client needs no argument
for it, and a client used without a scheduler has no slot to give up.

The slots are shared by every target, fairly: each holder queues under its
target's name, and when several targets have polls waiting, a slot that
comes free goes to each target in turn (round robin), not to whichever poll
asked first. No target holds more than its `share`: with several, one slot
for each other target stays out of its reach, so a target whose API hangs,
holding every slot it can until its requests time out, leaves the others at
least that one slot each (when there are at least as many slots as targets).
"""

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from contextvars import ContextVar


class _Hold:
    """One holder's slot, and whether it holds it right now."""

    __slots__ = ("held", "key", "slots")

    def __init__(self, slots: "RequestSlots", key: str) -> None:
        self.slots = slots
        self.key = key
        self.held = True


_current: ContextVar[_Hold | None] = ContextVar("request_slot", default=None)


class RequestSlots:
    """At most `limit` holders at once, each of which may give its slot up for a while.

    Waiters queue per key (a target's name), first come first served within
    a key; free slots go to the keys with waiters in turn. One key holds at
    most `share` slots at once (all of them when None).
    """

    def __init__(self, limit: int, *, share: int | None = None) -> None:
        if limit < 1:
            msg = f"limit must be at least 1, got {limit}"
            raise ValueError(msg)
        self._free = limit
        self._share = limit if share is None else max(1, min(share, limit))
        self._held: dict[str, int] = {}
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}
        self._turns: deque[str] = deque()  # keys with waiters, next served first

    @property
    def free(self) -> int:
        """Slots nobody holds."""
        return self._free

    def held(self, key: str) -> int:
        """Slots that holders of `key` hold."""
        return self._held.get(key, 0)

    def waiting(self, key: str) -> int:
        """Holders of `key` queueing for a slot."""
        return sum(1 for future in self._waiters.get(key, ()) if not future.done())

    async def acquire(self, key: str = "") -> None:
        """Wait for a slot, queued under `key`."""
        if self._free > 0 and key not in self._waiters and self.held(key) < self._share:
            self._free -= 1
            self._held[key] = self.held(key) + 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiters.get(key)
        if queue is None:
            queue = self._waiters[key] = deque()
            self._turns.append(key)
        queue.append(future)
        self._hand_out()  # a slot may be free that only stale waiters kept this key from
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(key)  # handed a slot as it was cancelled: pass it on
            else:
                future.cancel()  # skipped when slots are handed out; dropped there
            raise

    def release(self, key: str = "") -> None:
        """Give back a slot that `key` held: to the next key in turn that may take one."""
        self._held[key] = self.held(key) - 1
        if not self._held[key]:
            del self._held[key]
        self._free += 1
        self._hand_out()

    def _hand_out(self) -> None:
        """Give free slots to waiting keys in turn, each below its share; the rest stay free."""
        skipped: list[str] = []  # keys at their share: they keep their turn
        while self._free and self._turns:
            key = self._turns.popleft()
            queue = self._waiters[key]
            while queue and queue[0].done():  # cancelled while waiting
                queue.popleft()
            if not queue:
                del self._waiters[key]
                continue
            if self.held(key) >= self._share:
                skipped.append(key)
                continue
            self._free -= 1
            self._held[key] = self.held(key) + 1
            queue.popleft().set_result(None)
            while queue and queue[0].done():
                queue.popleft()
            if queue:
                self._turns.append(key)  # its next waiter, after the other keys'
            else:
                del self._waiters[key]
        self._turns.extendleft(reversed(skipped))

    @contextlib.asynccontextmanager
    async def hold(self, key: str = "") -> AsyncIterator[None]:
        """Hold a slot for the block (waiting for one first), queued under `key`."""
        await self.acquire(key)
        hold = _Hold(self, key)
        token = _current.set(hold)
        try:
            yield
        finally:
            _current.reset(token)
            if hold.held:  # not when cancelled while queueing to take it back
                self.release(key)


@contextlib.asynccontextmanager
async def slot_given_up() -> AsyncIterator[None]:
    """Give up the slot this task holds, if any, for the block; queue for it again after."""
    hold = _current.get()
    if hold is None or not hold.held:
        yield
        return
    hold.held = False
    hold.slots.release(hold.key)
    try:
        yield
    finally:
        await hold.slots.acquire(hold.key)
        hold.held = True
