"""Time that moves only when the test says: a clock, and sleeps that move a clock."""


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        """Tell the time."""
        return self.now


class Sleeps:
    """Records the sleeps asked for, and moves a fake clock by them instead of sleeping."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now
        self.calls: list[float] = []

    def clock(self) -> float:
        """Tell the fake time."""
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Record a sleep and let the fake time pass."""
        self.calls.append(seconds)
        self.now += seconds
