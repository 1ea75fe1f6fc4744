"""One instrumented request to a Huawei Cloud API, CCE or IAM, and what its answer means.

Written once for both APIs: the body cap, reading what an error body says,
the HTTP status as an error kind, Retry-After, and the request counted and
timed in `cce_exporter_api_requests_total` and
`cce_exporter_api_request_duration_seconds`. Every failure to send a request
or to read its answer leaves as an `ApiError` of its kind.
"""

import os
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from exporter import __version__
from exporter.cce.proxy import Proxies, Proxy
from exporter.errors import ApiError, ErrorKind, valid_text
from exporter.jobs.decode import loads
from exporter.metrics.cce_exporter import Instruments, TargetInstruments, bound

# No real job is anywhere near this; a body past it is refused unread. A
# compressed body counts as it inflates, so a gzip bomb stops at the cap too.
MAX_BODY_BYTES = 16 * 1024 * 1024
# The encodings asked for, and inflated here rather than by aiohttp: aiohttp
# inflates up to 32 MiB of each network chunk at once, whatever the cap.
ACCEPT_ENCODING = "gzip, deflate"
# The most bytes one step of reading or inflating adds to a body.
_STEP_BYTES = 64 * 1024
USER_AGENT = f"cce-job-exporter/{__version__}"
_DETAIL_CHARS = 200
# The keys an error body names its code and message with, in the order the
# official SDK tries them; then any message key alone (a Kubernetes-style
# `reason`, say).
_ERROR_PAIRS = (
    ("error_code", ("error_msg",)),
    ("errorCode", ("errorMessage", "errorMsg")),
    ("code", ("message",)),
)
_MESSAGE_KEYS = ("error_msg", "errorMessage", "errorMsg", "message", "reason")
# How deep, and into how many objects, an error body is searched for its code.
_MAX_ERROR_DEPTH = 2
_MAX_ERROR_SECTIONS = 8
_ENCODED = "encoded_authorization_message"
MAX_ENCODED_AUTHORIZATION_CHARS = 8192

_BY_STATUS = {
    401: ErrorKind.UNAUTHORIZED,
    403: ErrorKind.FORBIDDEN,
    404: ErrorKind.NOT_FOUND,
    429: ErrorKind.THROTTLED,
}


def kind_for_status(status: int, *, not_found: ErrorKind = ErrorKind.NOT_FOUND) -> ErrorKind:
    """Map an HTTP error status to its error kind; `not_found` is what a 404 means here."""
    if status >= 500:
        return ErrorKind.SERVER_ERROR
    if status == 404:
        return not_found
    return _BY_STATUS.get(status, ErrorKind.INVALID_RESPONSE)


def error_detail(body: bytes) -> str:
    """Say what an error body says, whichever layer of which API wrote it, as the SDK reads it.

    The code and its message come from the first pair of keys present, in the
    order of the official SDK: the API gateway's `error_code`/`error_msg`,
    then CCE's `errorCode`/`errorMessage` (or `errorMsg`), then `code`/
    `message`, then the same pairs in a nested object (IAM's `{"error":
    {...}}`). A body may carry two codes at once (`error_code` beside
    `errorCode`): the first pair's is the one the SDK and the console report.
    A body that says none of these is described by its shape, never quoted whole.
    """
    try:
        data: Any = loads(body)
    except (ValueError, RecursionError):
        text = " ".join(body[:_DETAIL_CHARS].decode("utf-8", "replace").split())
        return f"non-JSON body: {text!r}" if text else "empty body"
    if not isinstance(data, dict):
        return f"unexpected body: a JSON {type(data).__name__}"
    said = _code_and_message(data, 0)
    if said is not None:  # the API's own words, which JSON may spell with lone surrogates
        parts = [part for part in said if part]
        return valid_text(": ".join(parts)[:_DETAIL_CHARS])
    keys = ", ".join(sorted(str(key) for key in data)[:10])
    return valid_text(f"unexpected body with keys: {keys[:_DETAIL_CHARS]}")


def refusal_detail(body: bytes) -> str:
    """Say what a refusal (401, 403) says: `error_detail`, and why a policy refused, if told.

    A 403 may carry `encoded_authorization_message`: IAM's account of the
    policy that refused, which IAM decodes for the account's administrator.
    It is no secret, but may be long: it is kept up to
    MAX_ENCODED_AUTHORIZATION_CHARS characters.
    """
    detail = error_detail(body)
    try:
        data: Any = loads(body)
    except (ValueError, RecursionError):
        return detail
    encoded = None
    for section in (data, data.get("error")) if isinstance(data, dict) else ():
        if isinstance(section, dict) and isinstance(section.get(_ENCODED), str):
            encoded = section[_ENCODED]
            break
    if not encoded:
        return detail
    cut = encoded[:MAX_ENCODED_AUTHORIZATION_CHARS]
    if len(encoded) > len(cut):
        cut += f" (cut at {len(cut)} of {len(encoded)} characters)"
    return valid_text(f"{detail}; {_ENCODED}: {cut}")


def _said(data: dict[str, Any], key: str) -> str:
    """Return a code or message field as text; empty when absent, empty or not a value."""
    value = data.get(key)
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value)


def _code_and_message(data: dict[str, Any], depth: int) -> tuple[str, str] | None:
    """Find an error body's code and message (see error_detail); None when it has neither."""
    for code_key, message_keys in _ERROR_PAIRS:
        code = _said(data, code_key)
        if code:
            message = next((text for key in message_keys if (text := _said(data, key))), "")
            return code, message or _first_message(data)
    if depth < _MAX_ERROR_DEPTH:
        # IAM's `error` first, then any other object, as the SDK walks them.
        inner = sorted(
            (value for value in data.values() if isinstance(value, dict)),
            key=lambda value: value is not data.get("error"),
        )
        for section in inner[:_MAX_ERROR_SECTIONS]:
            said = _code_and_message(section, depth + 1)
            if said is not None:
                return said
    message = _first_message(data)
    return ("", message) if message else None


def _first_message(data: dict[str, Any]) -> str:
    return next((text for key in _MESSAGE_KEYS if (text := _said(data, key))), "")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Read a Retry-After header, seconds or an HTTP date, as seconds from `now`."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdecimal():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # an HTTP date is GMT
        return None
    return max(0.0, moment.timestamp() - now)


class BodyTooLargeError(aiohttp.ClientError):
    """The answer is larger than the cap of its request."""


class BadEncodingError(aiohttp.ClientError):
    """The answer's Content-Encoding is not one asked for, or its data does not inflate."""


class _Inflater:
    """Inflates a gzip or deflate body, at most `_STEP_BYTES` of output a step."""

    def __init__(self, encoding: str) -> None:
        if encoding not in ("gzip", "x-gzip", "deflate"):
            msg = f"unexpected Content-Encoding {encoding[:40]!r}"
            raise BadEncodingError(msg)
        self._encoding = encoding
        self._zlib: zlib._Decompress | None = None

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Inflate `data`, yielding the output one bounded piece at a time."""
        if self._zlib is None:
            if self._encoding != "deflate":
                wbits = 16 + zlib.MAX_WBITS
            else:  # raw deflate without the zlib header, as some servers send it
                wbits = zlib.MAX_WBITS if data[:1] and data[0] & 0x0F == 8 else -zlib.MAX_WBITS
            self._zlib = zlib.decompressobj(wbits)
        while data and not self._zlib.eof:
            try:
                piece = self._zlib.decompress(data, _STEP_BYTES)
            except zlib.error as exc:
                msg = f"{self._encoding} body does not inflate: {exc}"
                raise BadEncodingError(msg) from None
            data = self._zlib.unconsumed_tail
            if piece:
                yield piece

    def finish(self) -> None:
        """Check that the compressed data ended where the body did."""
        if self._zlib is not None and not self._zlib.eof:
            msg = f"{self._encoding} body ends before its compressed data does"
            raise BadEncodingError(msg)


async def read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """Read the body, inflated if it is compressed, refusing one larger than `max_bytes`."""
    if (response.content_length or 0) > max_bytes:
        msg = f"body of {response.content_length} bytes is over the {max_bytes} byte cap"
        raise BodyTooLargeError(msg)
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    inflater = None if encoding in ("", "identity") else _Inflater(encoding)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.content.iter_chunked(_STEP_BYTES):
            for piece in (chunk,) if inflater is None else inflater.feed(chunk):
                size += len(piece)
                if size > max_bytes:
                    msg = f"body is over the {max_bytes} byte cap"
                    raise BodyTooLargeError(msg)
                chunks.append(piece)
        if inflater is not None:
            inflater.finish()
    except BaseException:
        # The traceback keeps this frame alive as long as the error is kept:
        # it must not keep what was read as well.
        chunks.clear()
        raise
    return b"".join(chunks)


def transport_error(
    exc: Exception, status: int | None, timeout: float | None, api: str, proxy: Proxy | None = None
) -> ApiError:
    """Turn what sending a request or reading its answer raised into an ApiError of its kind.

    `status` is the answer's status, None while none came. Besides its own
    errors, aiohttp lets a few plain exceptions out (a ValueError for a header
    value with a line break, say); their text may quote the request's headers,
    and so the credentials: only their type is told. A proxy that cannot be
    reached, or refuses the tunnel, is a connection error like any other.
    """
    failure = _proxy_error(exc, api, proxy)
    if failure is not None:
        return failure
    if isinstance(exc, TimeoutError):
        return ApiError(ErrorKind.TIMEOUT, f"{api}no answer within {timeout} s", status=status)
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return ApiError(ErrorKind.CONNECTION, f"{api}{_describe(exc)}", status=status)
    if isinstance(exc, aiohttp.ClientError):
        return ApiError(ErrorKind.INVALID_RESPONSE, f"{api}{_describe(exc)}", status=status)
    name = type(exc).__name__
    if status is not None:
        msg = f"{api}the answer could not be read ({name})"
        return ApiError(ErrorKind.INVALID_RESPONSE, msg, status=status)
    return ApiError(ErrorKind.CONNECTION, f"{api}the request could not be sent ({name})")


def _proxy_error(exc: Exception, api: str, proxy: Proxy | None) -> ApiError | None:
    """Describe a proxy that could not be reached or refused the tunnel; None for other errors."""
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        msg = f"{api}the proxy {proxy} refused the tunnel: HTTP {exc.status} {exc.message}"
        return ApiError(ErrorKind.CONNECTION, msg[: 2 * _DETAIL_CHARS])
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        msg = f"{api}cannot reach the proxy {proxy}: {_describe(exc)}"
        return ApiError(ErrorKind.CONNECTION, msg)
    return None


def _describe(exc: BaseException) -> str:
    """Say what went wrong in one line, without the URL's query or credentials."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:_DETAIL_CHARS]


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer read whole: its status, body and headers."""

    status: int
    body: bytes
    headers: CIMultiDictProxy[str]

    @property
    def ok(self) -> bool:
        """Tell whether the status is a success (2xx)."""
        return 200 <= self.status < 300

    @property
    def request_id(self) -> str | None:
        """The API's ID of the request, to quote to its support."""
        return self.headers.get("X-Request-Id")


class Transport:
    """Sends requests on one aiohttp session: instrumented, timed out, never redirected.

    Requests are counted under the target of `instruments` (the implicit one
    when given the whole set). Redirects are not followed: they would carry
    the credentials (or IAM's password) elsewhere, so a 3xx is an answer like
    any other, and an invalid one to the callers. `api` prefixes the messages
    of failures ("IAM: "). Requests go through the proxies of the environment
    (see cce.proxy), read when the transport is made unless `proxies` are given.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        instruments: Instruments | TargetInstruments,
        *,
        timeout: float,
        api: str = "",
        proxies: Proxies | None = None,
    ) -> None:
        self._session = session
        self._proxies = proxies if proxies is not None else Proxies.from_environ(os.environ)
        self._instruments = bound(instruments)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._api = api

    async def send(
        self,
        method: str,
        url: URL,
        *,
        operation: str,
        headers: Mapping[str, str],
        data: bytes | None = None,
        max_bytes: int = MAX_BODY_BYTES,
    ) -> Answer:
        """Send one request and read its answer; raise ApiError when either fails.

        Any status is an answer: what it means is the caller's to say.
        """
        started = time.perf_counter()
        status: int | None = None
        failure: ApiError | None = None
        proxy = self._proxies.for_url(url)
        try:
            async with self._session.request(
                method,
                url,
                headers={"Accept-Encoding": ACCEPT_ENCODING, **headers},
                data=data,
                timeout=self._timeout,
                allow_redirects=False,
                auto_decompress=False,
                proxy=None if proxy is None else proxy.url,
                proxy_auth=None if proxy is None else proxy.auth,
            ) as response:
                status = response.status
                if status == 407 and proxy is not None:  # the proxy's own answer (http://)
                    msg = f"{self._api}the proxy {proxy} refused the request: HTTP 407"
                    raise ApiError(ErrorKind.CONNECTION, msg)
                body = await read_capped(response, max_bytes)
                answer = Answer(status, body, CIMultiDictProxy(CIMultiDict(response.headers)))
        except ApiError as exc:
            failure = exc
        except Exception as exc:  # CancelledError is not one: it goes on as it is
            failure = transport_error(exc, status, self._timeout.total, self._api, proxy)
        finally:
            code = "error" if status is None else str(status)
            self._instruments.api_requests.labels(operation, code).inc()
            self._instruments.api_latency.labels(operation).observe(time.perf_counter() - started)
        if failure is not None:
            # Raised out here, the ApiError holds no context: not aiohttp's
            # exception, its traceback, nor the frames and buffers these keep.
            raise failure
        return answer
