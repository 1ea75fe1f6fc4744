"""Basic auth for the HTTP server: bcrypt hashes, remembered successes, a bounded queue."""

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Literal

import bcrypt
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from exporter.logs import Summary

log = logging.getLogger(__name__)

_REALM = 'Basic realm="cce-job-exporter", charset="UTF-8"'

# At most this many bcrypt checks run at once,
_CONCURRENT_CHECKS = 2
# and at most this many more wait for their turn; beyond that a request is
# refused at once. A correct password remembered from earlier needs no turn.
WAITING_CHECKS = 16
# One client (an IPv4 address, an IPv6 /64) may have at most this many checks
# running or waiting, so that its flood leaves room in the queue for others.
CHECKS_PER_CLIENT = 4

# What a check of the credentials found: "busy" is a refusal without a check.
Verdict = Literal["ok", "refused", "busy"]


def _client_key(address: str) -> str:
    """Return whose share of the queue a client address takes: an IPv6 address's /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return address


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
        self._per_client: dict[str, int] = {}  # the same, by client

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

    async def verdict(self, header: str, client: str = "") -> Verdict:
        """Check an `Authorization` header; "busy" when too many checks already wait.

        `client` is the address the request came from: each has a share of the
        queue (none given: no share, the whole queue).
        """
        credentials = _credentials(header)
        if credentials is None:
            return "refused"
        user, password = credentials
        digest = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        if digest in self._known:
            return "ok"
        key = _client_key(client)
        if self._pending >= _CONCURRENT_CHECKS + WAITING_CHECKS or (
            key and self._per_client.get(key, 0) >= CHECKS_PER_CLIENT
        ):
            return "busy"
        hashed = self._users.get(user)
        against = hashed or self._dummy
        if against is None:  # no users at all
            return "refused"
        self._pending += 1
        self._per_client[key] = self._per_client.get(key, 0) + 1
        try:
            async with self._checks:
                try:
                    ok = await asyncio.to_thread(self._checkpw, password.encode(), against)
                except ValueError:  # bcrypt refuses passwords over 72 bytes
                    ok = False
        finally:
            self._pending -= 1
            left = self._per_client.pop(key) - 1
            if left:
                self._per_client[key] = left
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
    # Anyone can send wrong credentials: refusals are counted, one line a minute.
    refusals = Summary(log, logging.DEBUG, "basic_auth_refused")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        if not auth.required:
            return await handler(request)
        if request.match_info.handler in _BEARER_HANDLERS and header[:7].lower() == "bearer ":
            return await handler(request)
        verdict = await auth.verdict(header, request.remote or "")
        if verdict == "ok":
            return await handler(request)
        refusals.add(reason="busy" if verdict == "busy" else "credentials")
        return web.Response(
            status=401, text="401 Unauthorized\n", headers={"WWW-Authenticate": _REALM}
        )

    return middleware
