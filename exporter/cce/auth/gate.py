"""Backing off when the API refuses the credentials, or an action.

Refused credentials are not transient: retrying at the poll rate only locks
the access key (the API locks it after more than five bad signatures in a
row). An `AuthGate` lets requests through freely while the credentials are
known to work. Until then (at start-up, and after a 401) it lets one request
through at a time, and after a refusal none at all until a backoff has passed;
the others fail at once without reaching the network.

A 403 says the credentials work but may not do one action (`cce:job:get`,
`cce:job:list`): it holds back the requests for that action in the same way,
and no others, so that a user who may read jobs but not list them still has
its jobs read.

An answer that is neither (a timeout, a broken connection, a 5xx, a 429) says
nothing of the credentials. The requests that waited behind such a try for a
verdict then fail at once with its kind, without reaching the network, rather
than each trying in turn, alone, for up to the request timeout: that took
hours for a few hundred jobs during an outage at start-up. Their polls count
the failure and try again as usual, and the next try goes alone again, so no
more than one request with unproven credentials is ever in flight.

One log line says what is wrong when the credentials (or an action) stop
working, one when they work again.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from exporter.errors import TRANSIENT, ApiError, ErrorKind
from exporter.logs import event

log = logging.getLogger(__name__)

AUTH_KINDS = (ErrorKind.UNAUTHORIZED, ErrorKind.FORBIDDEN)


class _Standing:
    """What the API last said of one thing: the credentials, or leave for one action."""

    __slots__ = ("announced", "failures", "last", "probe", "retry_at", "stall", "stalls", "trusted")

    def __init__(self, *, trusted: bool) -> None:
        self.trusted = trusted
        self.failures = 0  # refusals in a row
        self.retry_at = 0.0
        self.last: ApiError | None = None  # the refusal backed off from
        self.announced = False  # whether the log told of the refusals under way
        self.probe = asyncio.Lock()  # held by the one request trying while not trusted
        # Tries that ended without a verdict (timeout, 5xx, ...), and the last one's kind.
        self.stalls = 0
        self.stall: ErrorKind | None = None


class Ticket:
    """Leave to send one request; `settle` it with the answer's status when done."""

    __slots__ = ("_action", "_gate", "_probes", "_settled")

    def __init__(self, gate: "AuthGate", action: str, probes: tuple[_Standing, ...]) -> None:
        self._gate = gate
        self._action = action
        self._probes = probes
        self._settled = False

    def settle(
        self,
        status: int | None,
        detail: str = "",
        *,
        retry_now: bool = False,
        kind: ErrorKind | None = None,
    ) -> None:
        """Report how the request went: its HTTP status, or None when no answer came.

        `kind` is the error kind the request failed with, if it failed: a
        transient one tells the requests waiting behind it not to wait on.
        `retry_now` says that the credentials were renewed since, so a refusal
        need not wait for the backoff before the next try.
        """
        if self._settled:
            return
        self._settled = True
        self._gate._settle(self._action, self._probes, status, detail, kind, retry_now=retry_now)


def backoff_delays(base: float, cap: float) -> Callable[[int], float]:
    """Return the delay after the n-th refusal in a row: base, 2 base, 4 base, ... up to cap."""
    return lambda failures: min(cap, base * 2 ** max(0, failures - 1))


class AuthGate:
    """Admits requests while the credentials work; backs off while they or an action are refused."""

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
        self._credentials = _Standing(trusted=False)
        self._actions: dict[str, _Standing] = {}

    @property
    def failing(self) -> bool:
        """Tell whether the last verdict on the credentials, or on an action, was a refusal."""
        return self.failures > 0

    @property
    def failures(self) -> int:
        """Refusals in a row: of the credentials, or of the action refused most."""
        return max(s.failures for s in (self._credentials, *self._actions.values()))

    async def admit(self, action: str = "") -> Ticket:
        """Wait for leave to send a request for `action`; raise the refusal while backing off."""
        standings = (self._credentials, self._standing(action))
        for standing in standings:
            self._refuse_while_backing_off(standing, action)
        probes: list[_Standing] = []
        try:
            for standing in standings:
                if await self._enter(standing, action):
                    probes.append(standing)
            for standing in standings:  # a verdict may have come while this one waited
                self._refuse_while_backing_off(standing, action)
        except BaseException:
            for standing in probes:
                standing.probe.release()
            raise
        return Ticket(self, action, tuple(probes))

    def _standing(self, action: str) -> _Standing:
        standing = self._actions.get(action)
        if standing is None:
            standing = self._actions[action] = _Standing(trusted=True)
        return standing

    async def _enter(self, standing: _Standing, action: str) -> bool:
        """Wait to be the one request trying while `standing` is not trusted; say whether it is."""
        if standing.trusted:
            return False
        stalls = standing.stalls
        await standing.probe.acquire()
        try:
            if standing.trusted:
                standing.probe.release()
                return False
            self._refuse_while_backing_off(standing, action)
            if standing.stalls != stalls and standing.stall is not None:
                # The try this request waited for got no verdict: rather than
                # wait behind the next one too, it fails as that try did.
                msg = (
                    f"not sent: no verdict from {self._what} on {self._subject(standing, action)}"
                    f" yet; the one request trying failed as {standing.stall}"
                )
                raise ApiError(standing.stall, msg)
        except BaseException:
            standing.probe.release()
            raise
        return True

    def _refuse_while_backing_off(self, standing: _Standing, action: str) -> None:
        now = self._clock()
        last = standing.last
        if last is not None and now < standing.retry_at:
            msg = (
                f"not sent: {self._what} refused {self._subject(standing, action)};"
                f" next try in {standing.retry_at - now:.0f} s"
            )
            raise ApiError(last.kind, msg, status=last.status)

    def _subject(self, standing: _Standing, action: str) -> str:
        if standing is self._credentials:
            return "the credentials"
        return action or "the request"

    def _settle(
        self,
        action: str,
        probes: tuple[_Standing, ...],
        status: int | None,
        detail: str,
        kind: ErrorKind | None,
        *,
        retry_now: bool,
    ) -> None:
        credentials, leave = self._credentials, self._standing(action)
        try:
            # A refusal of a request sent while trusted, arriving after another
            # refusal, is the same news: counted once.
            if status == 401:
                if credentials in probes or credentials.trusted:
                    self._refused(credentials, status, detail, action, retry_now=retry_now)
            elif status == 403:
                # The credentials work: only this action is refused.
                self._accepted(credentials, "")
                if leave in probes or leave.trusted:
                    self._refused(leave, status, detail, action, retry_now=False)
            elif status is not None and (200 <= status < 300 or status == 404):
                self._accepted(credentials, "")
                self._accepted(leave, action)
            elif kind in TRANSIENT:
                for standing in probes:
                    standing.stalls += 1
                    standing.stall = kind
            # Anything else (another 4xx, a cancelled request) says nothing of
            # the credentials: the next request waiting tries.
        finally:
            for standing in probes:
                standing.probe.release()

    def _accepted(self, standing: _Standing, action: str) -> None:
        if standing.failures:
            fields: dict[str, object] = {"api": self._what, "after_refusals": standing.failures}
            if action:
                fields["action"] = action
            event(log, logging.INFO, "authentication_recovered", **fields)
        standing.trusted = True
        standing.failures = 0
        standing.last = None
        standing.announced = False

    def _refused(
        self, standing: _Standing, status: int, detail: str, action: str, *, retry_now: bool
    ) -> None:
        kind = ErrorKind.UNAUTHORIZED if status == 401 else ErrorKind.FORBIDDEN
        standing.trusted = False
        if retry_now:
            # Not counted: the credentials refused are gone, the new ones untried.
            standing.retry_at = self._clock()
            event(log, logging.DEBUG, "credentials_renewed_after_refusal", api=self._what)
            return
        standing.failures += 1
        delay = self._delay(standing.failures)
        standing.retry_at = self._clock() + delay
        standing.last = ApiError(kind, detail, status=status)
        # A 403 is about one action: the line says which (cce:job:get, cce:job:list).
        about: dict[str, object] = {"action": action} if status == 403 and action else {}
        if not standing.announced:
            standing.announced = True
            event(
                log,
                logging.ERROR,
                "authentication_failed",
                api=self._what,
                status=status,
                error=kind.value,
                **about,
                detail=detail,
                hint=self._hints.get(kind, ""),
                next_try_in=f"{delay:.0f}s",
            )
        else:
            event(
                log,
                logging.DEBUG,
                "authentication_still_failing",
                refusals=standing.failures,
                **about,
            )
