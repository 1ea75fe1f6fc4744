"""A local stand-in for the CCE and IAM APIs that checks credentials the way the cloud does.

Signatures are checked with the official SDK's signer (huaweicloudsdkcore),
not with the exporter's, so the two are compared on every request.
"""

import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from aiohttp import web
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from tests.standins.cce import PROJECT_ID
from tests.standins.jobs import example_job

# Signatures dated further from now than this are refused, as the cloud does.
MAX_SKEW = 15 * 60
# More consecutive bad signatures than this lock the access key.
LOCK_AFTER = 5
LOCK_SECONDS = 300


def rfc3339(moment: float) -> str:
    """Format a Unix time as IAM does."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error_code": code, "error_msg": message, "request_id": secrets.token_hex(8)},
        status=status,
    )


@dataclass
class StandIn:
    """What the stand-in accepts, and what it saw."""

    keys: dict[str, str] = field(default_factory=dict)  # AK -> SK
    security_tokens: dict[str, str] = field(default_factory=dict)  # temporary AK -> token
    users: dict[tuple[str, str], str] = field(default_factory=dict)  # (domain, user) -> pw
    token_life: float = 24 * 3600.0
    clock: Callable[[], float] = time.time
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry
    seen: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # AK -> bad signatures in a row
    issued: list[str] = field(default_factory=list)
    locked_until: dict[str, float] = field(default_factory=dict)  # AK -> end of its lock
    project_id: str = PROJECT_ID  # the one project it serves jobs and tokens of
    listing: list[Any] = field(default_factory=list)  # the v2 job list, for discovery

    def app(self) -> web.Application:
        """Build the aiohttp application serving the CCE job, job list and IAM token APIs."""
        app = web.Application()
        app.router.add_get("/api/v3/projects/{project_id}/jobs/{job_id}", self._show_job)
        app.router.add_get("/api/v2/projects/{project_id}/jobs", self._list_jobs)
        app.router.add_post("/v3/auth/tokens", self._issue_token)
        # Any other path: the API gateway checks the credentials before it
        # routes, so a path it does not serve answers 401 to bad ones, and 404
        # only to good ones (the cluster lists and Autopilot paths, here).
        app.router.add_route("*", "/{path:.*}", self._not_served)
        return app

    def _check(self, request: web.Request, body: bytes) -> web.Response | None:
        """Return the refusal for a request whose credentials do not hold, else None."""
        token = request.headers.get("X-Auth-Token")
        if token is not None:
            expiry = self.tokens.get(token)
            if expiry is None or self.clock() >= expiry:
                self.seen["bad_token"] += 1
                return _error(401, "APIG.0301", "Incorrect IAM authentication information")
            self.seen["token_ok"] += 1
            return None
        return self._check_signature(request, body)

    def _check_signature(self, request: web.Request, body: bytes) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        algorithm, _, rest = auth.partition(" ")
        fields = dict(part.strip().partition("=")[::2] for part in rest.split(","))
        ak = fields.get("Access", "")
        if algorithm != "SDK-HMAC-SHA256" or ak not in self.keys:
            self.seen["bad_signature"] += 1
            return _error(401, "APIG.0301", "Incorrect IAM authentication information")
        if self.locked_until.get(ak, 0.0) > self.clock():
            self.seen["locked"] += 1
            return _error(401, "APIG.0301", "access key locked")
        date = request.headers.get("X-Sdk-Date", "")
        try:
            signed_at = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            signed_at = None
        signed = fields.get("SignedHeaders", "").split(";")
        sdk_request = SdkRequest(
            method=request.method,
            schema=request.scheme,
            host=request.host,
            resource_path=request.raw_path.split("?")[0],
            query_params=list(request.query.items()),
            header_params={name: request.headers.get(name, "") for name in signed},
            body=body,
        )
        expected = Signer(SimpleNamespace(ak=ak, sk=self.keys[ak])).sign(sdk_request)
        ok = (
            expected.header_params["Authorization"] == auth
            and "x-sdk-date" in signed
            and "host" in signed
            and signed_at is not None
            and abs(signed_at.timestamp() - self.clock()) <= MAX_SKEW
        )
        if ak in self.security_tokens:
            ok = ok and (
                "x-security-token" in signed
                and request.headers.get("X-Security-Token") == self.security_tokens[ak]
            )
        if not ok:
            self.failures[ak] += 1
            if self.failures[ak] > LOCK_AFTER:
                self.locked_until[ak] = self.clock() + LOCK_SECONDS
            self.seen["bad_signature"] += 1
            return _error(401, "APIG.0301", "Incorrect IAM authentication information")
        self.failures[ak] = 0
        self.seen["signature_ok"] += 1
        return None

    async def _show_job(self, request: web.Request) -> web.Response:
        self.seen["show_job"] += 1
        refusal = self._check(request, await request.read())
        if refusal is not None:
            return refusal
        project = request.match_info["project_id"]
        if project != self.project_id or request.headers.get("X-Project-Id", project) != project:
            return _error(403, "CCE.01403001", "Forbidden")
        job = example_job()
        job["metadata"]["uid"] = request.match_info["job_id"]
        return web.json_response(job)

    async def _list_jobs(self, request: web.Request) -> web.Response:
        self.seen["list_jobs"] += 1
        refusal = self._check(request, await request.read())
        if refusal is not None:
            return refusal
        project = request.match_info["project_id"]
        if project != self.project_id or request.headers.get("X-Project-Id", project) != project:
            return _error(403, "CCE.01403001", "Forbidden")
        return web.json_response(self.listing)

    async def _not_served(self, request: web.Request) -> web.Response:
        self.seen["not_served"] += 1
        refusal = self._check(request, await request.read())
        if refusal is not None:
            return refusal
        return _error(404, "CCE.01404001", "Not found")

    async def _issue_token(self, request: web.Request) -> web.Response:
        self.seen["iam_token"] += 1
        try:
            auth = (await request.json())["auth"]
            user = auth["identity"]["password"]["user"]
            key = (user["domain"]["name"], user["name"])
            password = user["password"]
            scope = auth["scope"]["project"]["id"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": {"code": 400, "message": "bad body"}}, status=400)
        if self.users.get(key) != password:
            return web.json_response(
                {
                    "error": {
                        "code": 401,
                        "message": "The username or password is wrong.",
                        "title": "Unauthorized",
                    }
                },
                status=401,
            )
        if scope != self.project_id:
            return web.json_response({"error": {"code": 403, "message": "no such project"}}, 403)
        token = "MII" + secrets.token_urlsafe(48)
        now = self.clock()
        self.tokens[token] = now + self.token_life
        self.issued.append(token)
        body = {"token": {"issued_at": rfc3339(now), "expires_at": rfc3339(now + self.token_life)}}
        return web.json_response(body, status=201, headers={"X-Subject-Token": token})
