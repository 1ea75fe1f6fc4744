"""Which proxy a request to Huawei Cloud goes through: HTTPS_PROXY, HTTP_PROXY and NO_PROXY.

The variables are read once, as the exporter starts, in either case (the
upper-case name first when both are set, as Go programs read them, Prometheus
and its exporters among them). `HTTPS_PROXY` serves `https://` endpoints (the
request goes through a CONNECT tunnel, so the proxy sees only the host),
`HTTP_PROXY` serves `http://` ones. A proxy's URL is `http://` or `https://`
(`http://` when it has no scheme) and may carry credentials
(`http://user:password@proxy:3128`): they are sent in `Proxy-Authorization`
and never shown, in logs or errors.

`NO_PROXY` is a comma-separated list of hosts reached directly: `*` for all;
a domain (`example.com`, `.example.com` or `*.example.com`: the domain and
every name under it); an IP address; a CIDR block (`10.0.0.0/8`); each
optionally with `:port`. As in Go, `localhost` and loopback addresses are
always reached directly: a proxy elsewhere could not reach them anyway (the
built-in demo's API among them).
"""

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from yarl import URL

# The variables read, each as (upper-case name, lower-case name).
_VARIABLES = {
    "https": ("HTTPS_PROXY", "https_proxy"),
    "http": ("HTTP_PROXY", "http_proxy"),
}
_NO_PROXY = ("NO_PROXY", "no_proxy")

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Proxy:
    """One proxy: its URL without credentials, and the credentials apart."""

    url: URL
    auth: aiohttp.BasicAuth | None = None

    def __str__(self) -> str:
        return str(self.url)


@dataclass(frozen=True, slots=True)
class _Exception:
    """One entry of NO_PROXY."""

    domain: str | None = None  # matches itself and every name under it
    network: _Network | None = None
    port: int | None = None

    def matches(self, host: str, port: int | None) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        assert self.domain is not None  # noqa: S101 - one of the two is set
        return host == self.domain or host.endswith("." + self.domain)


class ProxyError(ValueError):
    """A proxy variable of the environment that cannot be used."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name}: {message}" for name, message in problems))


@dataclass(frozen=True, slots=True)
class Proxies:
    """The proxies of the environment, and the hosts reached without one."""

    by_scheme: Mapping[str, Proxy]
    exceptions: tuple[_Exception, ...] = ()
    bypass_all: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "Proxies":
        """Read the proxy variables; raise ProxyError naming each one that cannot be used."""
        problems: list[tuple[str, str]] = []
        by_scheme: dict[str, Proxy] = {}
        for scheme, names in _VARIABLES.items():
            name, value = _first(environ, names)
            if value:
                try:
                    by_scheme[scheme] = _proxy(value)
                except ValueError as exc:
                    problems.append((name, str(exc)))
        exceptions: list[_Exception] = []
        bypass_all = False
        name, value = _first(environ, _NO_PROXY)
        for entry in (part.strip().lower() for part in value.split(",")):
            if entry == "*":
                bypass_all = True
            elif entry:
                try:
                    exceptions.append(_exception(entry))
                except ValueError as exc:
                    problems.append((name, str(exc)))
        if problems:
            raise ProxyError(problems)
        return cls(by_scheme, tuple(exceptions), bypass_all)

    def for_url(self, url: URL) -> Proxy | None:
        """Return the proxy a request to `url` goes through; None to go directly."""
        proxy = self.by_scheme.get(url.scheme)
        if proxy is None or self.bypass_all:
            return None
        host = (url.host or "").lower().rstrip(".")
        if _is_loopback(host) or any(entry.matches(host, url.port) for entry in self.exceptions):
            return None
        return proxy

    def describe(self) -> dict[str, str]:
        """Say which proxies are in use, for the log: no credentials."""
        described = {f"{scheme}_proxy": str(proxy) for scheme, proxy in self.by_scheme.items()}
        if self.bypass_all:
            described["no_proxy"] = "*"
        elif self.exceptions:
            described["no_proxy"] = f"{len(self.exceptions)} entries"
        return described


def proxy_problems(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """Return (variable, message) for each proxy variable that cannot be used."""
    try:
        Proxies.from_environ(environ)
    except ProxyError as exc:
        return exc.problems
    return []


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _first(environ: Mapping[str, str], names: tuple[str, str]) -> tuple[str, str]:
    """Return the first of `names` that is set, and its value; the first name and '' if none."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return names[0], ""


def _proxy(value: str) -> Proxy:
    """Read a proxy's URL; its credentials are taken apart and never shown."""
    text = value if "://" in value else f"http://{value}"
    try:
        url = URL(text)
    except ValueError:
        msg = "is not a URL"
        raise ValueError(msg) from None
    if url.scheme not in ("http", "https"):
        msg = f"proxy scheme {url.scheme[:20]!r} is not supported: use http:// or https://"
        raise ValueError(msg)
    if not url.host:
        msg = "the proxy URL has no host"
        raise ValueError(msg)
    if url.path not in ("", "/") or url.query_string or url.fragment:
        msg = "a proxy URL is scheme, host and port only"
        raise ValueError(msg)
    auth = None
    if url.user is not None:
        auth = aiohttp.BasicAuth(url.user, url.password or "")
    return Proxy(url.with_user(None).with_path(""), auth)


def _exception(entry: str) -> _Exception:
    """Read one entry of NO_PROXY."""
    if "/" in entry:
        try:
            return _Exception(network=ipaddress.ip_network(entry, strict=False))
        except ValueError:
            msg = f"{entry[:100]!r} is not a CIDR block"
            raise ValueError(msg) from None
    try:
        address = ipaddress.ip_address(entry.strip("[]"))
    except ValueError:
        pass
    else:
        return _Exception(network=ipaddress.ip_network(address))
    host, port = entry, None
    if entry.startswith("["):  # [IPv6]:port
        address_text, _, port_text = entry[1:].partition("]:")
        host, port = address_text, _port(port_text, entry)
        try:
            return _Exception(network=ipaddress.ip_network(host), port=port)
        except ValueError:
            msg = f"{entry[:100]!r} is not an address"
            raise ValueError(msg) from None
    if ":" in entry:
        host, _, port_text = entry.rpartition(":")
        port = _port(port_text, entry)
    domain = host.removeprefix("*").removeprefix(".").rstrip(".")
    if not domain:
        msg = f"{entry[:100]!r} names no host"
        raise ValueError(msg)
    try:
        return _Exception(network=ipaddress.ip_network(domain), port=port)
    except ValueError:
        return _Exception(domain=domain, port=port)


def _port(text: str, entry: str) -> int:
    if not text.isdecimal() or not 0 < int(text) < 65536:
        msg = f"{entry[:100]!r} has no valid port"
        raise ValueError(msg)
    return int(text)
