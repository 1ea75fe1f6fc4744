"""What an operator reads of a failed request, in the logs and on /jobs, against the stand-in."""

import json
import logging
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from exporter.app import exporter
from exporter.errors import ErrorKind
from exporter.server.statuspage.model import jobs_json
from exporter.server.statuspage.page import render_html
from exporter.settings.model import Settings
from tests.standins.cce import PROJECT_ID, SDK_ERROR_BODIES, TOKEN, FakeCCE, Fault

JOB = "job-1"


@pytest.fixture
def cce() -> FakeCCE:
    """A stand-in project with one running job."""
    api = FakeCCE()
    api.add_job(JOB)
    return api


@pytest.fixture
async def server(cce: FakeCCE, aiohttp_server: Any) -> TestServer:
    """Serve the stand-in API on loopback."""
    served: TestServer = await aiohttp_server(cce.app())
    return served


def _settings(server: TestServer) -> Settings:
    return Settings(
        endpoint=str(server.make_url("")).rstrip("/"),
        project_id=PROJECT_ID,
        auth_token=SecretStr(TOKEN),
        job_ids=(JOB,),
    )


def _fields(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == name]


async def test_logs_and_the_status_page_name_the_code_the_sdk_reports(
    cce: FakeCCE, server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A body with two codes: the log line, /jobs and /api/v1/jobs all name CCE_CM.0201 alone."""
    body = json.dumps(SDK_ERROR_BODIES["two_codes"])
    cce.faults[JOB] = Fault(400, body, headers={"x-request-id": "req-lower-7"})
    async with exporter(_settings(server)) as ex:
        await ex.scheduler.poll_due(jitter=False)
        now = time.time()
        document = jobs_json(ex.store, PROJECT_ID, now)
        html = render_html(ex.store, PROJECT_ID, now)
    [logged] = _fields(caplog, "job_poll_failing")
    [job] = document["jobs"]
    expected = "CCE_CM.0201: Request body invalid"
    assert expected in logged["detail"]
    assert expected in job["last_error"]
    assert expected in html
    # The request ID, whatever the case of its header's name.
    assert "(request req-lower-7)" in job["last_error"]
    assert "E.CFE" not in logged["detail"] + job["last_error"] + html


async def test_a_policy_refusal_logs_its_encoded_message_once(
    cce: FakeCCE, server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A 403 with encoded_authorization_message: the one refusal line carries it; /jobs does not."""
    body = SDK_ERROR_BODIES["policy"]
    cce.faults[JOB] = Fault(403, json.dumps(body))
    async with exporter(_settings(server)) as ex:
        await ex.scheduler.poll_due(jitter=False)
        state = ex.store.get(JOB)
    [refused] = _fields(caplog, "authentication_failed")
    assert refused["action"] == "cce:job:get"
    assert refused["detail"] == (
        f"CCE.01403001: {body['error_msg']}; "
        f"encoded_authorization_message: {body['encoded_authorization_message']}"
    )
    assert [r.levelno for r in caplog.records if r.getMessage() == "authentication_failed"] == [
        logging.ERROR
    ]
    assert state is not None
    assert state.last_error_kind is ErrorKind.FORBIDDEN
    assert state.last_error is not None
    assert "CCE.01403001" in state.last_error
    assert "encoded_authorization_message" not in state.last_error
