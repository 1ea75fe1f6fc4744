"""Basic auth for the HTTP server: bcrypt hashes, remembered successes, a bounded queue."""

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Literal

import bcrypt
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from exporter.logs import event

log = logging.getLogger(__name__)

_REALM = 'Basic realm="cce-job-exporter", charset="UTF-8"'

# At most this many bcrypt checks run at once,
_CONCURRENT_CHECKS = 2
# and at most this many more wait for their turn; beyond that a request is
# refused at once. A correct password remembered from earlier needs no turn.
WAITING_CHECKS = 16

# What a check of the credentials found: "busy" is a refusal without a check.
Verdict = Literal["ok", "refused", "busy"]


def _credentials(header: str) -> tuple[str, str] | None:
    """Return user and password of an `Authorization: Basic` header, None if it holds none."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = (
            base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        )
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
        return None
    return (user, password) if sep else None


class BasicAuth:
    """Checks `Authorization: Basic` against bcrypt hashes, remembering recent successes.

    bcrypt is slow on purpose, so a scrape every few seconds would cost a core;
    a success is remembered as a keyed hash of the credentials (as the
    exporter-toolkit does). Unknown users cost a bcrypt check too, so timing
    does not tell which users exist. Without users, no request needs credentials.
    `checkpw` is bcrypt's, replaceable in tests.
    """

    def __init__(
        self,
        users: Mapping[str, bytes],
        *,
        checkpw: Callable[[bytes, bytes], bool] = bcrypt.checkpw,
    ) -> None:
        self._users: dict[str, bytes] = {}
        self._key = secrets.token_bytes(32)
        # Keyed hashes of credentials found right, with the user each names.
        self._known: dict[bytes, str] = {}
        self._dummy: bytes | None = None
        self.replace(users)
        self._checkpw = checkpw
        # bcrypt runs in threads; a flood of bad passwords must not take them all
        # (the same threads resolve the API's host names), nor queue up without end.
        self._checks = asyncio.Semaphore(_CONCURRENT_CHECKS)
        self._pending = 0  # checks running or waiting for a turn

    def __repr__(self) -> str:
        return f"BasicAuth(users={sorted(self._users)})"

    @property
    def required(self) -> bool:
        """Tell whether requests need credentials: whether there are users."""
        return bool(self._users)

    def replace(self, users: Mapping[str, bytes]) -> None:
        """Put these users in force; remember passwords only of users whose hash is unchanged."""
        new = dict(users)
        self._known = {
            digest: user
            for digest, user in self._known.items()
            if user in new and new[user] == self._users.get(user)
        }
        self._users = new
        # An unknown user is checked against the costliest real hash (and
        # refused whatever the outcome), so the time taken does not tell
        # whether a user exists.
        self._dummy = max(new.values(), key=lambda hashed: int(hashed[4:6]), default=None)

    async def check(self, header: str) -> bool:
        """Tell whether an `Authorization` header holds a user's right password."""
        return await self.verdict(header) == "ok"

    async def verdict(self, header: str) -> Verdict:
        """Check an `Authorization` header; "busy" when too many checks already wait."""
        credentials = _credentials(header)
        if credentials is None:
            return "refused"
        user, password = credentials
        digest = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        if digest in self._known:
            return "ok"
        if self._pending >= _CONCURRENT_CHECKS + WAITING_CHECKS:
            return "busy"
        hashed = self._users.get(user)
        against = hashed or self._dummy
        if against is None:  # no users at all
            return "refused"
        self._pending += 1
        try:
            async with self._checks:
                try:
                    ok = await asyncio.to_thread(self._checkpw, password.encode(), against)
                except ValueError:  # bcrypt refuses passwords over 72 bytes
                    ok = False
        finally:
            self._pending -= 1
        # The users may have been replaced during the check: only a hash still
        # in force lets the request in.
        if ok and hashed is not None and self._users.get(user) == hashed:
            self._known[digest] = user
            return "ok"
        return "refused"


# Handlers that check a bearer token of their own (the job API's admin token).
# A request with `Authorization: Bearer` can carry no basic-auth credentials, so
# basic auth lets it through to these, and to these only, to be judged there.
_BEARER_HANDLERS: set[Handler] = set()


def bearer_protected(handler: Handler) -> Handler:
    """Mark a handler that checks `Authorization: Bearer` itself."""
    _BEARER_HANDLERS.add(handler)
    return handler


def basic_auth_middleware(auth: BasicAuth) -> Middleware:
    """Answer 401 to every request without a user's right credentials."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        if not auth.required:
            return await handler(request)
        if request.match_info.handler in _BEARER_HANDLERS and header[:7].lower() == "bearer ":
            return await handler(request)
        verdict = await auth.verdict(header)
        if verdict == "ok":
            return await handler(request)
        event(
            log,
            logging.DEBUG,
            "basic_auth_refused",
            path=request.path,
            remote=request.remote,
            reason="busy" if verdict == "busy" else "credentials",
        )
        return web.Response(
            status=401, text="401 Unauthorized\n", headers={"WWW-Authenticate": _REALM}
        )

    return middleware
