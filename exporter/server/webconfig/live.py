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

The file and the files it names are watched while the server runs
(`LiveWebConfig`): a rotated certificate, a new client CA or a changed list
of users is put in force without a restart.
"""

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import secrets
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import bcrypt
import yaml
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from exporter.logs import crash, event

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
class TlsFiles:
    """The files a TLS context was loaded from."""

    cert: Path
    key: Path
    client_ca: Path | None


@dataclass(frozen=True, slots=True)
class WebConfig:
    """What the server needs: a TLS context (or none) and the basic-auth users (or none)."""

    path: Path
    ssl_context: ssl.SSLContext | None
    users: Mapping[str, bytes] = field(default_factory=dict)
    client_auth: str = "NoClientCert"
    tls_files: TlsFiles | None = None

    def files(self) -> tuple[Path, ...]:
        """Return the web config file and the files it names."""
        if self.tls_files is None:
            return (self.path,)
        tls = self.tls_files
        return (self.path, tls.cert, tls.key, *([tls.client_ca] if tls.client_ca else []))

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


def _tls_context(base: Path, tls: Mapping[str, Any]) -> tuple[ssl.SSLContext, str, TlsFiles]:
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
    return context, client_auth, TlsFiles(cert, key, client_ca)


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
    return _build(path, _read(path))


def _read(path: Path) -> dict[str, Any]:
    """Parse the file into its top-level mapping."""
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
    except RecursionError:
        msg = f"{path} is nested too deeply to be a web config"
        raise WebConfigError(msg) from None
    return _mapping(data, str(path))


def _build(path: Path, top: Mapping[str, Any]) -> WebConfig:
    """Check the options of a parsed file and load the files they name."""
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
    users = _users(top.get("basic_auth_users"))
    if not tls:
        return WebConfig(path, None, users)
    context, client_auth, files = _tls_context(path.parent, tls)
    return WebConfig(path, context, users, client_auth, files)


def _named_files(path: Path, top: Mapping[str, Any]) -> list[Path]:
    """Return the files a parsed config names, as far as it names them properly."""
    tls = top.get("tls_server_config")
    if not isinstance(tls, dict):
        return []
    names = (tls.get(key) for key in ("cert_file", "key_file", "client_ca_file"))
    return [path.parent / name for name in names if isinstance(name, str) and name]


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


# How often the web config's files are looked at; they are read only on change.
CHECK_SECONDS = 5.0

# A file's device, inode, modification time and size; None if it cannot be looked at.
FileStat = tuple[int, int, int, int] | None
Signature = tuple[FileStat, ...]


def _stat(path: Path) -> FileStat:
    try:
        # stat() follows symbolic links: a Kubernetes Secret volume swaps one.
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a path with a NUL in it
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _signature(files: Sequence[Path]) -> Signature:
    return tuple(_stat(path) for path in files)


@dataclass(frozen=True, slots=True)
class _Reading:
    """One reading of the web config: the config or the problem, and its files as read."""

    files: tuple[Path, ...]
    signature: Signature  # of `files`, each taken before it was read
    settled: bool  # whether no file changed while they were read
    config: WebConfig | None
    problem: str = ""


def _reading(path: Path, also: Sequence[Path] = ()) -> _Reading:
    """Load the web config, noting its files' state before and after; `also` are watched too."""
    first = _stat(path)
    top: dict[str, Any] | None = None
    config, problem = None, ""
    try:
        top = _read(path)
    except WebConfigError as exc:
        problem = str(exc)
    named = _named_files(path, top) if top is not None else []
    files = tuple(dict.fromkeys([path, *named, *also]))
    signature = (first, *_signature(files[1:]))
    if top is not None:
        try:
            config = _build(path, top)
        except WebConfigError as exc:
            problem = str(exc)
    return _Reading(files, signature, _signature(files) == signature, config, problem)


class LiveWebConfig:
    """The web config in force: loaded at start, re-read when its files change.

    The file, and the certificate, key and client CA it names, are looked at
    every `check_seconds`. A change is acted on at the first check that finds
    the files as the check before found them (so a certificate written before
    its key is not taken alone), and only if they did not change while read.
    A new config takes effect whole or not at all: its certificate, key and
    client CA are loaded into the very SSLContext the server holds (new
    connections use them), and its users replace the old ones. A config that
    cannot be used is logged once, and the one in force stays. Whether TLS is
    on cannot change without a restart.
    """

    def __init__(
        self,
        path: Path,
        *,
        check_seconds: float = CHECK_SECONDS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        reading = _reading(path)
        if reading.config is None:
            raise WebConfigError(reading.problem)
        self.path = path
        self.config = reading.config
        # The context the server is given, for its whole life.
        self.ssl_context = reading.config.ssl_context
        self.auth = BasicAuth(reading.config.users)
        self._check_seconds = check_seconds
        self._sleep = sleep
        self._files = reading.files
        # Files that changed while read are read again at the first check.
        self._read_as: Signature | None = reading.signature if reading.settled else None
        self._seen = reading.signature
        self._problem = ""

    def __repr__(self) -> str:
        return f"LiveWebConfig({self.config!r})"

    async def run(self) -> None:
        """Check the files for changes for ever; cancel to stop."""
        while True:
            await self._sleep(self._check_seconds)
            try:
                await self.check()
            except Exception as exc:  # a bug: the config in force stays, serving goes on
                crash(log, "web_config_reload_failed", exc, path=str(self.path))

    async def check(self) -> bool:
        """Reload the config if its files changed and settled; return whether it was reloaded."""
        signature = _signature(self._files)
        previous, self._seen = self._seen, signature
        if signature == self._read_as or signature != previous:
            return False
        # Reading checks each bcrypt hash at its full cost: not on the event loop.
        reading = await asyncio.to_thread(_reading, self.path, self.config.files())
        if not reading.settled:
            return False  # written while read: read again once it settles
        self._files, self._read_as, self._seen = reading.files, reading.signature, reading.signature
        try:
            if reading.config is None:
                raise WebConfigError(reading.problem)
            self._put_in_force(reading.config)
        except WebConfigError as exc:
            if str(exc) != self._problem:
                event(
                    log,
                    logging.WARNING,
                    "web_config_reload_failed",
                    path=str(self.path),
                    problem=str(exc),
                    kept="the config in force",
                )
            self._problem = str(exc)
            return False
        self._problem = ""
        _log_in_force("web_config_reloaded", self.path, reading.config)
        return True

    def _put_in_force(self, new: WebConfig) -> None:
        live = self.ssl_context
        if (live is None) != (new.ssl_context is None):
            msg = f"tls_server_config: turning TLS {'off' if live else 'on'} takes a restart"
            raise WebConfigError(msg)
        if live is not None and new.ssl_context is not None and new.tls_files is not None:
            self._reload_tls(live, new.ssl_context, new.tls_files)
        self.auth.replace(new.users)
        self.config = new

    def _reload_tls(self, live: ssl.SSLContext, fresh: ssl.SSLContext, files: TlsFiles) -> None:
        """Load into the server's context what was just loaded into a fresh one."""
        kept = set(live.get_ca_certs(binary_form=True)) - set(fresh.get_ca_certs(binary_form=True))
        try:
            live.load_cert_chain(files.cert, files.key)
            if files.client_ca is not None:
                live.load_verify_locations(cafile=str(files.client_ca))
        except (ssl.SSLError, OSError, ValueError) as exc:
            # They loaded a moment ago, so they changed since: the context may
            # now hold the new certificate without its key. Read them again at
            # the next check.
            self._read_as = None
            msg = f"tls_server_config: cannot load the certificate, key or client CA: {exc}"
            raise WebConfigError(msg) from None
        live.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED  # lets any minimum be set
        live.minimum_version = fresh.minimum_version
        live.maximum_version = fresh.maximum_version
        live.verify_mode = fresh.verify_mode
        if kept and live.verify_mode != ssl.CERT_NONE:
            # A context can be given certificates to trust, never told to drop one.
            event(
                log,
                logging.WARNING,
                "web_config_client_ca_kept",
                path=str(self.path),
                certificates=len(kept),
                hint="CA certificates removed from client_ca_file stay trusted until a restart",
            )


def secure(app: web.Application, web_config: LiveWebConfig | None) -> ssl.SSLContext | None:
    """Put basic auth in front of every route of `app`; return the server's TLS context."""
    if web_config is None:
        return None
    # Always in place: users may be added to a file that has none yet.
    app.middlewares.insert(0, basic_auth_middleware(web_config.auth))
    _log_in_force("web_config_loaded", web_config.path, web_config.config)
    return web_config.ssl_context


def _log_in_force(name: str, path: Path, config: WebConfig) -> None:
    """Log the event `name` of a web config that took effect: what it turns on, no secret."""
    event(
        log,
        logging.INFO,
        name,
        path=str(path),
        tls=config.ssl_context is not None,
        client_auth=config.client_auth,
        basic_auth_users=len(config.users),
    )
