"""The web config in force while the server runs, re-read when its files change.

The file and the files it names are followed (`LiveWebConfig`): a rotated
certificate, a new client CA or a changed list of users is put in force
without a restart.
"""

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from exporter.filewatch import SettledFiles, Signature, file_stat, signature
from exporter.logs import crash, event
from exporter.server.webconfig.basic_auth import BasicAuth, basic_auth_middleware
from exporter.server.webconfig.format import (
    TlsFiles,
    WebConfig,
    WebConfigError,
    build,
    named_files,
    read_file,
)

log = logging.getLogger(__name__)

# How often the web config's files are looked at; they are read only on change.
CHECK_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class _Reading:
    """One reading of the web config: the config or the problem, and its files as read."""

    files: tuple[Path, ...]
    signature: Signature  # of `files`, each taken before it was read
    config: WebConfig | None
    problem: str = ""


def _reading(path: Path, also: Sequence[Path] = ()) -> _Reading:
    """Load the web config, noting its files' state before reading; `also` are followed too."""
    first = file_stat(path)
    top: dict[str, Any] | None = None
    config, problem = None, ""
    try:
        top = read_file(path)
    except WebConfigError as exc:
        problem = str(exc)
    named = named_files(path, top) if top is not None else []
    files = tuple(dict.fromkeys([path, *named, *also]))
    before = (first, *signature(files[1:]))
    if top is not None:
        try:
            config = build(path, top)
        except WebConfigError as exc:
            problem = str(exc)
    return _Reading(files, before, config, problem)


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
        # Files that changed while read are read again at the first check.
        self._files = SettledFiles([path])
        self._files.read(reading.signature, reading.files)
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

    async def check(self, *, force: bool = False) -> bool:
        """Reload the config if its files changed and settled; return whether it was reloaded.

        `force` reads them at once, changed or not (SIGHUP).
        """
        if force:
            self._files.forget()
        if self._files.due(at_once=force) is None:
            return False
        # Reading checks each bcrypt hash at its full cost: not on the event loop.
        reading = await asyncio.to_thread(_reading, self.path, self.config.files())
        if not self._files.read(reading.signature, reading.files):
            return False
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
            self._files.forget()
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
