"""A real forward proxy on loopback that records what passes through it.

It takes requests in absolute form (`GET http://host:port/path HTTP/1.1`, the
way to an `http://` endpoint) and sends each on to its origin with
`Connection: close`; and CONNECT (the way to an `https://` endpoint), for
which it opens a tunnel and passes its bytes unread. Each request is recorded
with its Proxy-Authorization header. `hosts` maps names to the address the
proxy reaches them at, as a corporate proxy resolves names its clients
cannot: a request for such a name can only have come through the proxy.
`refuse` answers every request with that status instead.
"""

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

_HEAD_LIMIT = 64 * 1024
# Hop-by-hop headers: the proxy's business, not sent on.
_HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-authorization", "proxy-connection"})


@dataclass(frozen=True, slots=True)
class Passed:
    """One request the proxy was asked to pass: its method, its target and its credentials."""

    method: str
    target: str  # the absolute URL, or the host:port of a CONNECT
    proxy_authorization: str | None


@dataclass
class ForwardProxy:
    """A forward proxy on 127.0.0.1; start it, point HTTP(S)_PROXY at `url`, close it."""

    hosts: dict[str, str] = field(default_factory=dict)
    refuse: int | None = None
    passed: list[Passed] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def port(self) -> int:
        """The port it listens on."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, credentials: str = "") -> str:
        """The proxy's URL, with `user:password` credentials when given."""
        return f"http://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_HEAD_LIMIT)

    async def close(self) -> None:
        """Stop listening and drop every connection, tunnels included."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away, or sent no request: nothing to pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines if line]
        credentials = next((v for k, v in headers if k.lower() == "proxy-authorization"), None)
        self.passed.append(Passed(method, target, credentials))
        if self.refuse is not None:
            await _answer(writer, self.refuse, "Refused by the proxy")
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = await self._open(host, int(port))
            if upstream is None:
                await _answer(writer, 502, "Bad Gateway")
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _pipe(reader, writer, *upstream)
            return
        url = URL(target)
        upstream = await self._open(url.host or "", url.port or 80)
        if not url.absolute or upstream is None:
            await _answer(writer, 502, "Bad Gateway")
            return
        up_reader, up_writer = upstream
        kept = "".join(f"{k}: {v}\r\n" for k, v in headers if k.lower() not in _HOP_HEADERS)
        up_writer.write(
            f"{method} {url.raw_path_qs} HTTP/1.1\r\n{kept}Connection: close\r\n\r\n".encode()
        )
        length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
        if length:
            up_writer.write(await reader.readexactly(length))
        await up_writer.drain()
        await _copy(up_reader, writer)
        up_writer.close()

    async def _open(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            return await asyncio.open_connection(self.hosts.get(host, host), port)
        except OSError:
            return None


async def _answer(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy bytes until the source ends, then close the sink."""
    try:
        while data := await source.read(64 * 1024):
            sink.write(data)
            await sink.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(ConnectionError):
            sink.close()


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Pass bytes both ways until either side closes."""
    await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))


class StaticResolver(AbstractResolver):
    """Resolves the names it is given, and no other: a client's DNS, for names like `cce.test`."""

    def __init__(self, hosts: dict[str, str]) -> None:
        self.hosts = hosts
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Return the address of a known name; raise OSError for any other."""
        self.asked.append(host)
        if host not in self.hosts:
            msg = f"no such host {host}"
            raise OSError(msg)
        address = self.hosts[host]
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        """Nothing to release."""
