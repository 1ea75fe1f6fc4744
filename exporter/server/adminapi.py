"""The job API's writing half: `POST /api/v1/jobs` starts watching, `DELETE` stops.

Both answer only when `admin_token` is set (404 otherwise) and only to
`Authorization: Bearer <admin_token>` (401 otherwise), compared in constant time.
A POST names the target of its jobs in `target`, which may be left out when
there is only one; a DELETE needs none (a job is watched for one target).
"""

import hmac
import json
import logging
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import SecretStr

from exporter.jobs.ids import is_valid_id
from exporter.logs import Summary, event
from exporter.server.webconfig.basic_auth import bearer_protected
from exporter.watch.watchlist import Route, UnknownTargetError, WatchList

log = logging.getLogger(__name__)

# The most job IDs one request may name.
MAX_IDS_PER_REQUEST = 10000


@dataclass(frozen=True, slots=True)
class AdminContext:
    """What the job API acts on, and the token that guards it (None: the API is off)."""

    watchlist: WatchList
    token: SecretStr | None
    # Anyone can send a wrong token: refusals are counted, one line a minute.
    refusals: Summary = field(
        default_factory=lambda: Summary(log, logging.WARNING, "admin_unauthorized"), repr=False
    )

    def __repr__(self) -> str:
        return f"AdminContext(enabled={self.token is not None})"


_ADMIN = web.AppKey("admin", AdminContext)


def _problem(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _refusal(request: web.Request) -> web.Response | None:
    """Return the answer to a request that may not use the job API, or None when it may."""
    token = request.app[_ADMIN].token
    if token is None:
        return _problem(404, "the job API is off: set admin_token to enable it")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    expected = token.get_secret_value().encode()
    # compare_digest runs in a time that does not depend on where the values differ.
    # surrogateescape: a header that is not UTF-8 is compared (and refused), not a crash.
    offered = given.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(offered, expected):
        request.app[_ADMIN].refusals.add(remote=request.remote or "")
        response = _problem(401, "send Authorization: Bearer <admin_token>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="cce-job-exporter"'
        return response
    return None


class _BadRequestError(Exception):
    """A request the job API refuses: the answer to send."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


async def _read_request(request: web.Request, watchlist: WatchList) -> tuple[list[str], str]:
    """Read the job IDs of a POST and the target it names; raise _BadRequestError when wrong."""
    try:
        # JSON is UTF-8 (RFC 8259) whatever charset the Content-Type claims.
        body = json.loads((await request.read()).decode("utf-8"))
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or absurdly nested
        raise _BadRequestError(
            _problem(400, 'the body must be JSON: {"job_ids": ["..."]}')
        ) from None
    job_ids = body.get("job_ids") if isinstance(body, dict) else None
    if not isinstance(job_ids, list) or not all(isinstance(i, str) for i in job_ids):
        message = 'the body must be {"job_ids": ["..."]}, a list of strings'
        raise _BadRequestError(_problem(400, message))
    if len(job_ids) > MAX_IDS_PER_REQUEST:
        raise _BadRequestError(_problem(400, f"at most {MAX_IDS_PER_REQUEST} job IDs a request"))
    named = body.get("target")
    if named is not None and not isinstance(named, str):
        raise _BadRequestError(_problem(400, "target must be a string, the name of a target"))
    try:
        return job_ids, watchlist.target(named)
    except UnknownTargetError as exc:
        raise _BadRequestError(_problem(400, str(exc), targets=list(watchlist.targets))) from None


@bearer_protected
async def add_jobs(request: web.Request) -> web.Response:
    """Start watching the job IDs of `{"job_ids": [...], "target": "..."}`."""
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    watchlist = request.app[_ADMIN].watchlist
    try:
        job_ids, target = await _read_request(request, watchlist)
    except _BadRequestError as bad:
        return bad.response
    invalid = [job_id for job_id in job_ids if not is_valid_id(job_id)]
    if invalid:
        # Offered only to be counted as refused: nothing of a bad request is watched.
        watchlist.add(Route.API, invalid, target)
        return _problem(
            400,
            "invalid job IDs: 1 to 64 letters, digits, '-' or '_', starting with a letter or digit",
            invalid=invalid[:100],
        )
    outcome = watchlist.add(Route.API, job_ids, target)
    answer = {
        "target": target,
        "added": list(outcome.added),
        "already_watched": list(outcome.already_watched),
        "other_shard": list(outcome.other_shard),
        "other_target": list(outcome.other_target),
        "refused": list(outcome.refused),
    }
    # 409 tells a script that some jobs found no room under max_jobs, or are
    # watched for another target.
    conflict = outcome.refused or outcome.other_target
    return web.json_response(answer, status=409 if conflict else 200)


@bearer_protected
async def remove_job(request: web.Request) -> web.Response:
    """Stop watching one job, whichever routes named it."""
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    job_id = request.match_info["job_id"]
    if not is_valid_id(job_id):
        return _problem(400, "invalid job ID")
    if not request.app[_ADMIN].watchlist.remove(job_id):
        return _problem(404, "the job is not watched", job_id=job_id)
    event(log, logging.INFO, "job_unwatched", route=Route.API.value, job_id=job_id)
    return web.json_response({"removed": job_id})


def register(app: web.Application, context: AdminContext) -> None:
    """Add the job API's POST and DELETE routes to the exporter's application."""
    app[_ADMIN] = context
    app.router.add_post("/api/v1/jobs", add_jobs)
    app.router.add_delete("/api/v1/jobs/{job_id}", remove_job)
