"""The CCE API client: job reads and the job list, retried, rate-limited and gated."""

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote

import aiohttp
from yarl import URL

from exporter.cce.auth.base import Authenticator, OutgoingRequest
from exporter.cce.auth.gate import AUTH_KINDS, AuthGate, Ticket
from exporter.cce.concurrency import slot_given_up
from exporter.cce.ratelimit import RateLimiter, Sleep
from exporter.cce.transport import (
    MAX_BODY_BYTES,
    USER_AGENT,
    Answer,
    Transport,
    error_detail,
    kind_for_status,
    parse_retry_after,
    refusal_detail,
)
from exporter.errors import ApiError, ErrorKind
from exporter.jobs.answers import KnownAnswers
from exporter.jobs.clusters import ClusterKind, ClusterList, ClusterListError, read_clusters
from exporter.jobs.decode import body_text, loads
from exporter.jobs.ids import Api, check_id
from exporter.jobs.tree import InvalidJobError, JobTree, flatten
from exporter.jobs.v2 import MAX_LISTED_JOBS, ListedJob, read_list_text
from exporter.logs import event
from exporter.metrics.cce_exporter import Instruments, TargetInstruments

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# The job list holds every job the project still keeps, sub-jobs included: 20,000
# listed jobs of a few KB each. The cap bounds memory: the body, its text and
# the jobs read from it come to about five times the body at the most.
MAX_LIST_BODY_BYTES = 64 * 1024 * 1024

# Where each job API's paths begin, beneath the endpoint's own path.
_PREFIX = {Api.CCE: "/api", Api.AUTOPILOT: "/autopilot"}
# The operation label (cce_exporter_api_requests_total) and IAM action of a job
# read and of a job list, on each API. Autopilot's actions are CCE's; they are
# named apart so that a refusal on one API does not hold back the other.
_SHOW = {
    Api.CCE: ("show_job", "cce:job:get"),
    Api.AUTOPILOT: ("show_autopilot_job", "cce:job:get (Autopilot)"),
}
_LIST = {
    Api.CCE: ("list_jobs", "cce:job:list"),
    Api.AUTOPILOT: ("list_autopilot_jobs", "cce:job:list (Autopilot)"),
}


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


class CCEClient:
    """Reads jobs from the CCE API."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str,
        auth: Authenticator,
        instruments: Instruments | TargetInstruments,
        *,
        timeout: float,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        gate: AuthGate | None = None,
    ) -> None:
        self._transport = Transport(session, instruments, timeout=timeout)
        # Backs off while the API refuses the credentials (see cce.auth.gate).
        self._gate = gate or AuthGate("CCE API", auth.hints)
        self._endpoint = URL(endpoint)
        self._auth = auth
        self._limiter = limiter
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._answers = KnownAnswers()  # an unchanged answer is not read again

    def job_url(self, project_id: str, job_id: str, api: Api = Api.CCE) -> URL:
        """Build the URL of one job on `api`; the IDs are checked and encoded."""
        project = quote(check_id(project_id), safe="")
        job = quote(check_id(job_id), safe="")
        path = f"{self._endpoint.path.rstrip('/')}{_PREFIX[api]}/v3/projects/{project}/jobs/{job}"
        return self._endpoint.with_path(path, encoded=True)

    async def show_job(self, project_id: str, job_id: str, api: Api = Api.CCE) -> JobTree:
        """Read one job and its sub-jobs from `api`; raise ApiError on any failure."""
        operation, action = _SHOW[api]
        answer = await self._get(self.job_url(project_id, job_id, api), operation, action)

        def read() -> JobTree:
            return _decoded(answer, lambda data: flatten(data, job_id))

        return self._answers.read(f"{api.value}/{project_id}/{job_id}", answer.body, read)

    async def find_job(self, project_id: str, job_id: str) -> tuple[Api, JobTree]:
        """Read a job from whichever API knows it: CCE, else Autopilot when CCE answers 404.

        When neither knows it the failure is `not_found`, as from one API; so
        it is when Autopilot refuses the request (401, 403), which says nothing
        of the job, while CCE said 404. Any other failure on Autopilot is told
        as it is: the job may be there.
        """
        try:
            return Api.CCE, await self.show_job(project_id, job_id, Api.CCE)
        except ApiError as exc:
            if exc.kind is not ErrorKind.NOT_FOUND:
                raise
            on_cce = exc
        try:
            return Api.AUTOPILOT, await self.show_job(project_id, job_id, Api.AUTOPILOT)
        except ApiError as exc:
            if exc.kind is ErrorKind.NOT_FOUND or exc.kind in AUTH_KINDS:
                autopilot = "404" if exc.kind is ErrorKind.NOT_FOUND else exc.kind.value
                raise ApiError(
                    ErrorKind.NOT_FOUND,
                    f"{on_cce.detail} (Autopilot: {autopilot})",
                    status=on_cce.status,
                    request_id=on_cce.request_id,
                ) from None
            raise ApiError(
                exc.kind,
                f"Autopilot: {exc.detail}",
                status=exc.status,
                request_id=exc.request_id,
                retry_after=exc.retry_after,
            ) from None

    def jobs_url(self, project_id: str, api: Api = Api.CCE) -> URL:
        """Build the URL of the project's v2 job list on `api`; the ID is checked and encoded."""
        project = quote(check_id(project_id), safe="")
        path = f"{self._endpoint.path.rstrip('/')}{_PREFIX[api]}/v2/projects/{project}/jobs"
        return self._endpoint.with_path(path, encoded=True)

    async def list_jobs(self, project_id: str, api: Api = Api.CCE) -> list[ListedJob]:
        """Read the project's job list (v2) on `api`; raise ApiError on any failure.

        The list has no paging and may be large: it is decoded in a worker
        thread (see read_list_text), and only its first MAX_LISTED_JOBS
        jobs are read.
        """
        operation, action = _LIST[api]
        answer = await self._get(
            self.jobs_url(project_id, api), operation, action, max_bytes=MAX_LIST_BODY_BYTES
        )
        listed, ignored = await _decoded_in_thread(answer)
        if ignored:
            event(
                log,
                logging.WARNING,
                "job_list_truncated",
                kept=MAX_LISTED_JOBS,
                ignored=ignored,
            )
        return listed

    def clusters_url(self, project_id: str, kind: ClusterKind = ClusterKind.CCE) -> URL:
        """Build the URL of the project's cluster list, CCE or Autopilot; the ID is checked."""
        project = quote(check_id(project_id), safe="")
        root = "autopilot" if kind is ClusterKind.AUTOPILOT else "api"
        path = f"{self._endpoint.path.rstrip('/')}/{root}/v3/projects/{project}/clusters"
        return self._endpoint.with_path(path, encoded=True)

    async def list_clusters(
        self, project_id: str, kind: ClusterKind = ClusterKind.CCE
    ) -> ClusterList:
        """Read the project's clusters of one kind; raise ApiError on any failure."""
        # Each kind is an action of its own to the gate: a refusal of one holds back no other.
        autopilot = kind is ClusterKind.AUTOPILOT
        operation = "list_autopilot_clusters" if autopilot else "list_clusters"
        action = "cce:cluster:list (Autopilot)" if autopilot else "cce:cluster:list"
        answer = await self._get(self.clusters_url(project_id, kind), operation, action)
        try:
            return _decoded(answer, lambda data: read_clusters(data, kind))
        except ClusterListError as exc:
            raise _invalid(answer, str(exc)) from None

    async def _get(
        self, url: URL, operation: str, action: str, *, max_bytes: int = MAX_BODY_BYTES
    ) -> Answer:
        """GET `url`, an `action` in IAM terms, trying again after transient failures."""
        policy = self._retry

        def worth_retrying(exc: BaseException) -> bool:
            if not isinstance(exc, ApiError) or not exc.transient:
                return False
            return exc.retry_after is None or exc.retry_after <= policy.max_retry_after

        def wait(exc: ApiError, attempt: int) -> float:
            if exc.retry_after is not None:
                return exc.retry_after
            ceiling = min(policy.cap, policy.initial * 2 ** (attempt - 1))
            return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography

        # A plain loop: tenacity's machinery cost a quarter of the CPU of a poll.
        attempt = 1
        while True:
            try:
                return await self._get_once(url, operation, action, max_bytes)
            except ApiError as exc:
                if attempt >= policy.attempts or not worth_retrying(exc):
                    raise
                await self._wait(wait(exc, attempt))
            attempt += 1

    async def _wait(self, seconds: float) -> None:
        """Wait between two attempts, the poll's concurrency slot given up meanwhile."""
        async with slot_given_up():
            await self._sleep(seconds)

    async def _get_once(self, url: URL, operation: str, action: str, max_bytes: int) -> Answer:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
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
        try:
            answer = await self._transport.send(
                "GET", url, operation=operation, headers=headers, max_bytes=max_bytes
            )
        except ApiError as exc:
            self._settle(ticket, exc.status, b"", headers, exc.kind)
            raise
        except BaseException:
            ticket.settle(None)
            raise
        self._settle(ticket, answer.status, answer.body, headers, None)
        retry_after = parse_retry_after(answer.headers.get("Retry-After"), self._clock())
        if self._limiter is not None:
            if answer.status == 429 or (retry_after is not None and answer.status == 503):
                retry_after = self._limiter.throttled(retry_after, sent)
            else:
                self._limiter.succeeded(sent)
        if not answer.ok:
            raise ApiError(
                kind_for_status(answer.status),
                error_detail(answer.body),
                status=answer.status,
                request_id=answer.request_id,
                retry_after=retry_after,
            )
        return answer

    def _settle(
        self,
        ticket: Ticket,
        status: int | None,
        body: bytes,
        sent: dict[str, str],
        failed: ErrorKind | None,
    ) -> None:
        """Tell the gate (and, on 401, the authenticator) how the request went."""
        renewed = status == 401 and self._auth.refused(sent)
        detail = refusal_detail(body) if status in (401, 403) else ""
        kind = failed
        if kind is None and status is not None and not 200 <= status < 300:
            kind = kind_for_status(status)
        ticket.settle(status, detail, retry_now=renewed, kind=kind)


def _invalid(answer: Answer, detail: str) -> ApiError:
    return ApiError(
        ErrorKind.INVALID_RESPONSE, detail, status=answer.status, request_id=answer.request_id
    )


def _not_json(answer: Answer, exc: Exception) -> ApiError:
    reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
    return _invalid(answer, f"body is not JSON: {reason[:200]}")


def _decoded(answer: Answer, read: Callable[[object], _T]) -> _T:
    """Decode an answer's JSON and read it; anything unreadable is an invalid response."""
    try:
        data = loads(answer.body)
    except (ValueError, RecursionError) as exc:
        raise _not_json(answer, exc) from None
    try:
        return read(data)
    except InvalidJobError as exc:
        raise _invalid(answer, str(exc)) from None


async def _decoded_in_thread(answer: Answer) -> tuple[list[ListedJob], int]:
    """Decode the job list off the event loop; anything unreadable is an invalid response."""

    def read() -> tuple[list[ListedJob], int]:
        return read_list_text(body_text(answer.body))

    try:
        return await asyncio.to_thread(read)
    except InvalidJobError as exc:
        raise _invalid(answer, str(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise _not_json(answer, exc) from None
