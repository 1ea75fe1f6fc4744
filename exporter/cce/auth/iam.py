"""IAM tokens: obtained with a password, renewed before they expire, one request at a time.

`IamAuth` sends the token as `X-Auth-Token`. It asks IAM for a token when it
has none, renews it once three quarters of its life have passed (polls go on
with the old token meanwhile, and keep it when a renewal fails), and drops it
when the CCE API refuses it. Only one token request is ever in flight; the
tasks that waited for it take its outcome instead of sending their own, and
after a failed renewal the next one waits a while. An `AuthGate` backs off
while IAM refuses the password.
"""

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeGuard

import aiohttp
from pydantic import SecretStr
from yarl import URL

from exporter.cce.auth.base import OutgoingRequest
from exporter.cce.auth.gate import AuthGate
from exporter.cce.ratelimit import RateLimiter
from exporter.cce.transport import USER_AGENT, Answer, Transport, error_detail, kind_for_status
from exporter.errors import ApiError, ErrorKind
from exporter.jobs.decode import loads
from exporter.jobs.timestamps import is_zero_time
from exporter.logs import event
from exporter.metrics.cce_exporter import Instruments, TargetInstruments, bound

log = logging.getLogger(__name__)

OPERATION = "iam_token"
# Renew once this share of a token's life has passed: 18 h into a 24 h token.
RENEW_AFTER = 0.75
# A token refused sooner than this after it was obtained is not renewed at once.
FRESH_TOKEN_AGE = 60.0
# A token answer is small without its catalog; more than this is refused.
_MAX_BODY = 1024 * 1024

IAM_HINTS: Mapping[ErrorKind, str] = {
    ErrorKind.UNAUTHORIZED: (
        "IAM refused the password: check iam_domain (the account name), iam_username and "
        "iam_password (or iam_password_file); repeated wrong passwords lock the IAM user"
    ),
    ErrorKind.FORBIDDEN: (
        "IAM refused a token for project_id: check that the IAM user may access that project"
    ),
}
CCE_HINTS: Mapping[ErrorKind, str] = {
    ErrorKind.UNAUTHORIZED: "the CCE API refused a fresh IAM token: check project_id and region",
    ErrorKind.FORBIDDEN: (
        "the IAM user lacks permission: grant cce:job:get (and cce:job:list for discovery, "
        "cce:cluster:list for cluster names) on project_id"
    ),
}


def token_url(iam_endpoint: str) -> URL:
    """Return the URL that issues tokens, without the service catalog in the answer."""
    base = URL(iam_endpoint)
    return base.with_path(f"{base.path.rstrip('/')}/v3/auth/tokens").with_query(nocatalog="true")


def parse_expiry(value: object) -> float:
    """Read an RFC 3339 time such as `2020-01-04T09:05:22.701000Z` as Unix seconds."""
    if not isinstance(value, str):
        msg = f"expected an RFC 3339 time, got {type(value).__name__}"
        raise ValueError(msg)
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        msg = f"{value!r} has no time zone"
        raise ValueError(msg)
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class Token:
    """A token and its life: `expires_at` as IAM says, the local times derived from it."""

    value: SecretStr
    expires_at: float
    obtained_at: float  # local clock
    valid_until: float  # local clock
    renew_at: float  # local clock

    def __repr__(self) -> str:
        return f"Token(value=**********, expires_at={self.expires_at})"


class IamAuth:
    """Authenticates with IAM tokens obtained from a password."""

    hints = CCE_HINTS

    def __init__(
        self,
        session: aiohttp.ClientSession,
        iam_endpoint: str,
        *,
        domain: str,
        username: str,
        password: SecretStr,
        project_id: str,
        instruments: Instruments | TargetInstruments,
        timeout: float,
        clock: Callable[[], float] = time.time,
        gate: AuthGate | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._limiter = limiter
        self._transport = Transport(session, instruments, timeout=timeout, api="IAM: ")
        self._url = token_url(iam_endpoint)
        self._domain = domain
        self._username = username
        self._password = password
        self._project_id = project_id
        self._clock = clock
        self._gate = gate or AuthGate("IAM", IAM_HINTS)
        self._token: Token | None = None
        self._renewing = asyncio.Lock()
        self._retry_renewal_at = 0.0
        # Token requests that came to an end, and how the last one failed (None
        # when it worked): a task that waited for another's request takes its
        # outcome rather than sending one of its own.
        self._attempts = 0
        self._failure: ApiError | None = None
        self._dropped: tuple[str | None, bool] = (None, False)  # last token refused, verdict
        self._expiry = bound(instruments).token_expiry

    def __repr__(self) -> str:
        return f"IamAuth(url={self._url}, user={self._username}, password=**********)"

    @property
    def token(self) -> Token | None:
        """The token in use, if any."""
        return self._token

    async def authenticate(self, request: OutgoingRequest) -> dict[str, str]:
        """Return the token header; obtain or renew the token first when due."""
        token = await self._current()
        return {"X-Auth-Token": token.value.get_secret_value()}

    def refused(self, sent: Mapping[str, str]) -> bool:
        """Drop the token the CCE API refused; say whether a retry should wait for no backoff."""
        token, value = self._token, sent.get("X-Auth-Token")
        if token is None or value != token.value.get_secret_value():
            # A token dropped already: the same verdict again. Any older one: the
            # token in use now is untried, so a retry may go at once.
            return self._dropped[1] if value == self._dropped[0] else True
        self._token = None
        event(log, logging.INFO, "iam_token_refused", hint="a new token is requested")
        # A token that worked for a while was probably revoked: try a new one at
        # once. A fresh token refused too means something else is wrong, and the
        # gate's backoff applies.
        verdict = self._clock() - token.obtained_at >= FRESH_TOKEN_AGE
        self._dropped = (value, verdict)
        return verdict

    async def _current(self) -> Token:
        token = self._token
        now = self._clock()
        if token is not None and now < token.renew_at:
            return token
        if self._usable(token, now):
            return token
        return await self._renew(token)

    def _usable(self, token: Token | None, now: float) -> TypeGuard[Token]:
        """Tell whether `token` still works and a renewal is not to be tried yet."""
        return token is not None and now < token.valid_until and now < self._retry_renewal_at

    async def _renew(self, stale: Token | None) -> Token:
        """Obtain a token in place of `stale`: one request at a time, its outcome shared."""
        attempts = self._attempts
        async with self._renewing:
            if self._token is not None and self._token is not stale:
                return self._token  # another task renewed it while this one waited
            stale = self._token  # None if the CCE API refused it meanwhile
            if self._usable(stale, self._clock()):
                return stale  # another task's renewal failed while this one waited
            failure = self._failure
            if failure is not None and self._attempts != attempts:
                # Another task's request failed while this one waited, and there
                # is no token that works: that failure is this task's too.
                raise _copy(failure)
            try:
                token = await self._request_token()
            except ApiError as exc:
                self._attempts += 1
                self._failure = exc
                now = self._clock()
                if stale is None or now >= stale.valid_until:
                    raise
                # Keep polling with the token that still works; try again later.
                self._retry_renewal_at = now + min(60.0, (stale.valid_until - now) / 4)
                event(log, logging.WARNING, "iam_token_renewal_failed", detail=str(exc))
                return stale
            self._attempts += 1
            self._failure = None
            self._token = token
            self._expiry.set(token.expires_at)
            event(
                log,
                logging.INFO,
                "iam_token_obtained",
                expires_at=datetime.fromtimestamp(token.expires_at, UTC).isoformat(),
            )
            return token

    async def _request_token(self) -> Token:
        ticket = await self._gate.admit()
        status: int | None = None
        detail = ""
        try:
            answer = await self._post()
            status = answer.status
            if status != 201:
                detail = error_detail(answer.body)
                # A 404 here is a wrong iam_endpoint, never a job gone.
                kind = kind_for_status(status, not_found=ErrorKind.INVALID_RESPONSE)
                raise ApiError(kind, f"IAM: {detail}", status=status)
            return self._read_token(answer.body, answer.headers.get("X-Subject-Token"))
        finally:
            ticket.settle(status, detail)

    def _request_body(self) -> bytes:
        user = {
            "domain": {"name": self._domain},
            "name": self._username,
            "password": self._password.get_secret_value(),
        }
        auth = {
            "identity": {"methods": ["password"], "password": {"user": user}},
            "scope": {"project": {"id": self._project_id}},
        }
        return json.dumps({"auth": auth}).encode()

    async def _post(self) -> Answer:
        if self._limiter is not None:  # the one rate limit covers IAM requests too
            await self._limiter.acquire()
        headers = {"Content-Type": "application/json;charset=utf8", "User-Agent": USER_AGENT}
        return await self._transport.send(
            "POST",
            self._url,
            operation=OPERATION,
            headers=headers,
            data=self._request_body(),
            max_bytes=_MAX_BODY,
        )

    def _read_token(self, body: bytes, subject: str | None) -> Token:
        if not subject:
            msg = "IAM: answer 201 without an X-Subject-Token header"
            raise ApiError(ErrorKind.INVALID_RESPONSE, msg, status=201)
        try:
            data = loads(body)["token"]
            expires_at = _token_time(data, "expires_at")
            issued_at = _token_time(data, "issued_at")
        except (ValueError, RecursionError, KeyError, TypeError) as exc:
            msg = f"IAM: token answer without a readable token.expires_at ({exc})"
            raise ApiError(ErrorKind.INVALID_RESPONSE, msg, status=201) from None
        if expires_at is None:
            msg = "IAM: token answer without token.expires_at (absent or Go's zero time)"
            raise ApiError(ErrorKind.INVALID_RESPONSE, msg, status=201)
        now = self._clock()
        # The token's life as IAM counts it, carried over to the local clock so
        # that a skewed clock here neither renews too late nor all the time.
        life = expires_at - (issued_at if issued_at is not None else now)
        if life <= 0:
            msg = "IAM: the token answered has already expired (check this host's clock)"
            raise ApiError(ErrorKind.INVALID_RESPONSE, msg, status=201)
        return Token(SecretStr(subject), expires_at, now, now + life, now + life * RENEW_AFTER)


def _token_time(token: object, key: str) -> float | None:
    """Read one time of the token answer; None when absent or Go's zero time (never set)."""
    if not isinstance(token, dict):
        msg = f"expected the token object, got {type(token).__name__}"
        raise TypeError(msg)
    value = token.get(key)
    if value is None or (isinstance(value, str) and is_zero_time(value)):
        return None
    return parse_expiry(value)


def _copy(exc: ApiError) -> ApiError:
    """Return the same failure anew, to raise in another task."""
    return ApiError(
        exc.kind,
        exc.detail,
        status=exc.status,
        request_id=exc.request_id,
        retry_after=exc.retry_after,
    )
