import asyncio

import pytest

from exporter.cce.ratelimit import RETRY_AFTER_CAP, THROTTLE_PAUSE_CAP, RateLimiter
from tests.standins.clocks import Sleeps


async def test_burst_then_steady_rate() -> None:
    """A full bucket lets `rate` requests through at once, then one per 1/rate seconds."""
    time = Sleeps(0.0)
    limiter = RateLimiter(10, clock=time.clock, sleep=time.sleep)
    for _ in range(10):
        await limiter.acquire()
    assert time.now == 0.0
    for _ in range(20):
        await limiter.acquire()
    assert time.now == pytest.approx(2.0)


async def test_concurrent_waiters_share_the_rate() -> None:
    """Many tasks acquiring at once are held to the rate together."""
    time = Sleeps(0.0)
    limiter = RateLimiter(5, clock=time.clock, sleep=time.sleep)
    await asyncio.gather(*(limiter.acquire() for _ in range(25)))
    assert time.now == pytest.approx(4.0)


async def test_retry_after_pauses_everyone_exactly() -> None:
    """After a throttled answer with Retry-After, no token is given before it has passed."""
    time = Sleeps(0.0)
    limiter = RateLimiter(100, clock=time.clock, sleep=time.sleep)
    assert limiter.throttled(12.5) == 12.5
    assert limiter.paused_for == 12.5
    await limiter.acquire()
    assert time.now == pytest.approx(12.5 + 0.01)


async def test_throttle_without_retry_after_doubles_until_success() -> None:
    """A request throttled after each pause doubles it: 1, 2, 4 ... s to a cap; success resets."""
    time = Sleeps(0.0)
    limiter = RateLimiter(1, clock=time.clock, sleep=time.sleep)
    pauses = [limiter.throttled(None, await limiter.acquire()) for _ in range(8)]
    assert pauses == [1, 2, 4, 8, 16, 32, 60, 60]
    assert max(pauses) == THROTTLE_PAUSE_CAP
    limiter.succeeded(await limiter.acquire())
    assert limiter.throttled(None, await limiter.acquire()) == 1


async def test_requests_throttled_together_pause_once() -> None:
    """Sixteen requests in flight together, all throttled, pause everyone 1 s, not 60 s."""
    time = Sleeps(0.0)
    limiter = RateLimiter(20, clock=time.clock, sleep=time.sleep)
    marks = [await limiter.acquire() for _ in range(16)]
    assert [limiter.throttled(None, mark) for mark in marks] == [1.0] * 16
    assert limiter.paused_for == 1.0
    # Late answers to the same requests, after the pause: no new pause, no reset.
    time.now += 1.5
    assert limiter.throttled(None, marks[0]) == 0.0
    limiter.succeeded(marks[1])
    assert limiter.paused_for == 0.0
    # A request sent after the pause and throttled again doubles it, once.
    late = [await limiter.acquire() for _ in range(3)]
    assert [limiter.throttled(None, mark) for mark in late] == [2.0, 2.0, 2.0]
    assert limiter.throttled(None, await limiter.acquire()) == 4.0


async def test_throttled_answer_without_a_mark_escalates_only_outside_a_pause() -> None:
    """A caller that passes no mark still cannot double a pause that is on."""
    time = Sleeps(0.0)
    limiter = RateLimiter(20, clock=time.clock, sleep=time.sleep)
    assert [limiter.throttled(None) for _ in range(5)] == [1.0] * 5
    time.now += 0.25
    assert limiter.throttled(None) == 0.75
    time.now += 0.75
    assert limiter.throttled(None) == 2.0


def test_rate_must_be_positive() -> None:
    """A rate of zero or less is refused."""
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)


def test_retry_after_is_capped() -> None:
    """A Retry-After of a day, or a nonsense number, pauses for at most the cap."""
    time = Sleeps(0.0)
    limiter = RateLimiter(10, clock=time.clock, sleep=time.sleep)
    assert limiter.throttled(86_400) == RETRY_AFTER_CAP
    assert limiter.throttled(1e23) == RETRY_AFTER_CAP
    assert limiter.paused_for == RETRY_AFTER_CAP
