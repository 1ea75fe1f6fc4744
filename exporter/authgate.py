"""Backing off when the API refuses the credentials.

Refused credentials are not transient: retrying at the poll rate only locks
the access key (the API locks it after a few bad signatures). An `AuthGate`
lets requests through freely while the credentials are known to work. Until
then (at start-up, and after a 401 or 403) it lets one request through at a
time, and after a refusal none at all until a backoff has passed; the others
fail at once without reaching the network. One log line says what is wrong
when the credentials stop working, one when they work again.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from exporter.errors import ApiError, ErrorKind
from exporter.logs import event

log = logging.getLogger(__name__)

AUTH_KINDS = (ErrorKind.UNAUTHORIZED, ErrorKind.FORBIDDEN)


class Ticket:
    """Leave to send one request; `settle` it with the answer's status when done."""

    __slots__ = ("_gate", "_probe", "_settled")

    def __init__(self, gate: "AuthGate", *, probe: bool) -> None:
        self._gate = gate
        self._probe = probe
        self._settled = False

    def settle(self, status: int | None, detail: str = "", *, retry_now: bool = False) -> None:
        """Report how the request went: its HTTP status, or None when no answer came.

        `retry_now` says that the credentials were renewed since, so a refusal
        need not wait for the backoff before the next try.
        """
        if self._settled:
            return
        self._settled = True
        self._gate._settle(status, detail, retry_now=retry_now, probe=self._probe)


def backoff_delays(base: float, cap: float) -> Callable[[int], float]:
    """Return the delay after the n-th refusal in a row: base, 2 base, 4 base, ... up to cap."""
    return lambda failures: min(cap, base * 2 ** max(0, failures - 1))


class AuthGate:
    """Admits requests while the credentials work; backs off while they are refused."""

    def __init__(
        self,
        what: str,
        hints: Mapping[ErrorKind, str],
        *,
        base_delay: float = 10.0,
        max_delay: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what = what
        self._hints = hints
        self._delay = backoff_delays(base_delay, max_delay)
        self._clock = clock
        self._trusted = False
        self._failures = 0
        self._retry_at = 0.0
        self._last: ApiError | None = None
        self._announced: ErrorKind | None = None  # the refusal the log has told of
        self._probe = asyncio.Lock()

    @property
    def failing(self) -> bool:
        """Tell whether the last verdict on the credentials was a refusal."""
        return self._failures > 0

    @property
    def failures(self) -> int:
        """Refusals in a row."""
        return self._failures

    async def admit(self) -> Ticket:
        """Wait for leave to send a request; raise the last refusal while backing off."""
        if self._trusted:
            return Ticket(self, probe=False)
        self._refuse_while_backing_off()
        await self._probe.acquire()
        try:
            if self._trusted:
                self._probe.release()
                return Ticket(self, probe=False)
            self._refuse_while_backing_off()
        except BaseException:
            self._probe.release()
            raise
        return Ticket(self, probe=True)

    def _refuse_while_backing_off(self) -> None:
        now = self._clock()
        if self._last is not None and now < self._retry_at:
            wait = self._retry_at - now
            raise ApiError(
                self._last.kind,
                f"not sent: {self._what} refused the credentials; next try in {wait:.0f} s",
                status=self._last.status,
            )

    def _settle(self, status: int | None, detail: str, *, retry_now: bool, probe: bool) -> None:
        try:
            if status in (401, 403) and (probe or self._trusted):
                self._refused(status, detail, retry_now=retry_now)
            # A refusal of a request sent while the credentials were trusted,
            # arriving after another refusal, is the same news: counted once.
            elif status is not None and (200 <= status < 300 or status == 404):
                self._accepted()
            # Anything else (no answer, throttled, server error) says nothing of
            # the credentials: the next request tries again.
        finally:
            if probe:
                self._probe.release()

    def _accepted(self) -> None:
        if self._failures:
            event(
                log,
                logging.INFO,
                "authentication_recovered",
                api=self._what,
                after_refusals=self._failures,
            )
        self._trusted = True
        self._failures = 0
        self._last = None
        self._announced = None

    def _refused(self, status: int, detail: str, *, retry_now: bool) -> None:
        kind = ErrorKind.UNAUTHORIZED if status == 401 else ErrorKind.FORBIDDEN
        self._trusted = False
        if retry_now:
            # Not counted: the credentials refused are gone, the new ones untried.
            self._retry_at = self._clock()
            event(log, logging.DEBUG, "credentials_renewed_after_refusal", api=self._what)
            return
        self._failures += 1
        delay = self._delay(self._failures)
        self._retry_at = self._clock() + delay
        self._last = ApiError(kind, detail, status=status)
        fields: dict[str, object] = {
            "api": self._what,
            "status": status,
            "error": kind.value,
            "detail": detail,
            "hint": self._hints.get(kind, ""),
            "next_try_in": f"{delay:.0f}s",
        }
        if self._announced != kind:
            self._announced = kind
            event(log, logging.ERROR, "authentication_failed", **fields)
        else:
            event(log, logging.DEBUG, "authentication_still_failing", refusals=self._failures)
