"""The CCE API client: one aiohttp session, every failure turned into an `ApiError`."""

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from yarl import URL

from exporter import __version__
from exporter.cce.auth.base import Authenticator, OutgoingRequest
from exporter.cce.auth.gate import AuthGate, Ticket
from exporter.cce.ratelimit import RateLimiter, Sleep
from exporter.errors import ApiError, ErrorKind
from exporter.jobs.ids import check_id
from exporter.jobs.tree import InvalidJobError, JobTree, flatten
from exporter.jobs.v2 import ListedJob, read_listing
from exporter.metrics.cce_exporter import Instruments
from exporter.text import valid_text

_T = TypeVar("_T")

# No real job is anywhere near this; a body past it is refused unread.
MAX_BODY_BYTES = 16 * 1024 * 1024
# The job list holds every job the project still keeps, sub-jobs included.
MAX_LIST_BODY_BYTES = 256 * 1024 * 1024
_DETAIL_CHARS = 200


_BY_STATUS = {
    401: ErrorKind.UNAUTHORIZED,
    403: ErrorKind.FORBIDDEN,
    404: ErrorKind.NOT_FOUND,
    429: ErrorKind.THROTTLED,
}


def kind_for_status(status: int) -> ErrorKind:
    """Map an HTTP error status to its error kind."""
    if status >= 500:
        return ErrorKind.SERVER_ERROR
    return _BY_STATUS.get(status, ErrorKind.INVALID_RESPONSE)


def error_detail(body: bytes) -> str:
    """Say what an error body says, whichever layer of the API wrote it."""
    try:
        data: Any = json.loads(body)
    except (ValueError, RecursionError):
        text = body[:_DETAIL_CHARS].decode("utf-8", "replace").strip()
        return f"non-JSON body: {' '.join(text.split())!r}" if text else "empty body"
    if isinstance(data, dict):
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
    return f"unexpected body {str(data)[:_DETAIL_CHARS]!r}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a request that failed for a transient reason is tried again.

    Waits grow exponentially with full jitter (a random time between 0 and
    `initial * 2**n`, at most `cap`), or are exactly what the API's Retry-After
    says. A Retry-After longer than `max_retry_after` ends the poll instead:
    the rate limiter still holds every request back until then.
    """

    attempts: int = 3
    initial: float = 0.5
    cap: float = 8.0
    max_retry_after: float = 30.0


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


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes
    request_id: str | None


class CCEClient:
    """Reads jobs from the CCE API."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str,
        auth: Authenticator,
        instruments: Instruments,
        *,
        timeout: float,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        gate: AuthGate | None = None,
    ) -> None:
        self._session = session
        # Backs off while the API refuses the credentials (see authgate).
        self._gate = gate or AuthGate("CCE API", auth.hints)
        self._endpoint = URL(endpoint)
        self._auth = auth
        self._instruments = instruments
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._limiter = limiter
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock

    def job_url(self, project_id: str, job_id: str) -> URL:
        """Build the URL of one job; the IDs are checked and encoded."""
        project = quote(check_id(project_id), safe="")
        job = quote(check_id(job_id), safe="")
        path = f"{self._endpoint.path.rstrip('/')}/api/v3/projects/{project}/jobs/{job}"
        return self._endpoint.with_path(path, encoded=True)

    async def show_job(self, project_id: str, job_id: str) -> JobTree:
        """Read one job and its sub-jobs; raise ApiError on any failure."""
        answer = await self._get(self.job_url(project_id, job_id), "show_job", "cce:job:get")
        return _decoded(answer, lambda data: flatten(data, job_id))

    def jobs_url(self, project_id: str) -> URL:
        """Build the URL of the project's v2 job list; the ID is checked and encoded."""
        project = quote(check_id(project_id), safe="")
        path = f"{self._endpoint.path.rstrip('/')}/api/v2/projects/{project}/jobs"
        return self._endpoint.with_path(path, encoded=True)

    async def list_jobs(self, project_id: str) -> list[ListedJob]:
        """Read the project's job list (v2); raise ApiError on any failure."""
        answer = await self._get(
            self.jobs_url(project_id), "list_jobs", "cce:job:list", max_bytes=MAX_LIST_BODY_BYTES
        )
        return _decoded(answer, read_listing)

    async def _get(
        self, url: URL, operation: str, action: str, *, max_bytes: int = MAX_BODY_BYTES
    ) -> _Answer:
        """GET `url`, an `action` in IAM terms, trying again after transient failures."""
        policy = self._retry

        def worth_retrying(exc: BaseException) -> bool:
            if not isinstance(exc, ApiError) or not exc.transient:
                return False
            return exc.retry_after is None or exc.retry_after <= policy.max_retry_after

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, ApiError) and exc.retry_after is not None:
                return exc.retry_after
            ceiling = min(policy.cap, policy.initial * 2 ** (state.attempt_number - 1))
            return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography

        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts),
            wait=wait,
            retry=retry_if_exception(worth_retrying),
            sleep=self._sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._get_once(url, operation, action, max_bytes)
        msg = "unreachable: tenacity re-raises the last failure"
        raise AssertionError(msg)

    async def _get_once(self, url: URL, operation: str, action: str, max_bytes: int) -> _Answer:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"cce-job-exporter/{__version__}",
        }
        ticket = await self._gate.admit(action)
        sent: int | None = None
        try:
            if self._limiter is not None:
                sent = await self._limiter.acquire()
            headers |= await self._auth.authenticate(OutgoingRequest("GET", url, dict(headers)))
        except ApiError as exc:  # no token (IAM failing, say): no verdict on the credentials
            ticket.settle(None, kind=exc.kind)
            raise
        except BaseException:
            ticket.settle(None)
            raise
        started = time.perf_counter()
        code = "error"
        body = b""
        failure: ApiError | None = None
        try:
            # Redirects are not followed: they would carry the credentials
            # elsewhere; a 3xx is an invalid response.
            async with self._session.get(
                url, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                code = str(response.status)
                body = await read_capped(response, max_bytes)
                request_id = response.headers.get("X-Request-Id")
                retry_after_header = response.headers.get("Retry-After")
        except Exception as exc:  # CancelledError is not one: it goes on as it is
            failure = transport_error(exc, code, self._timeout.total)
            raise failure from None
        finally:
            self._settle(ticket, code, body, headers, failure)
            self._instruments.api_requests.labels(operation, code).inc()
            self._instruments.api_latency.labels(operation).observe(time.perf_counter() - started)
        status = int(code)
        retry_after = parse_retry_after(retry_after_header, self._clock())
        if self._limiter is not None:
            if status == 429 or (retry_after is not None and status == 503):
                retry_after = self._limiter.throttled(retry_after, sent)
            else:
                self._limiter.succeeded(sent)
        if not 200 <= status < 300:
            raise ApiError(
                kind_for_status(status),
                error_detail(body),
                status=status,
                request_id=request_id,
                retry_after=retry_after,
            )
        return _Answer(status, body, request_id)

    def _settle(
        self,
        ticket: Ticket,
        code: str,
        body: bytes,
        sent: dict[str, str],
        failure: ApiError | None,
    ) -> None:
        """Tell the gate (and, on 401, the authenticator) how the request went."""
        status = int(code) if code.isdigit() else None
        renewed = status == 401 and self._auth.refused(sent)
        detail = error_detail(body) if status in (401, 403) else ""
        if failure is not None:
            kind: ErrorKind | None = failure.kind
        elif status is not None and not 200 <= status < 300:
            kind = kind_for_status(status)
        else:
            kind = None
        ticket.settle(status, detail, retry_now=renewed, kind=kind)


def _decoded(answer: _Answer, read: Callable[[object], _T]) -> _T:
    """Decode an answer's JSON and read it; anything unreadable is an invalid response."""
    try:
        data = json.loads(answer.body)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ApiError(
            ErrorKind.INVALID_RESPONSE,
            f"body is not JSON: {reason}",
            status=answer.status,
            request_id=answer.request_id,
        ) from None
    try:
        return read(data)
    except InvalidJobError as exc:
        raise ApiError(
            ErrorKind.INVALID_RESPONSE,
            str(exc),
            status=answer.status,
            request_id=answer.request_id,
        ) from None


class _BodyTooLargeError(aiohttp.ClientError):
    """The answer is larger than MAX_BODY_BYTES."""


async def read_capped(response: aiohttp.ClientResponse, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """Read the body, refusing one larger than `max_bytes`."""
    if (response.content_length or 0) > max_bytes:
        msg = f"body of {response.content_length} bytes is over the {max_bytes} byte cap"
        raise _BodyTooLargeError(msg)
    chunks = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            msg = f"body is over the {max_bytes} byte cap"
            raise _BodyTooLargeError(msg)
        chunks.append(chunk)
    return b"".join(chunks)


def transport_error(exc: Exception, status: str, timeout: float | None, api: str = "") -> ApiError:
    """Turn what sending a request or reading its answer raised into an ApiError of its kind.

    `status` is the answer's status code, or "error" while none came. Besides
    its own errors, aiohttp lets a few plain exceptions out (a ValueError for a
    header value with a line break, say); their text may quote the request's
    headers, and so the credentials: only their type is told.
    """
    if isinstance(exc, TimeoutError):
        return ApiError(ErrorKind.TIMEOUT, f"{api}no answer within {timeout} s")
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return ApiError(ErrorKind.CONNECTION, f"{api}{_describe(exc)}")
    if isinstance(exc, aiohttp.ClientError):
        return ApiError(ErrorKind.INVALID_RESPONSE, f"{api}{_describe(exc)}")
    name = type(exc).__name__
    if status.isdigit():
        msg = f"{api}the answer could not be read ({name})"
        return ApiError(ErrorKind.INVALID_RESPONSE, msg, status=int(status))
    return ApiError(ErrorKind.CONNECTION, f"{api}the request could not be sent ({name})")


def _describe(exc: BaseException) -> str:
    """Say what went wrong in one line, without the URL's query or credentials."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:_DETAIL_CHARS]
