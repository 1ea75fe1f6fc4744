"""The CCE API client: one aiohttp session, every failure turned into an `ApiError`."""

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from exporter import __version__
from exporter.auth import Authenticator, OutgoingRequest
from exporter.errors import ApiError, ErrorKind
from exporter.ids import check_id
from exporter.instruments import Instruments
from exporter.model import InvalidJobError, JobTree, flatten
from exporter.model_v2 import ListedJob, read_listing

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
        if parts:
            return ": ".join(parts)[:_DETAIL_CHARS]
    return f"unexpected body {str(data)[:_DETAIL_CHARS]!r}"


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
    ) -> None:
        self._session = session
        self._endpoint = URL(endpoint)
        self._auth = auth
        self._instruments = instruments
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def job_url(self, project_id: str, job_id: str) -> URL:
        """Build the URL of one job; the IDs are checked and encoded."""
        project = quote(check_id(project_id), safe="")
        job = quote(check_id(job_id), safe="")
        path = f"{self._endpoint.path.rstrip('/')}/api/v3/projects/{project}/jobs/{job}"
        return self._endpoint.with_path(path, encoded=True)

    async def show_job(self, project_id: str, job_id: str) -> JobTree:
        """Read one job and its sub-jobs; raise ApiError on any failure."""
        answer = await self._get(self.job_url(project_id, job_id), "show_job")
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
            return flatten(data, job_id)
        except InvalidJobError as exc:
            raise ApiError(
                ErrorKind.INVALID_RESPONSE,
                str(exc),
                status=answer.status,
                request_id=answer.request_id,
            ) from None

    def jobs_url(self, project_id: str) -> URL:
        """Build the URL of the project's v2 job list; the ID is checked and encoded."""
        project = quote(check_id(project_id), safe="")
        path = f"{self._endpoint.path.rstrip('/')}/api/v2/projects/{project}/jobs"
        return self._endpoint.with_path(path, encoded=True)

    async def list_jobs(self, project_id: str) -> list[ListedJob]:
        """Read the project's job list (v2); raise ApiError on any failure."""
        answer = await self._get(
            self.jobs_url(project_id), "list_jobs", max_bytes=MAX_LIST_BODY_BYTES
        )
        try:
            return read_listing(json.loads(answer.body))
        except (ValueError, RecursionError) as exc:  # InvalidJobError is a ValueError
            if isinstance(exc, InvalidJobError):
                reason = str(exc)
            elif isinstance(exc, RecursionError):
                reason = "body is not JSON: nested too deeply"
            else:
                reason = f"body is not JSON: {exc}"
            raise ApiError(
                ErrorKind.INVALID_RESPONSE,
                reason,
                status=answer.status,
                request_id=answer.request_id,
            ) from None

    async def _get(self, url: URL, operation: str, *, max_bytes: int = MAX_BODY_BYTES) -> _Answer:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"cce-job-exporter/{__version__}",
        }
        headers |= await self._auth.authenticate(OutgoingRequest("GET", url, dict(headers)))
        started = time.perf_counter()
        code = "error"
        try:
            async with self._session.get(url, headers=headers, timeout=self._timeout) as response:
                code = str(response.status)
                body = await _read_capped(response, max_bytes)
                request_id = response.headers.get("X-Request-Id")
        except TimeoutError:
            raise ApiError(ErrorKind.TIMEOUT, f"no answer within {self._timeout.total} s") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise ApiError(ErrorKind.CONNECTION, _describe(exc)) from None
        except aiohttp.ClientError as exc:
            raise ApiError(ErrorKind.INVALID_RESPONSE, _describe(exc)) from None
        finally:
            self._instruments.api_requests.labels(operation, code).inc()
            self._instruments.api_latency.labels(operation).observe(time.perf_counter() - started)
        if not 200 <= int(code) < 300:
            raise ApiError(
                kind_for_status(int(code)),
                error_detail(body),
                status=int(code),
                request_id=request_id,
            )
        return _Answer(int(code), body, request_id)


class _BodyTooLargeError(aiohttp.ClientError):
    """The answer is larger than MAX_BODY_BYTES."""


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int = MAX_BODY_BYTES) -> bytes:
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


def _describe(exc: BaseException) -> str:
    """Say what went wrong in one line, without the URL's query or credentials."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:_DETAIL_CHARS]
