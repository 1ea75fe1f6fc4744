"""The server's connections, bounded: a deadline for each request head, a cap, write timeouts.

aiohttp waits without end for a request head, and keeps a connection however
long its client takes to read, so a few hundred clients that never finish
would hold every file descriptor. `ConnectionGuard` stands between asyncio's
server and aiohttp's protocol: it closes a connection that has not sent a
whole request head within `head_timeout` of connecting or of its previous
response, closes one that has not taken any of its response for
`write_timeout`, and holds at most `max_connections` open, closing the
oldest idle one for a newcomer (or, with none idle, the newcomer). The
listening sockets are its own, so that an accept error (out of file
descriptors) ends asyncio's accept burst and is counted in one log line a
minute, not logged in a tight loop.
"""

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any, cast

from aiohttp import web
from aiohttp.typedefs import Handler

from exporter.logs import Summary

log = logging.getLogger(__name__)

# Seconds a connection may take to send a whole request head, from connecting
# (or from the end of its TLS handshake, which has as long) or from the end of
# its previous response.
HEAD_TIMEOUT = 10.0
# Seconds a response may wait for its client to take any of it.
WRITE_TIMEOUT = 10.0
# Connections open at once: far below the usual limit of 1,024 open files.
MAX_CONNECTIONS = 256

_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_ERROR = "socket.accept() out of system resource"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection, and all of them, may hold."""

    max_connections: int = MAX_CONNECTIONS
    head_timeout: float = HEAD_TIMEOUT
    write_timeout: float = WRITE_TIMEOUT


class _Connection(asyncio.Protocol):
    """One client connection: aiohttp's protocol behind it, and its deadlines."""

    def __init__(self, guard: "ConnectionGuard") -> None:
        self._guard = guard
        self.inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the connection, or refuse it at the cap."""
        stream = cast(asyncio.Transport, transport)  # a stream server's
        if not self._guard.admit(self):
            stream.abort()
            return
        self._transport = stream
        self.inner = self._guard.protocol_for(self)
        self.inner.connection_made(stream)
        self.idle()

    def data_received(self, data: bytes) -> None:
        """Hand the bytes to aiohttp."""
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        """Tell aiohttp the client will send no more."""
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        """Give a client that takes no more for now `write_timeout` to take some."""
        if self.inner is not None:
            self.inner.pause_writing()
            self._write_timer = self._guard.later(self._guard.limits.write_timeout, self, "write")

    def resume_writing(self) -> None:
        """Stop the write deadline: the client took some of the response."""
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection, and tell aiohttp."""
        self._stop_timers()
        self._guard.forget(self)
        inner, self.inner, self._transport = self.inner, None, None
        if inner is not None:
            inner.connection_lost(exc)

    def busy(self) -> None:
        """Stop the head deadline: a whole head came, and its response is under way."""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._guard.mark_busy(self)

    def idle(self) -> None:
        """Wait for a request head, for at most `head_timeout`."""
        if self._transport is None:
            return
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self._guard.later(self._guard.limits.head_timeout, self, "head")
        self._guard.mark_idle(self)

    def drop(self, reason: str) -> None:
        """Close the connection at once, whatever it still had to send."""
        if self._transport is not None:
            self._guard.dropped.add(reason=reason)
            self._transport.abort()
            self._stop_timers()

    def _stop_timers(self) -> None:
        for timer in (self._head_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._write_timer = None


class ConnectionGuard:
    """The protocol factory for asyncio's server: aiohttp's, with every connection bounded.

    `middleware` must be the application's first, so that it sees each
    request (a whole head) before anything may wait.
    """

    def __init__(self, limits: Limits, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.limits = limits
        self._loop = loop or asyncio.get_running_loop()
        self._server: Callable[[], asyncio.Protocol] | None = None
        self._open: dict[_Connection, None] = {}
        self._idle: dict[_Connection, None] = {}  # oldest idle first
        self._by_protocol: dict[asyncio.BaseProtocol, _Connection] = {}
        self.dropped = Summary(log, logging.WARNING, "http_connections_dropped")
        self.accept_errors = Summary(log, logging.ERROR, "http_accept_failed")

    def __call__(self) -> asyncio.Protocol:
        """Make the protocol of a new connection."""
        return _Connection(self)

    def serve(self, server: Callable[[], asyncio.Protocol]) -> None:
        """Put aiohttp's protocol factory (the runner's `web.Server`) behind the guard."""
        self._server = server

    def __len__(self) -> int:
        """Return the number of connections open."""
        return len(self._open)

    def admit(self, connection: _Connection) -> bool:
        """Count a new connection in, closing the oldest idle one at the cap; False: refused."""
        if len(self._open) >= self.limits.max_connections:
            if not self._idle:
                self.dropped.add(reason="max_connections_busy")
                return False
            oldest = next(iter(self._idle))
            self.forget(oldest)
            oldest.drop("max_connections")
        self._open[connection] = None
        return True

    def protocol_for(self, connection: _Connection) -> asyncio.Protocol:
        """Make aiohttp's protocol for an admitted connection."""
        if self._server is None:
            msg = "ConnectionGuard.serve() was not called"
            raise RuntimeError(msg)
        inner = self._server()
        self._by_protocol[inner] = connection
        return inner

    def forget(self, connection: _Connection) -> None:
        """Stop counting a connection."""
        self._open.pop(connection, None)
        self._idle.pop(connection, None)
        if connection.inner is not None:
            self._by_protocol.pop(connection.inner, None)

    def mark_busy(self, connection: _Connection) -> None:
        """Note that a connection is handling a request."""
        self._idle.pop(connection, None)

    def mark_idle(self, connection: _Connection) -> None:
        """Note that a connection waits for a request head, as the newest idle one."""
        if connection in self._open:
            self._idle.pop(connection, None)
            self._idle[connection] = None

    def later(self, delay: float, connection: _Connection, deadline: str) -> asyncio.TimerHandle:
        """Drop `connection` after `delay` seconds, for missing the deadline named."""
        return self._loop.call_later(delay, connection.drop, f"{deadline}_timeout")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Mark the request's connection busy until its response has been sent."""
        connection = self._by_protocol.get(request.protocol)
        task = asyncio.current_task()
        if connection is not None and task is not None:
            connection.busy()
            # aiohttp runs each request in a task of its own, which ends once
            # the response has been written.
            task.add_done_callback(lambda _: connection.idle())
        return await handler(request)

    def exception_handler(
        self, previous: Callable[[dict[str, Any]], object], sockets: list[socket.socket]
    ) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
        """Return a loop exception handler: accept errors on `sockets` counted, others passed on."""
        addresses = {sock.getsockname() for sock in sockets}

        def ours(sock: socket.socket | None) -> bool:
            try:
                return sock is not None and sock.getsockname() in addresses
            except OSError:  # closed meanwhile
                return False

        def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            if (
                context.get("message") == _ACCEPT_ERROR
                and isinstance(exc, OSError)
                and ours(context.get("socket"))
            ):
                self.accept_errors.add(error=errno.errorcode.get(exc.errno or 0, str(exc.errno)))
                return
            previous(context)

        return handler


class _ListeningSocket(socket.socket):
    """A listening socket whose accept, after an accept error, ends asyncio's accept burst.

    asyncio (3.11) goes on accepting after an error like EMFILE, and schedules
    one more retry for each error of the burst: the retries multiply, each
    one logged. Saying "nothing to accept" right after an error ends the burst
    at its first error, with one retry a second.
    """

    _resting = False

    def accept(self) -> tuple[socket.socket, Any]:
        """Accept a connection, or end the burst that just failed."""
        if self._resting:
            self._resting = False
            raise BlockingIOError(errno.EAGAIN, "resting after an accept error")
        try:
            return super().accept()
        except OSError as exc:
            self._resting = exc.errno in _RESOURCE_ERRORS
            raise


async def _listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bind a socket on every address `host` names, as asyncio's own server would."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            listening = _ListeningSocket(family, kind, proto)
            sockets.append(listening)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listening.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listening.bind(address)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class GuardedSite(web.BaseSite):
    """aiohttp's TCP site, serving through a `ConnectionGuard` on sockets of its own."""

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        host: str,
        port: int,
        *,
        ssl_context: SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._guard = guard
        self._host = host
        self._port = port
        self._servers: list[asyncio.Server] = []
        self._restore: Callable[[], None] | None = None

    @property
    def name(self) -> str:
        """Return the site's URL."""
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        """Listen; an OSError (the address in use, say) leaves nothing open."""
        await super().start()
        server = self._runner.server
        if server is None:
            msg = "runner.setup() first"
            raise RuntimeError(msg)
        self._guard.serve(server)
        loop = asyncio.get_running_loop()
        sockets = await _listening_sockets(self._host, self._port)
        try:
            for sock in sockets:
                self._servers.append(
                    await loop.create_server(
                        self._guard,
                        sock=sock,
                        ssl=self._ssl_context,
                        backlog=self._backlog,
                        ssl_handshake_timeout=self._guard.limits.head_timeout
                        if self._ssl_context
                        else None,
                    )
                )
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        self._server = self._servers[0]
        previous = loop.get_exception_handler()
        handler = self._guard.exception_handler(
            (lambda context: previous(loop, context))
            if previous is not None
            else loop.default_exception_handler,
            sockets,
        )
        loop.set_exception_handler(handler)

        def restore() -> None:
            if loop.get_exception_handler() is handler:
                loop.set_exception_handler(previous)

        self._restore = restore

    @property
    def sockets(self) -> list[socket.socket]:
        """Return the listening sockets."""
        return [sock for server in self._servers for sock in server.sockets]

    async def stop(self) -> None:
        """Stop listening."""
        for server in self._servers[1:]:
            server.close()
        await super().stop()
        if self._restore is not None:
            self._restore()
            self._restore = None
