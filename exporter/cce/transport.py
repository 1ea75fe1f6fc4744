"""One instrumented request to a Huawei Cloud API, CCE or IAM, and what its answer means.

Written once for both APIs: the body cap, reading what an error body says,
the HTTP status as an error kind, Retry-After, and the request counted and
timed in `cce_exporter_api_requests_total` and
`cce_exporter_api_request_duration_seconds`. Every failure to send a request
or to read its answer leaves as an `ApiError` of its kind.
"""

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
    """Say what an error body says, whichever layer of which API wrote it.

    CCE writes `errorCode`/`errorMessage`, the API gateway `error_code`/
    `error_msg`, Kubernetes-style layers `code`/`message`/`reason`, and IAM
    nests its `code`/`message` in `error`. A body that says none of these is
    described by its shape, never quoted whole.
    """
    try:
        data: Any = loads(body)
    except (ValueError, RecursionError):
        text = " ".join(body[:_DETAIL_CHARS].decode("utf-8", "replace").split())
        return f"non-JSON body: {text!r}" if text else "empty body"
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        data = data["error"]
    if not isinstance(data, dict):
        return f"unexpected body: a JSON {type(data).__name__}"
    code = data.get("errorCode") or data.get("error_code") or data.get("code")
    message = (
        data.get("errorMessage")
        or data.get("error_msg")
        or data.get("message")
        or data.get("reason")
    )
    parts = [str(part) for part in (code, message) if part]
    if parts:  # the API's own words, which JSON may spell with lone surrogates
        return valid_text(": ".join(parts)[:_DETAIL_CHARS])
    keys = ", ".join(sorted(str(key) for key in data)[:10])
    return valid_text(f"unexpected body with keys: {keys[:_DETAIL_CHARS]}")


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
    exc: Exception, status: int | None, timeout: float | None, api: str
) -> ApiError:
    """Turn what sending a request or reading its answer raised into an ApiError of its kind.

    `status` is the answer's status, None while none came. Besides its own
    errors, aiohttp lets a few plain exceptions out (a ValueError for a header
    value with a line break, say); their text may quote the request's headers,
    and so the credentials: only their type is told.
    """
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
    any other, and an invalid one to the callers. `api` prefixes the messages of failures ("IAM: ").
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        instruments: Instruments | TargetInstruments,
        *,
        timeout: float,
        api: str = "",
    ) -> None:
        self._session = session
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
        try:
            async with self._session.request(
                method,
                url,
                headers={"Accept-Encoding": ACCEPT_ENCODING, **headers},
                data=data,
                timeout=self._timeout,
                allow_redirects=False,
                auto_decompress=False,
            ) as response:
                status = response.status
                body = await read_capped(response, max_bytes)
                answer = Answer(status, body, CIMultiDictProxy(CIMultiDict(response.headers)))
        except Exception as exc:  # CancelledError is not one: it goes on as it is
            failure = transport_error(exc, status, self._timeout.total, self._api)
        finally:
            code = "error" if status is None else str(status)
            self._instruments.api_requests.labels(operation, code).inc()
            self._instruments.api_latency.labels(operation).observe(time.perf_counter() - started)
        if failure is not None:
            # Raised out here, the ApiError holds no context: not aiohttp's
            # exception, its traceback, nor the frames and buffers these keep.
            raise failure
        return answer
