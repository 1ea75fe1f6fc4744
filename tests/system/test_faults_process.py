"""Every fault at once against the real process: it keeps serving, counts, ages out, stops."""

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from exporter.cce.transport import MAX_BODY_BYTES
from exporter.errors import ErrorKind
from tests.conftest import Series, parse_series
from tests.standins.cce import PROJECT_ID, TOKEN, FakeCCE, Fault, html_page
from tests.standins.jobs import deep_job_body, job_object, wide_job
from tests.standins.processes import free_port

RETRY_AFTER = 1
# The error kind each faulty job must be counted under.
EXPECTED = {
    "e500": ErrorKind.SERVER_ERROR,
    "e502-html": ErrorKind.SERVER_ERROR,
    "e503": ErrorKind.SERVER_ERROR,
    "e429": ErrorKind.THROTTLED,
    "e429-retry-after": ErrorKind.THROTTLED,
    "hang": ErrorKind.TIMEOUT,
    "reset": ErrorKind.CONNECTION,
    "truncated-length": ErrorKind.CONNECTION,
    "truncated-json": ErrorKind.INVALID_RESPONSE,
    "wrong-shape": ErrorKind.INVALID_RESPONSE,
    "over-cap": ErrorKind.INVALID_RESPONSE,
    "gone": ErrorKind.NOT_FOUND,
    "deep": ErrorKind.INVALID_RESPONSE,
}
HEALTHY = ("ok-1", "ok-2")
WIDE = "wide"
DONE = "done"


def _fake_api() -> FakeCCE:
    """The stand-in API: a fault on each job of EXPECTED, and healthy, wide and finished jobs."""
    api = FakeCCE()
    for job_id in (*HEALTHY, *EXPECTED):
        api.add_job(job_id)
    del api.jobs["gone"]  # answered by the CCE 404 body
    api.add_job(DONE, phase="Success")
    # No update time: its retention counts from the exporter's first read of it.
    del api.jobs[DONE]["metadata"]["updateTimestamp"]
    api.jobs[WIDE] = wide_job(WIDE, 5000)
    job_text = json.dumps(job_object("x"))
    throttled = json.dumps({"error_code": "APIG.0308", "error_msg": "over ratelimit"})
    api.faults |= {
        "e500": Fault(500, json.dumps({"error_code": "CCE.01500001", "error_msg": "Internal"})),
        "e502-html": Fault(
            502, html_page(502, "Bad Gateway"), headers={"Content-Type": "text/html"}
        ),
        "e503": Fault(503, json.dumps({"kind": "Status", "reason": "ServiceUnavailable"})),
        # The throttled jobs recover after one poll (3 attempts): throttling
        # pauses every request, and the others must get their turn too.
        "e429": Fault(429, throttled, times=3),
        "e429-retry-after": Fault(
            429, throttled, headers={"Retry-After": str(RETRY_AFTER)}, times=3
        ),
        "hang": Fault(delay=60),
        "reset": Fault(reset=True),
        "truncated-length": Fault(200, job_text, abort_after=len(job_text) // 2),
        "truncated-json": Fault(200, job_text[: len(job_text) // 2]),
        "wrong-shape": Fault(200, '[{"kind": "Job"}]'),
        "over-cap": Fault(200, b" " * (MAX_BODY_BYTES + 1)),
        "deep": Fault(200, deep_job_body("deep", 1000)),
    }  # fmt: skip
    return api


def _poll_key(job_id: str) -> frozenset[tuple[str, str]]:
    return frozenset({("project_id", PROJECT_ID), ("job_id", job_id)})


def _split_wide(text: str) -> tuple[str, int]:
    """Count the wide job's nodes; drop its sub-jobs' lines (60,000 lines parse slowly)."""
    nodes = sum(
        line.startswith("cce_job_info{") and f'root_job_id="{WIDE}"' in line
        for line in text.splitlines()
    )
    kept = [line for line in text.splitlines() if f'job_id="{WIDE}-sub-' not in line]
    return "\n".join(kept) + "\n", nodes


def _errors(series: Series) -> dict[tuple[str, str], float]:
    return {
        (dict(key)["job_id"], dict(key)["error"]): value
        for (name, key), value in series.items()
        if name == "cce_job_poll_errors_total"
    }


@pytest.mark.slow
async def test_every_fault_in_one_run(aiohttp_server: AiohttpServer, tmp_path: Path) -> None:
    """With every fault mixed in, the process serves, counts, ages out and stops on SIGTERM."""
    api = _fake_api()
    server = await aiohttp_server(api.app())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCE_EXPORTER_")}
    log = tmp_path / "exporter.log"
    job_ids = [*HEALTHY, *EXPECTED, WIDE, DONE]
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "exporter", "--endpoint", str(server.make_url("")),
            "--project-id", PROJECT_ID, "--job-ids", ",".join(job_ids),
            "--poll-interval", "0.5", "--finished-retention", "2", "--request-timeout", "2",
            "--rate-limit", "100", "--listen-address", f"127.0.0.1:{port}",
            env=env | {"CCE_EXPORTER_AUTH_TOKEN": TOKEN}, stdout=out, stderr=out,
        )  # fmt: skip
    seen: set[tuple[str, str]] = set()  # (job, error kind) counted at least once
    done_seen = done_gone = False
    wide_nodes = 0
    scrapes = 0
    last: Series = {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            deadline = time.monotonic() + 30
            while True:
                assert process.returncode is None, log.read_text()
                try:
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                        assert response.status == 200
                        body = await response.text()
                except aiohttp.ClientConnectionError:
                    assert scrapes == 0, "/metrics stopped answering"  # not yet listening
                    await asyncio.sleep(0.1)
                    continue
                # Read the 60,000 lines in a thread: the stand-in API answers on
                # this event loop, and must not be held up past the exporter's
                # request timeout, or a job would count a timeout it never had.
                text, nodes = await asyncio.to_thread(_split_wide, body)
                scrapes += 1
                last = await asyncio.to_thread(parse_series, text)
                wide_nodes = max(wide_nodes, nodes)
                seen |= {key for key, value in _errors(last).items() if value > 0}
                done_here = any(dict(key).get("job_id") == DONE for _, key in last)
                done_seen |= done_here
                done_gone |= done_seen and not done_here
                wanted = {(job_id, kind.value) for job_id, kind in EXPECTED.items()}
                # The healthy jobs, and the throttled ones once their faults have passed.
                recovered = all(
                    last.get(("cce_job_poll_success", _poll_key(job_id))) == 1.0
                    for job_id in (*HEALTHY, WIDE, "e429", "e429-retry-after")
                )
                if wanted <= seen and done_gone and wide_nodes and recovered:
                    break
                assert time.monotonic() < deadline, (
                    f"missing {sorted(wanted - seen)}, done seen {done_seen} gone {done_gone}"
                )
                await asyncio.sleep(0.3)
            # Stop while a request hangs (between its timeouts, the client waits a moment).
            while api.in_flight_by_job["hang"] == 0:  # noqa: ASYNC110 - a counter, no event
                await asyncio.sleep(0.05)
        started = time.monotonic()  # the span to stop starts with the signal
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 15)
        stopped_in = time.monotonic() - started
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = log.read_text()
    assert process.returncode == 0, output
    assert stopped_in < 5, f"took {stopped_in:.1f} s to stop"
    assert "Traceback" not in output
    assert "poll_crashed" not in output
    # Each fault under its own kind only (the throttled jobs recovered meanwhile).
    for job_id, kind in EXPECTED.items():
        assert {error for job, error in seen if job == job_id} == {kind.value}, job_id
    assert not {job for job, _ in seen} & {*HEALTHY, WIDE, DONE}
    for job_id in (*HEALTHY, WIDE, "e429", "e429-retry-after"):
        assert last[("cce_job_poll_success", _poll_key(job_id))] == 1.0
    assert wide_nodes == 5001
    # The finished job: read once, then dropped after the retention.
    assert api.requests[DONE] == 1
    assert "job_expired" in output
    # Retry-After: 1 held each retry back at least that long.
    first, second, third, *_ = api.arrivals["e429-retry-after"]
    assert second - first >= RETRY_AFTER
    assert third - second >= RETRY_AFTER
