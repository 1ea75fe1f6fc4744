"""Outbound TLS: ca_bundle and insecure_skip_verify, against a real HTTPS stand-in.

The stand-in serves the CCE job and IAM token APIs on 127.0.0.1 with a
certificate from a throwaway CA; the exporter is built as the service builds it.
"""

import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from pytest_aiohttp import AiohttpServer

from exporter.app import exporter
from exporter.errors import ErrorKind
from exporter.settings.load import load_settings
from tests.conftest import labels, parse_series
from tests.standins.cce import PROJECT_ID
from tests.standins.iam import StandIn

JOB = "job-1"
TOKEN = "static-token"
DOMAIN, USER, PASSWORD = "acme", "poller", "iam-secret-password"
MODES = ("token", "iam")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A CA no system trusts, that signs the stand-in's certificate."""
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    """The CA's certificate as a PEM file, as ca_bundle takes it."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
async def standin(ca: trustme.CA, aiohttp_server: AiohttpServer) -> tuple[StandIn, str]:
    """An HTTPS stand-in for the CCE and IAM APIs, and its base URL."""
    api = StandIn(users={(DOMAIN, USER): PASSWORD})
    api.tokens[TOKEN] = float("inf")  # a token that the static-token mode sends
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    server = await aiohttp_server(api.app(), ssl=context)
    url = str(server.make_url("")).rstrip("/")
    assert url.startswith("https://127.0.0.1:")
    return api, url


def _flags(mode: str, url: str, **trust: Any) -> dict[str, Any]:
    """Settings polling JOB at `url`, authenticated by `mode`, with the trust settings given."""
    flags: dict[str, Any] = {"endpoint": url, "project_id": PROJECT_ID, "job_ids": JOB, **trust}
    if mode == "iam":
        flags |= {
            "iam_endpoint": url,
            "iam_domain": DOMAIN,
            "iam_username": USER,
            "iam_password": PASSWORD,
        }
    else:
        flags["auth_token"] = TOKEN
    return flags


async def _poll(flags: dict[str, Any]) -> tuple[bool, str, str]:
    """Build the service from the flags, poll once; say if it worked, its error, its metrics."""
    async with exporter(load_settings(flags)) as ex:
        await ex.scheduler.poll_due(jitter=False)
        state = ex.store.get(JOB)
        assert state is not None
        text = ex.renderer.render(ex.store).decode()
        return state.last_ok, state.last_error or "", text


@pytest.mark.parametrize("mode", MODES)
async def test_an_unknown_ca_is_refused_by_default(
    standin: tuple[StandIn, str], mode: str, clean_env: pytest.MonkeyPatch
) -> None:
    """By default a certificate from a CA outside the system's trust fails the poll: connection."""
    api, url = standin
    ok, error, text = await _poll(_flags(mode, url))
    assert not ok
    assert error.startswith(f"{ErrorKind.CONNECTION}: ")
    assert "certificate" in error.lower()
    if mode == "iam":
        assert "IAM: " in error  # the token request is the one refused
    assert PASSWORD not in error
    # No request got past the handshake, and the failure is counted, not raised.
    assert api.seen["show_job"] == 0
    assert api.seen["iam_token"] == 0
    key = labels(error="connection", job_id=JOB, project_id=PROJECT_ID)
    assert parse_series(text)[("cce_job_poll_errors_total", key)] >= 1


async def test_a_refused_certificate_leaves_the_poll_loop_going(
    standin: tuple[StandIn, str], clean_env: pytest.MonkeyPatch
) -> None:
    """A TLS refusal is recorded, not raised: the job stays watched, due again an interval on."""
    _, url = standin
    async with exporter(load_settings(_flags("token", url, poll_interval=30))) as ex:
        assert await ex.scheduler.poll_due(jitter=False) == [JOB]
        state = ex.store.get(JOB)
        assert state is not None
        assert state.last_error_kind == ErrorKind.CONNECTION
        assert ex.scheduler.due_jobs() == []  # waits its interval, no tight loop
        assert JOB in ex.store


@pytest.mark.parametrize("mode", MODES)
async def test_ca_bundle_trusts_the_private_ca(
    standin: tuple[StandIn, str], ca_file: Path, mode: str, clean_env: pytest.MonkeyPatch
) -> None:
    """With ca_bundle naming the stand-in's CA, the same server is polled successfully."""
    api, url = standin
    ok, error, _ = await _poll(_flags(mode, url, ca_bundle=str(ca_file)))
    assert ok, error
    assert api.seen["show_job"] == 1
    assert api.seen["iam_token"] == (1 if mode == "iam" else 0)


@pytest.mark.parametrize("mode", MODES)
async def test_insecure_skip_verify_polls_and_warns_once(
    standin: tuple[StandIn, str],
    mode: str,
    clean_env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With insecure_skip_verify the server is polled and tls_verification_disabled logged once."""
    api, url = standin
    caplog.set_level(logging.INFO)
    ok, error, _ = await _poll(_flags(mode, url, insecure_skip_verify=True))
    assert ok, error
    assert api.seen["show_job"] == 1
    assert api.seen["iam_token"] == (1 if mode == "iam" else 0)
    warnings = [r for r in caplog.records if r.getMessage() == "tls_verification_disabled"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
