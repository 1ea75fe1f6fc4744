"""One client per target: its own authentication, rate limit, 429 pause and credential backoff.

Everything that can stall or refuse is per target: the authenticator (an IAM
token is scoped to one project), the token bucket and the pause after a 429
(`RateLimiter`), and the backoff after refused credentials (the client's
`AuthGate`, and the IAM authenticator's own). One target's outage, throttling
or bad credentials so never hold back another's requests. Only the HTTP
session (its connection pool) and the poll concurrency slots are shared; the
slots are handed to the targets in turn (`exporter.cce.concurrency`).
"""

import aiohttp

from exporter.cce.auth.aksk import AkSkAuth
from exporter.cce.auth.base import Authenticator, TokenAuth
from exporter.cce.auth.iam import IamAuth
from exporter.cce.client import CCEClient
from exporter.cce.ratelimit import RateLimiter
from exporter.metrics.cce_exporter import TargetInstruments
from exporter.settings.resolved import (
    AkSkCredentials,
    IamCredentials,
    Target,
    TokenCredentials,
)


def target_auth(
    target: Target,
    session: aiohttp.ClientSession,
    instruments: TargetInstruments,
    limiter: RateLimiter | None = None,
) -> Authenticator:
    """Return the authenticator of a target's credentials (its own, or the top level's)."""
    credentials = target.credentials
    if isinstance(credentials, TokenCredentials):
        return TokenAuth(credentials.token)
    if isinstance(credentials, AkSkCredentials):
        return AkSkAuth(
            credentials.access_key,
            credentials.secret_key,
            project_id=target.project_id,
            security_token=credentials.security_token,
        )
    if isinstance(credentials, IamCredentials):
        return IamAuth(
            session,
            credentials.endpoint,
            domain=credentials.domain,
            username=credentials.username,
            password=credentials.password,
            project_id=target.project_id,
            instruments=instruments,
            timeout=target.request_timeout,
            limiter=limiter,
        )
    msg = f"target {target.name} has no authentication"  # excluded by check_settings
    raise RuntimeError(msg)


def target_client(
    target: Target, session: aiohttp.ClientSession, instruments: TargetInstruments
) -> CCEClient:
    """Build a target's client: its endpoint, authentication, rate limit and timeout."""
    limiter = RateLimiter(target.rate_limit)
    return CCEClient(
        session,
        target.endpoint,
        target_auth(target, session, instruments, limiter),
        instruments,
        timeout=target.request_timeout,
        limiter=limiter,
    )
