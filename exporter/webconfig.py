"""TLS and basic auth for the HTTP server, from a Prometheus exporter-toolkit `web-config.yml`.

The file format is the one every Prometheus exporter reads, so operators
reuse what they have:

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # mutual TLS
      client_ca_file: clients-ca.crt
      min_version: TLS12
    basic_auth_users:
      prometheus: $2y$10$...                          # bcrypt hash

Options that would restrict clients further but cannot be honoured here are
refused rather than ignored. Relative paths are relative to the file.
"""

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import bcrypt
import yaml
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from exporter.logs import event

log = logging.getLogger(__name__)

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Client-auth types that accept certificates without verifying them: Python's
# ssl module cannot ask for a certificate without verifying it.
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_OLD_VERSIONS = ("TLS10", "TLS11")
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version"}
_TLS_KEYS |= {"max_version", "prefer_server_cipher_suites"}
# Options of the format that restrict who may connect: refused, never ignored.
_UNSUPPORTED = {"cipher_suites", "curve_preferences", "client_allowed_sans", "cert", "key"}
_TOP_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}
_REALM = 'Basic realm="cce-job-exporter", charset="UTF-8"'


class WebConfigError(ValueError):
    """The web config file cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class WebConfig:
    """What the server needs: a TLS context (or none) and the basic-auth users (or none)."""

    path: Path
    ssl_context: ssl.SSLContext | None
    users: Mapping[str, bytes] = field(default_factory=dict)
    client_auth: str = "NoClientCert"

    def __repr__(self) -> str:
        return (
            f"WebConfig(path={self.path}, tls={self.ssl_context is not None}, "
            f"client_auth={self.client_auth}, users={sorted(self.users)})"
        )


def _kind(value: object) -> str:
    """Name the YAML type of a value, for messages that must not quote it."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else type(value).__name__


def _mapping(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        msg = f"{where} must be a mapping, not {_kind(value)}"
        raise WebConfigError(msg)
    for key in value:
        if not isinstance(key, str):
            msg = f"{where}: the key {key!r} is not a string"
            raise WebConfigError(msg)
    return value


def _text(section: Mapping[str, Any], key: str, where: str) -> str | None:
    """Return a string option, None when absent or empty."""
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        msg = f"{where}.{key} must be a string, not {_kind(value)}"
        raise WebConfigError(msg)
    return value


def _flag(section: Mapping[str, Any], key: str, where: str) -> None:
    """Check that a true/false option, when given, is one."""
    value = section.get(key)
    if value is not None and not isinstance(value, bool):
        msg = f"{where}.{key} must be true or false, not {_kind(value)}"
        raise WebConfigError(msg)


def _file(base: Path, tls: Mapping[str, Any], key: str) -> Path | None:
    value = _text(tls, key, "tls_server_config")
    if value is None:
        return None
    path = base / value
    if not path.is_file():
        msg = f"tls_server_config.{key}: {path} is not a readable file"
        raise WebConfigError(msg)
    return path


def _version(tls: Mapping[str, Any], key: str) -> ssl.TLSVersion | None:
    value = _text(tls, key, "tls_server_config")
    if value is None:
        return None
    if value in _OLD_VERSIONS:
        msg = f"tls_server_config.{key}: {value} is refused; TLS 1.2 is the oldest allowed"
        raise WebConfigError(msg)
    if value not in _VERSIONS:
        msg = f"tls_server_config.{key}: {value!r} is not one of {', '.join(_VERSIONS)}"
        raise WebConfigError(msg)
    return _VERSIONS[value]


def _tls_context(base: Path, tls: Mapping[str, Any]) -> tuple[ssl.SSLContext, str]:
    for option in sorted(tls.keys() - _TLS_KEYS):
        why = "not supported by this exporter" if option in _UNSUPPORTED else "unknown option"
        msg = f"tls_server_config.{option}: {why}; remove it"
        raise WebConfigError(msg)
    cert, key = _file(base, tls, "cert_file"), _file(base, tls, "key_file")
    if cert is None or key is None:
        msg = "tls_server_config needs both cert_file and key_file"
        raise WebConfigError(msg)
    client_ca = _file(base, tls, "client_ca_file")
    _flag(tls, "prefer_server_cipher_suites", "tls_server_config")
    client_auth = _text(tls, "client_auth_type", "tls_server_config") or (
        "RequireAndVerifyClientCert" if client_ca else "NoClientCert"
    )
    if client_auth in _UNVERIFIED_CLIENT_AUTH:
        msg = (
            f"tls_server_config.client_auth_type: {client_auth} (client certificates not "
            "verified) is not supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert"
        )
        raise WebConfigError(msg)
    if client_auth not in _CLIENT_AUTH:
        msg = f"tls_server_config.client_auth_type: {client_auth!r} is not one of " + ", ".join(
            [*_CLIENT_AUTH, *_UNVERIFIED_CLIENT_AUTH]
        )
        raise WebConfigError(msg)
    if _CLIENT_AUTH[client_auth] != ssl.CERT_NONE and client_ca is None:
        msg = f"tls_server_config: client_auth_type {client_auth} needs client_ca_file"
        raise WebConfigError(msg)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = _version(tls, "min_version") or ssl.TLSVersion.TLSv1_2
    maximum = _version(tls, "max_version")
    if maximum is not None:
        if maximum < context.minimum_version:
            msg = "tls_server_config: max_version is older than min_version"
            raise WebConfigError(msg)
        context.maximum_version = maximum
    try:
        context.load_cert_chain(cert, key)
        if client_ca is not None:
            context.load_verify_locations(cafile=str(client_ca))
    except (ssl.SSLError, OSError, ValueError) as exc:
        msg = f"tls_server_config: cannot load the certificate, key or client CA: {exc}"
        raise WebConfigError(msg) from None
    context.verify_mode = _CLIENT_AUTH[client_auth]
    return context, client_auth


def _users(value: object) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    for name, hashed in _mapping(value, "basic_auth_users").items():
        if not name or ":" in name:
            msg = f"basic_auth_users: {name!r} is not a user name (non-empty, no ':')"
            raise WebConfigError(msg)
        # Never echo the hash: it is a secret too (it can be attacked offline).
        if not isinstance(hashed, str):
            msg = f"basic_auth_users.{name} must be a string (a bcrypt hash), not {_kind(hashed)}"
            raise WebConfigError(msg)
        if not _is_bcrypt(hashed.encode()):
            msg = f"basic_auth_users.{name}: the value is not a bcrypt hash ($2a$, $2b$ or $2y$)"
            raise WebConfigError(msg)
        users[name] = hashed.encode()
    return users


def _is_bcrypt(hashed: bytes) -> bool:
    if len(hashed) != 60 or hashed[:4] not in (b"$2a$", b"$2b$", b"$2y$"):
        return False
    try:
        bcrypt.checkpw(b"", hashed)
    except ValueError:
        return False
    return True


def load_web_config(path: Path) -> WebConfig:
    """Read and check the file; raise WebConfigError saying what is wrong."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror or exc}"
        raise WebConfigError(msg) from None
    except yaml.YAMLError as exc:
        # Name the place only: PyYAML's own message quotes the file, hashes and all.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        msg = f"{path} is not valid YAML{where}: {getattr(exc, 'problem', None) or 'syntax error'}"
        raise WebConfigError(msg) from None
    except UnicodeDecodeError:
        msg = f"{path} is not UTF-8 text"
        raise WebConfigError(msg) from None
    top = _mapping(data, str(path))
    for key in sorted(top.keys() - _TOP_KEYS):
        msg = f"{key}: unknown option of a web config file"
        raise WebConfigError(msg)
    http = _mapping(top.get("http_server_config"), "http_server_config")
    for key in sorted(http):
        if key != "http2":
            msg = f"http_server_config.{key}: not supported by this exporter; remove it"
            raise WebConfigError(msg)
    _flag(http, "http2", "http_server_config")
    tls = _mapping(top.get("tls_server_config"), "tls_server_config")
    context, client_auth = _tls_context(path.parent, tls) if tls else (None, "NoClientCert")
    return WebConfig(path, context, _users(top.get("basic_auth_users")), client_auth)


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
    does not tell which users exist. `checkpw` is bcrypt's, replaceable in tests.
    """

    def __init__(
        self,
        users: Mapping[str, bytes],
        *,
        checkpw: Callable[[bytes, bytes], bool] = bcrypt.checkpw,
    ) -> None:
        self._users = dict(users)
        self._key = secrets.token_bytes(32)
        self._known: set[bytes] = set()
        # An unknown user is checked against a hash as costly as the costliest
        # real one, so that the time taken does not tell whether a user exists.
        rounds = max((int(hashed[4:6]) for hashed in self._users.values()), default=10)
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=rounds))
        self._checkpw = checkpw
        # bcrypt runs in threads; a flood of bad passwords must not take them all
        # (the same threads resolve the API's host names), nor queue up without end.
        self._checks = asyncio.Semaphore(_CONCURRENT_CHECKS)
        self._pending = 0  # checks running or waiting for a turn

    def __repr__(self) -> str:
        return f"BasicAuth(users={sorted(self._users)})"

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
        self._pending += 1
        try:
            async with self._checks:
                try:
                    ok = await asyncio.to_thread(
                        self._checkpw, password.encode(), hashed or self._dummy
                    )
                except ValueError:  # bcrypt refuses passwords over 72 bytes
                    ok = False
        finally:
            self._pending -= 1
        if ok and hashed is not None:
            self._known.add(digest)
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


def secure(app: web.Application, config: WebConfig | None) -> ssl.SSLContext | None:
    """Put basic auth in front of every route of `app`; return the server's TLS context."""
    if config is None:
        return None
    if config.users:
        app.middlewares.insert(0, basic_auth_middleware(BasicAuth(config.users)))
    event(
        log,
        logging.INFO,
        "web_config_loaded",
        path=str(config.path),
        tls=config.ssl_context is not None,
        client_auth=config.client_auth,
        basic_auth_users=len(config.users),
    )
    return config.ssl_context
