"""The real process, at debug level, with every kind of secret: none may show anywhere."""

import asyncio
import base64
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from pytest_aiohttp import AiohttpServer

from tests.standins.cce import PROJECT_ID
from tests.standins.iam import StandIn
from tests.standins.processes import free_port

AK = "AKSECRETACCESSKEY0001"
SK = "SK-secret-key-value-0001"
TEMP_AK = "AKSECRETTEMPORARYKEY02"
TEMP_SK = "SK-temporary-secret-0002"
SECURITY_TOKEN = "ST-security-token-value-0003"
WRONG_SK = "SK-wrong-secret-value-0004"
PASSWORD = "IAM-password-value-0005"
SCRAPE_PASSWORD = "scrape-password-value-0006"
SCRAPE_HASH = bcrypt.hashpw(SCRAPE_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
SCRAPE_AUTH = "Basic " + base64.b64encode(f"prometheus:{SCRAPE_PASSWORD}".encode()).decode()
JOBS = "job-a,job-b,job-c"
# IAM tokens live this long: renewed after 9 s (three quarters), which leaves
# 3 s for a request sent with the old token to reach the stand-in, between two
# processes on a busy machine.
TOKEN_LIFE = 12.0

pytestmark = pytest.mark.slow


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CCE_EXPORTER_")}
    env |= {f"CCE_EXPORTER_{k.upper()}": v for k, v in settings.items()}
    return env


class Run:
    """One run of the exporter process and everything it printed and served."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.seen: list[str] = []

    async def get(self, path: str) -> tuple[int, str]:
        """Fetch a page with the scrape credentials; keep what it said."""
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(self.url + path, headers={"Authorization": SCRAPE_AUTH}) as response,
            ):
                text = await response.text()
        except aiohttp.ClientError:
            return 0, ""
        self.seen.append(text)
        return response.status, text

    async def wait_for(
        self, condition: Callable[[str], bool], what: str, *, within: float = 30
    ) -> None:
        """Scrape until the exposition meets `condition` (the process is slow to start)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            status, text = await self.get("/metrics")
            if status == 200 and condition(text):
                return
            await asyncio.sleep(0.2)
        pytest.fail(f"the exporter never got to: {what}")

    async def stop(self) -> str:
        """Stop the process; return all it wrote to stdout and stderr."""
        # What `ps` shows of the process: its command line.
        self.seen.append(_cmdline(self.proc.pid))
        self.proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(self.proc.communicate(), 20)
        self.seen += [out.decode(), err.decode()]
        return err.decode()


async def _start(tmp_path: Path, api: str, **settings: str) -> Run:
    port = free_port()
    web_config = tmp_path / "web.yml"
    web_config.write_text(f"basic_auth_users:\n  prometheus: '{SCRAPE_HASH}'\n")
    env = _env(
        endpoint=api,
        project_id=PROJECT_ID,
        job_ids=JOBS,
        poll_interval="1",
        log_level="debug",
        listen_address=f"127.0.0.1:{port}",
        web_config_file=str(web_config),
        **settings,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Run(proc, port)


async def _check_config(**settings: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "--check-config",
        env=_env(**settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return out.decode()


def _all_polls_unauthorized(text: str) -> bool:
    lines = [
        line
        for line in text.splitlines()
        if line.startswith("cce_job_poll_errors_total{") and 'error="unauthorized"' in line
    ]
    return len(lines) == 3 and all(not line.endswith(" 0.0") for line in lines)


def _all_polls_ok(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.startswith("cce_job_poll_success{")]
    return len(lines) == 3 and all(line.endswith(" 1.0") for line in lines)


async def test_no_secret_appears_in_anything_the_process_writes_or_serves(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """AK/SK (bad, then good with a security token), IAM: logs, pages, argv hold no secret."""
    standin = StandIn(
        keys={AK: SK, TEMP_AK: TEMP_SK},
        security_tokens={TEMP_AK: SECURITY_TOKEN},
        users={("example-domain", "exporter"): PASSWORD},
        token_life=TOKEN_LIFE,
    )
    server = await aiohttp_server(standin.app(), host="127.0.0.1")
    api = str(server.make_url("")).rstrip("/")
    seen: list[str] = []

    # 1. A wrong secret key: one clear line, a handful of requests, unauthorized.
    run = await _start(tmp_path, api, access_key=AK, secret_key=WRONG_SK)
    await run.wait_for(_all_polls_unauthorized, "polls failing as unauthorized")
    await run.get("/")
    log = await run.stop()
    seen += run.seen
    assert log.count("authentication_failed") == 1, log
    assert "check that access_key and secret_key" in log
    # A handful: the first refusal holds every later request back (the job
    # reads, and the two cluster lists, which the stand-in does not serve).
    assert 1 <= standin.seen["show_job"] + standin.seen["not_served"] <= 5

    # 2. Temporary keys: the secret key from a file, the security token from the environment.
    sk_file = tmp_path / "sk"
    sk_file.write_text(TEMP_SK + "\n")
    run = await _start(
        tmp_path,
        api,
        access_key=TEMP_AK,
        secret_key_file=str(sk_file),
        security_token=SECURITY_TOKEN,
    )
    await run.wait_for(_all_polls_ok, "every poll succeeding with AK/SK and a security token")
    await run.get("/")
    await run.stop()
    seen += run.seen

    # 3. IAM, the password from a file, tokens living 12 s: polling goes on across renewals.
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    iam = {
        "iam_endpoint": api,
        "iam_domain": "example-domain",
        "iam_username": "exporter",
        "iam_password_file": str(password_file),
    }
    run = await _start(tmp_path, api, **iam)
    await run.wait_for(_all_polls_ok, "every poll succeeding with IAM")
    issued = len(standin.issued)
    await run.wait_for(
        lambda text: _all_polls_ok(text) and len(standin.issued) >= issued + 2,
        "two token renewals with polls still succeeding",
        within=4 * TOKEN_LIFE,  # they come after about 2 * 9 s
    )
    await run.get("/")
    log = await run.stop()
    seen += run.seen
    assert any(
        'cce_exporter_token_expiry_timestamp_seconds{target="default"} ' in text
        for text in run.seen
    )
    assert standin.seen["bad_token"] == 0, log

    seen.append(await _check_config(access_key=AK, secret_key=SK, **{"project_id": PROJECT_ID}))
    seen.append(await _check_config(auth_token=SECURITY_TOKEN, secret_key=SK, project_id="p"))
    assert "configuration error" in seen[-1]

    everything = "\n".join(seen)
    assert "debug" in everything
    secrets = [AK, SK, TEMP_AK, TEMP_SK, SECURITY_TOKEN, WRONG_SK, PASSWORD, SCRAPE_PASSWORD]
    secrets += [SCRAPE_HASH, *standin.issued]
    for secret in secrets:
        assert secret not in everything, f"a secret leaked: {secret[:6]}..."
