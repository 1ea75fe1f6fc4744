"""The shared concurrency slots: bounded, handed to the targets in turn, within each one's share."""

import asyncio
from collections.abc import Callable

import pytest

from exporter.cce.concurrency import RequestSlots, slot_given_up


async def _settle(done: Callable[[], bool]) -> None:
    """Let the other tasks run until `done` holds (a bounded number of loop turns)."""
    for _ in range(1000):
        if done():
            return
        await asyncio.sleep(0)
    msg = "the tasks did not get there"
    raise AssertionError(msg)


class Holders:
    """Tasks that each take a slot under a key, note it, and hold it until told to let go."""

    def __init__(self, slots: RequestSlots) -> None:
        self.slots = slots
        self.order: list[str] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._let_go: dict[str, asyncio.Event] = {}

    def start(self, name: str, key: str) -> None:
        """Start a holder named `name` queueing under `key`."""
        self._let_go[name] = asyncio.Event()

        async def hold() -> None:
            async with self.slots.hold(key):
                self.order.append(name)
                await self._let_go[name].wait()

        self.tasks[name] = asyncio.create_task(hold())

    async def finish(self, name: str) -> None:
        """Let a holder go, and wait for its task to end."""
        self._let_go[name].set()
        await self.tasks[name]


async def test_a_freed_slot_goes_to_each_waiting_target_in_turn() -> None:
    """Waiters of one target that came first do not take every slot that comes free."""
    holders = Holders(RequestSlots(1))
    holders.start("first", "a")
    await _settle(lambda: holders.order == ["first"])
    for name in ("a1", "a2", "a3"):
        holders.start(name, "a")
    for name in ("b1", "b2"):
        holders.start(name, "b")
    await _settle(lambda: holders.slots.waiting("a") == 3 and holders.slots.waiting("b") == 2)
    for name in ("first", "a1", "b1", "a2", "b2"):
        await holders.finish(name)
    await _settle(lambda: len(holders.order) == 6)
    assert holders.order == ["first", "a1", "b1", "a2", "b2", "a3"]
    await holders.finish("a3")
    assert holders.slots.free == 1


async def test_a_target_holds_no_more_than_its_share() -> None:
    """With a share below the limit, the slots a target cannot take stay for the others."""
    slots = RequestSlots(3, share=2)
    holders = Holders(slots)
    for name in ("a1", "a2", "a3"):
        holders.start(name, "a")
    await _settle(lambda: slots.held("a") == 2 and slots.waiting("a") == 1)
    assert slots.free == 1  # kept from a's third poll
    holders.start("b1", "b")
    await _settle(lambda: "b1" in holders.order)
    assert slots.free == 0
    await holders.finish("a1")
    await _settle(lambda: "a3" in holders.order)
    assert slots.held("a") == 2
    for name in ("a2", "a3", "b1"):
        await holders.finish(name)
    assert (slots.free, slots.held("a"), slots.held("b")) == (3, 0, 0)


async def test_a_waiter_cancelled_loses_no_slot() -> None:
    """A poll cancelled while it queues takes no slot with it, even one handed to it as it goes."""
    slots = RequestSlots(1)
    holders = Holders(slots)
    holders.start("holder", "a")
    await _settle(lambda: holders.order == ["holder"])
    holders.start("gone", "b")
    holders.start("next", "a")
    await _settle(lambda: slots.waiting("b") == 1 and slots.waiting("a") == 1)
    holders.tasks["gone"].cancel()
    await holders.finish("holder")  # the slot is handed past the cancelled waiter
    await _settle(lambda: "next" in holders.order)
    await holders.finish("next")
    with pytest.raises(asyncio.CancelledError):
        await holders.tasks["gone"]
    assert slots.free == 1
    assert "gone" not in holders.order


async def test_a_slot_given_up_while_retrying_goes_to_another_target() -> None:
    """A poll that waits between two attempts lets another target's poll through meanwhile."""
    slots = RequestSlots(1)
    retrying = asyncio.Event()
    retry_now = asyncio.Event()
    order: list[str] = []

    async def retrier() -> None:
        async with slots.hold("a"):
            order.append("a: first attempt")
            async with slot_given_up():
                retrying.set()
                await retry_now.wait()
            order.append("a: second attempt")

    task = asyncio.create_task(retrier())
    await retrying.wait()
    async with slots.hold("b"):
        order.append("b")
    retry_now.set()
    await task
    assert order == ["a: first attempt", "b", "a: second attempt"]
    assert slots.free == 1
