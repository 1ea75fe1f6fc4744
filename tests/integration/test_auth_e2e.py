"""The client, scheduler and authenticators against a stand-in that checks credentials."""

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from exporter.cce.auth.aksk import AkSkAuth
from exporter.cce.auth.base import Authenticator
from exporter.cce.auth.gate import AuthGate
from exporter.cce.auth.iam import IAM_HINTS, IamAuth
from exporter.cce.client import CCEClient
from exporter.errors import ErrorKind
from exporter.jobs.state import JobStore
from exporter.metrics.cce_exporter import Instruments
from exporter.scheduler import PollSettings, Scheduler
from tests.standins.cce import PROJECT_ID
from tests.standins.clocks import Clock
from tests.standins.iam import StandIn

JOBS = [f"job-{n}" for n in range(6)]


@dataclass
class Rig:
    """A stand-in API on loopback and an exporter pointed at it."""

    standin: StandIn
    url: str
    session: aiohttp.ClientSession
    clock: Clock
    instruments: Instruments

    def scheduler(self, auth: Authenticator, jobs: list[str] = JOBS) -> Scheduler:
        """Build the scheduler and client the exporter runs, with this rig's clock."""
        gate = AuthGate("CCE API", auth.hints, clock=self.clock)
        client = CCEClient(self.session, self.url, auth, self.instruments, timeout=5, gate=gate)
        scheduler = Scheduler(
            client,
            JobStore(),
            self.instruments,
            PollSettings(PROJECT_ID, poll_interval=1, poll_concurrency=8, finished_retention=60),
            clock=self.clock,
            monotonic=self.clock,
        )
        scheduler.watch(jobs)
        return scheduler

    def iam(self, password: str = "right-password") -> IamAuth:  # noqa: S107 - the stand-in's
        """Build an IAM authenticator for the stand-in's user."""
        return IamAuth(
            self.session,
            self.url,
            domain="example-domain",
            username="exporter",
            password=SecretStr(password),
            project_id=PROJECT_ID,
            instruments=self.instruments,
            timeout=5,
            clock=self.clock,
            gate=AuthGate("IAM", IAM_HINTS, clock=self.clock),
        )

    def requests(self, operation: str, code: str) -> float:
        """How many requests the exporter counted for an operation and status."""
        value = self.instruments.registry.get_sample_value(
            "cce_exporter_api_requests_total",
            {"target": "default", "operation": operation, "code": code},
        )
        return value or 0.0


@pytest.fixture
def clock() -> Clock:
    """A clock the test moves, starting at the wall-clock time."""
    return Clock(time.time())


@pytest.fixture
async def rig(aiohttp_server: AiohttpServer, clock: Clock) -> AsyncIterator[Rig]:
    """The stand-in serving on an ephemeral loopback port, and a session to reach it."""
    standin = StandIn(
        keys={"AKPERMANENT": "sk-permanent-secret", "AKTEMPORARY": "sk-temporary-secret"},
        security_tokens={"AKTEMPORARY": "security-token-secret"},
        users={("example-domain", "exporter"): "right-password"},
        clock=clock,
    )
    server = await aiohttp_server(standin.app(), host="127.0.0.1")
    async with aiohttp.ClientSession() as session:
        yield Rig(standin, str(server.make_url("")), session, clock, Instruments())


def _all_ok(scheduler: Scheduler) -> bool:
    return all(state.last_ok for state in scheduler._store)


def _aksk(rig: Rig, access_key: str, secret_key: str, token: str | None = None) -> AkSkAuth:
    """Sign with the rig's clock, the stand-in's: moving it minutes on keeps them in step."""
    return AkSkAuth(
        SecretStr(access_key),
        SecretStr(secret_key),
        project_id=PROJECT_ID,
        security_token=SecretStr(token) if token else None,
        clock=rig.clock,
    )


async def _run(scheduler: Scheduler, clock: Clock, seconds: int, check: Callable[[], None]) -> None:
    """Poll every second of `seconds`, checking after each pass."""
    for _ in range(seconds):
        await scheduler.poll_due(jitter=False)
        check()
        clock.now += 1


async def test_aksk_polls_succeed(rig: Rig) -> None:
    """With a permanent access key pair every poll succeeds; the stand-in checks each signature."""
    scheduler = rig.scheduler(_aksk(rig, "AKPERMANENT", "sk-permanent-secret"))
    await _run(scheduler, rig.clock, 5, lambda: None)
    assert _all_ok(scheduler)
    assert rig.standin.seen["signature_ok"] == 5 * len(JOBS)
    assert rig.standin.seen["bad_signature"] == 0


async def test_aksk_with_security_token_polls_succeed(rig: Rig) -> None:
    """Temporary keys sign X-Security-Token; without the token the same keys are refused."""
    scheduler = rig.scheduler(
        _aksk(rig, "AKTEMPORARY", "sk-temporary-secret", "security-token-secret")
    )
    await scheduler.poll_due(jitter=False)
    assert _all_ok(scheduler)
    without = rig.scheduler(_aksk(rig, "AKTEMPORARY", "sk-temporary-secret"))
    await without.poll_due(jitter=False)
    assert not any(state.last_ok for state in without._store)


async def test_iam_tokens_that_expire_every_few_seconds_never_stop_polling(rig: Rig) -> None:
    """Tokens living 4 s are renewed before they expire: every poll of 30 s succeeds."""
    rig.standin.token_life = 4
    scheduler = rig.scheduler(rig.iam())

    def every_poll_ok() -> None:
        assert _all_ok(scheduler)

    await _run(scheduler, rig.clock, 30, every_poll_ok)
    assert rig.standin.seen["bad_token"] == 0
    assert len(rig.standin.issued) >= 9
    assert rig.requests("iam_token", "201") == len(rig.standin.issued)
    expiry = rig.instruments.registry.get_sample_value(
        "cce_exporter_token_expiry_timestamp_seconds", {"target": "default"}
    )
    assert expiry == pytest.approx(rig.standin.tokens[rig.standin.issued[-1]], abs=0.01)


async def test_many_tasks_share_one_token_request(rig: Rig) -> None:
    """Forty jobs polled at once at start-up cause one token request, not forty."""
    scheduler = rig.scheduler(rig.iam(), [f"job-{n}" for n in range(40)])
    await scheduler.poll_due(jitter=False)
    assert _all_ok(scheduler)
    assert rig.standin.seen["iam_token"] == 1


async def test_revoked_token_is_renewed_at_once(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """When the API answers 401 to a token that worked, a new one is used on the next poll."""
    scheduler = rig.scheduler(rig.iam())
    await scheduler.poll_due(jitter=False)
    rig.clock.now += 120
    rig.standin.tokens.clear()  # revoked: a password change, say
    await scheduler.poll_due(jitter=False)
    assert not _all_ok(scheduler)
    rig.clock.now += 1
    await scheduler.poll_due(jitter=False)
    assert _all_ok(scheduler)
    assert len(rig.standin.issued) == 2
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_iam_outage_keeps_the_token_in_use(rig: Rig) -> None:
    """A renewal that fails leaves polling on the old token, which is still valid."""
    rig.standin.token_life = 100
    auth = rig.iam()
    scheduler = rig.scheduler(auth)
    await scheduler.poll_due(jitter=False)
    rig.standin.users.clear()  # IAM refuses from now on
    rig.clock.now += 80  # past the renewal point, before expiry
    await _run(scheduler, rig.clock, 10, lambda: None)
    assert _all_ok(scheduler)
    assert rig.standin.seen["iam_token"] <= 3


async def test_wrong_secret_key_sends_a_handful_of_requests_and_logs_one_line(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong secret key backs off: few requests in ten minutes, one log line, then recovery."""
    caplog.set_level(logging.DEBUG)
    scheduler = rig.scheduler(_aksk(rig, "AKPERMANENT", "wrong-secret"))
    await _run(scheduler, rig.clock, 300, lambda: None)
    assert 1 <= rig.standin.seen["show_job"] <= 5
    assert rig.standin.seen["locked"] == 0  # no lock: at most five bad signatures in 5 min
    await _run(scheduler, rig.clock, 300, lambda: None)
    sent = rig.standin.seen["show_job"]
    assert sent <= 7
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in lines] == ["authentication_failed"]
    assert "secret_key" in lines[0].fields["hint"]  # type: ignore[attr-defined]
    assert rig.requests("show_job", "401") == sent
    store = scheduler._store
    state = store.get(JOBS[0])
    assert state is not None
    assert state.last_error_kind is ErrorKind.UNAUTHORIZED
    # The key works again (re-enabled, say): the exporter recovers on its own.
    rig.standin.keys["AKPERMANENT"] = "wrong-secret"
    await _run(scheduler, rig.clock, 300, lambda: None)
    assert _all_ok(scheduler)
    assert "authentication_recovered" in [r.getMessage() for r in caplog.records]


async def test_wrong_iam_password_backs_off(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong IAM password is tried a few times in ten minutes, not at every poll."""
    scheduler = rig.scheduler(rig.iam("wrong-password"))
    await _run(scheduler, rig.clock, 600, lambda: None)
    assert 1 <= rig.standin.seen["iam_token"] <= 7
    assert rig.standin.seen["show_job"] == 0
    state = scheduler._store.get(JOBS[0])
    assert state is not None
    assert state.last_error_kind is ErrorKind.UNAUTHORIZED
    lines = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in lines] == ["authentication_failed"]
    assert "iam_password" in lines[0].fields["hint"]  # type: ignore[attr-defined]


async def test_token_request_carries_no_secret_in_repr(rig: Rig) -> None:
    """The IAM authenticator and its token show no password or token in their repr."""
    auth = rig.iam()
    scheduler = rig.scheduler(auth)
    await scheduler.poll_due(jitter=False)
    assert auth.token is not None
    token = auth.token.value.get_secret_value()
    assert token not in repr(auth.token)
    assert "right-password" not in repr(auth)
