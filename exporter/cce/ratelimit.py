"""One token bucket for every request the exporter makes, which throttling pauses."""

import asyncio
import time
from collections.abc import Awaitable, Callable

# A throttled answer without Retry-After pauses all requests this long at
# first, doubling up to the cap each time a request sent after the last pause
# is throttled too.
THROTTLE_PAUSE = 1.0
THROTTLE_PAUSE_CAP = 60.0
# A Retry-After is honoured exactly up to this many seconds: a maintenance page
# asking for a day (or a nonsense number) must not stop the exporter for good.
RETRY_AFTER_CAP = 900.0

Sleep = Callable[[float], Awaitable[None]]
# Clocks and sleeps are not exact; closer than this counts as there.
_EPSILON = 1e-6


class RateLimiter:
    """A token bucket: `rate` requests a second on average, bursts of `rate`.

    Waiters are served in turn. `throttled` pauses every request for a while:
    the API's Retry-After exactly when it gave one, an exponential pause
    otherwise, so that a throttled answer slows the whole exporter down. The
    pause escalates once per pause, not once per answer: the throttled answers
    to requests that were in flight together are one piece of news.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            msg = f"rate must be positive, got {rate}"
            raise ValueError(msg)
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._paused_until = 0.0
        self._pause = THROTTLE_PAUSE
        self._pauses = 0  # pauses begun so far: what `acquire` hands out
        self._lock = asyncio.Lock()

    @property
    def paused_for(self) -> float:
        """Seconds until requests may go again after a throttled answer (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    async def acquire(self) -> int:
        """Wait for a token: the right to send one request now.

        Return a mark to hand to `throttled` or `succeeded` with the answer:
        it tells them whether a pause began after the request was sent.
        """
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until - _EPSILON:
                    await self._sleep(self._paused_until - now)
                    continue
                self._tokens = min(
                    self._capacity, self._tokens + max(0.0, now - self._updated) * self._rate
                )
                self._updated = now
                if self._tokens >= 1 - _EPSILON:
                    self._tokens = max(0.0, self._tokens - 1)
                    return self._pauses
                await self._sleep((1 - self._tokens) / self._rate)
                if self._clock() < self._paused_until - _EPSILON:
                    continue  # throttled meanwhile
                # The token accrued while we slept is this request's.
                self._tokens = 0.0
                self._updated = self._clock()
                return self._pauses

    def throttled(self, retry_after: float | None, sent: int | None = None) -> float:
        """Pause every request after a throttled answer; return the seconds until they may go.

        `sent` is what `acquire` returned for the throttled request. Without a
        Retry-After, an answer to a request sent before the current pause
        began, or arriving while a pause is on, leaves the pause as it is: the
        pause already answers it. Otherwise the pause is the next of 1, 2, 4
        ... seconds, up to the cap.
        """
        now = self._clock()
        paused = now < self._paused_until - _EPSILON
        if retry_after is not None:
            pause = min(retry_after, RETRY_AFTER_CAP)
        elif paused or (sent is not None and sent != self._pauses):
            return max(0.0, self._paused_until - now)
        else:
            pause = self._pause
            self._pause = min(THROTTLE_PAUSE_CAP, self._pause * 2)
        if not paused:
            self._pauses += 1
        until = now + pause
        if until > self._paused_until:
            self._paused_until = until
            # After the pause, requests resume at the steady rate, not in a burst.
            self._tokens = 0
            self._updated = until
        return pause

    def succeeded(self, sent: int | None = None) -> None:
        """Note an answer that was not throttled: the next pause starts small again.

        An answer to a request sent before the current pause began says
        nothing of the rate since, and is ignored.
        """
        if sent is None or sent == self._pauses:
            self._pause = THROTTLE_PAUSE
