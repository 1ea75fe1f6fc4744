import base64
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from exporter.jobs.state import JobStore
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.exposition import Renderer
from exporter.server import adminapi
from exporter.server.endpoints import WebContext, create_app
from exporter.server.webconfig.live import LiveWebConfig, secure
from exporter.watch.sharding import Shard
from exporter.watch.watchlist import Route, WatchList
from tests.conftest import idle_watchlist

ADMIN = "s3cret-admin-token"


async def _client(
    aiohttp_client: Any,
    instruments: Instruments,
    *,
    token: str | None = ADMIN,
    max_jobs: int = 100,
    shard: Shard | None = None,
    web_config: Path | None = None,
) -> tuple[TestClient[Any, Any], WatchList, JobStore]:
    watchlist, store, _ = idle_watchlist(instruments, max_jobs=max_jobs, shard=shard)
    app = create_app(WebContext(store, Renderer(instruments.registry), lambda: True))
    adminapi.register(
        app, adminapi.AdminContext(watchlist, SecretStr(token) if token is not None else None)
    )
    if web_config is not None:
        secure(app, LiveWebConfig(web_config))
    client: TestClient[Any, Any] = await aiohttp_client(app)
    return client, watchlist, store


AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _basic_auth(directory: Path) -> Path:
    """Write a web config asking for basic auth: user prometheus, password pw."""
    password_hash = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    config = directory / "web.yml"
    config.write_text(f"basic_auth_users:\n  prometheus: {password_hash}\n")
    return config


async def test_post_adds_jobs_that_are_then_exported(
    aiohttp_client: Any, instruments: Instruments
) -> None:
    """POST with the token starts watching, and the job's series appear on /metrics."""
    client, watchlist, store = await _client(aiohttp_client, instruments)
    response = await client.post("/api/v1/jobs", json={"job_ids": ["job-a", "job-b"]}, headers=AUTH)
    assert response.status == 200
    assert await response.json() == {
        "target": "default",
        "added": ["job-a", "job-b"],
        "already_watched": [],
        "other_shard": [],
        "other_target": [],
        "refused": [],
    }
    assert {state.job_id for state in store} == {"job-a", "job-b"}
    assert watchlist.routes("job-a") == {Route.API}
    again = await client.post("/api/v1/jobs", json={"job_ids": ["job-a"]}, headers=AUTH)
    assert (await again.json())["already_watched"] == ["job-a"]
    metrics = await (await client.get("/metrics")).text()
    assert 'cce_job_poll_errors_total{error="timeout",job_id="job-b",project_id="p"} 0.0' in metrics


async def test_delete_stops_a_job(aiohttp_client: Any, instruments: Instruments) -> None:
    """DELETE with the token stops watching; a job not watched is 404."""
    client, watchlist, store = await _client(aiohttp_client, instruments)
    watchlist.add(Route.SETTINGS, ["job-a"])
    response = await client.delete("/api/v1/jobs/job-a", headers=AUTH)
    assert response.status == 200
    assert await response.json() == {"removed": "job-a"}
    assert "job-a" not in store
    assert (await client.delete("/api/v1/jobs/job-a", headers=AUTH)).status == 404


async def test_a_large_post_keeps_the_api_named_on_every_job(
    aiohttp_client: Any, instruments: Instruments
) -> None:
    """After a POST of thousands, the file dropping one keeps it; DELETE then stops it."""
    client, watchlist, store = await _client(aiohttp_client, instruments, max_jobs=10000)
    job_ids = [f"job-{n}" for n in range(3000)]
    response = await client.post("/api/v1/jobs", json={"job_ids": job_ids}, headers=AUTH)
    assert response.status == 200
    assert len((await response.json())["added"]) == 3000
    assert watchlist.routes("job-0") == {Route.API}
    watchlist.add(Route.FILE, ["job-0"])
    assert watchlist.release(Route.FILE, ["job-0"]) == []  # the API still names it
    assert watchlist.routes("job-0") == {Route.API}
    assert (await client.delete("/api/v1/jobs/job-0", headers=AUTH)).status == 200
    assert "job-0" not in store
    assert len(store) == 2999


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {ADMIN}"},
        {"Authorization": f"Bearer {ADMIN}x"},
        {"Authorization": "Bearer"},
    ],
)
async def test_without_the_token_it_is_401(
    aiohttp_client: Any, instruments: Instruments, headers: dict[str, str]
) -> None:
    """Without the exact bearer token both routes answer 401 and change nothing."""
    client, watchlist, store = await _client(aiohttp_client, instruments)
    watchlist.add(Route.SETTINGS, ["job-a"])
    post = await client.post("/api/v1/jobs", json={"job_ids": ["job-b"]}, headers=headers)
    delete = await client.delete("/api/v1/jobs/job-a", headers=headers)
    assert post.status == 401
    assert delete.status == 401
    assert post.headers["WWW-Authenticate"].startswith("Bearer")
    assert ADMIN not in await post.text()
    assert {state.job_id for state in store} == {"job-a"}


async def test_without_admin_token_the_api_is_404(
    aiohttp_client: Any, instruments: Instruments
) -> None:
    """With no admin_token set, the job API does not exist: 404, whatever is sent."""
    client, _, store = await _client(aiohttp_client, instruments, token=None)
    post = await client.post("/api/v1/jobs", json={"job_ids": ["job-b"]}, headers=AUTH)
    delete = await client.delete("/api/v1/jobs/job-a", headers=AUTH)
    assert post.status == 404
    assert delete.status == 404
    assert len(store) == 0


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"job_ids": "job-a"}', b"[]", b'{"job_ids": [1, 2]}', b'{"ids": ["a"]}'],
)
async def test_malformed_bodies_are_400(
    aiohttp_client: Any, instruments: Instruments, body: bytes
) -> None:
    """A body that is not {"job_ids": [strings]} is a 400 that says what is expected."""
    client, _, store = await _client(aiohttp_client, instruments)
    response = await client.post("/api/v1/jobs", data=body, headers=AUTH)
    assert response.status == 400
    assert "job_ids" in (await response.json())["error"]
    assert len(store) == 0


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"job_ids": ["job-a"]}', "application/json; charset=rot13"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (b'{"job_ids": ["\xff"]}', "application/json"),
    ],
    ids=["unknown charset", "nested 100,000 deep", "not UTF-8"],
)
async def test_odd_bodies_are_400_not_500(
    aiohttp_client: Any, instruments: Instruments, body: bytes, content_type: str
) -> None:
    """A bogus charset, deep nesting or non-UTF-8 bytes are read or refused, never a 500."""
    client, _, store = await _client(aiohttp_client, instruments)
    headers = {**AUTH, "Content-Type": content_type}
    response = await client.post("/api/v1/jobs", data=body, headers=headers)
    if content_type.endswith("rot13"):  # JSON is UTF-8 whatever the charset says
        assert response.status == 200
        assert "job-a" in store
    else:
        assert response.status == 400
        assert len(store) == 0


async def test_invalid_ids_are_400_and_counted(
    aiohttp_client: Any, instruments: Instruments
) -> None:
    """A request naming an invalid ID is refused whole, and the ID counted as invalid_id."""
    client, _, store = await _client(aiohttp_client, instruments)
    response = await client.post(
        "/api/v1/jobs", json={"job_ids": ["good", "../../etc/passwd"]}, headers=AUTH
    )
    assert response.status == 400
    assert (await response.json())["invalid"] == ["../../etc/passwd"]
    assert len(store) == 0
    rejected = instruments.registry.get_sample_value(
        "cce_exporter_rejected_jobs_total", {"target": "default", "reason": "invalid_id"}
    )
    assert rejected == 1
    bad_delete = await client.delete("/api/v1/jobs/bad%2Fid", headers=AUTH)
    assert bad_delete.status == 400


async def test_refusals_for_room_are_409(aiohttp_client: Any, instruments: Instruments) -> None:
    """When max_jobs leaves no room for some IDs, the answer is 409 and names them."""
    client, _, store = await _client(aiohttp_client, instruments, max_jobs=1)
    response = await client.post("/api/v1/jobs", json={"job_ids": ["a1", "a2"]}, headers=AUTH)
    assert response.status == 409
    answer = await response.json()
    assert answer["added"] == ["a1"]
    assert answer["refused"] == ["a2"]
    assert len(store) == 1


async def test_jobs_of_other_shards_are_named_not_watched(
    aiohttp_client: Any, instruments: Instruments
) -> None:
    """A job owned by another shard is answered as other_shard and not watched."""
    shard = Shard(0, 2)
    client, _, store = await _client(aiohttp_client, instruments, shard=shard)
    job_ids = [f"job-{n}" for n in range(10)]
    answer = await (
        await client.post("/api/v1/jobs", json={"job_ids": job_ids}, headers=AUTH)
    ).json()
    assert set(answer["other_shard"]) == {j for j in job_ids if not shard.owns(j)}
    assert {state.job_id for state in store} == {j for j in job_ids if shard.owns(j)}


def test_the_context_never_shows_the_token(instruments: Instruments) -> None:
    """The admin context's repr says whether the API is on, never the token."""
    watchlist, _, _ = idle_watchlist(instruments)
    context = adminapi.AdminContext(watchlist, SecretStr(ADMIN))
    assert ADMIN not in repr(context)
    assert "enabled=True" in repr(context)


async def test_admin_api_works_behind_basic_auth(
    aiohttp_client: Any, instruments: Instruments, tmp_path: Path
) -> None:
    """With basic auth on, the admin token alone opens POST/DELETE, and nothing else."""
    client, _, store = await _client(aiohttp_client, instruments, web_config=_basic_auth(tmp_path))
    basic = {"Authorization": "Basic " + base64.b64encode(b"prometheus:pw").decode()}
    wrong = {"Authorization": "Bearer not-the-token"}
    assert (await client.post("/api/v1/jobs", json={"job_ids": ["a"]})).status == 401
    assert (await client.post("/api/v1/jobs", json={"job_ids": ["a"]}, headers=wrong)).status == 401
    assert (await client.post("/api/v1/jobs", json={"job_ids": ["a"]}, headers=basic)).status == 401
    assert [state.job_id for state in store] == []
    assert (await client.post("/api/v1/jobs", json={"job_ids": ["a"]}, headers=AUTH)).status == 200
    assert [state.job_id for state in store] == ["a"]
    # The admin token opens the admin routes only: reads still need basic auth.
    assert (await client.get("/metrics", headers=AUTH)).status == 401
    assert (await client.get("/api/v1/jobs", headers=AUTH)).status == 401
    assert (await client.get("/metrics", headers=basic)).status == 200
    assert (await client.delete("/api/v1/jobs/a", headers=AUTH)).status == 200
    assert [state.job_id for state in store] == []


async def test_garbage_credentials_are_refused_not_crashed(
    aiohttp_client: Any, instruments: Instruments, tmp_path: Path
) -> None:
    """Non-ASCII, undecodable or over-long credentials get 401, never a 500."""
    client, _, _ = await _client(aiohttp_client, instruments, web_config=_basic_auth(tmp_path))
    long_password = base64.b64encode(b"prometheus:" + b"x" * 100).decode()
    for header in ("Basic \u00e9", f"Basic {long_password}", "Basic !!!", "Bearer \u00e9\u00e9"):
        for method, path in (("GET", "/metrics"), ("POST", "/api/v1/jobs")):
            response = await client.request(
                method, path, headers={"Authorization": header.encode().decode("latin-1")}
            )
            assert response.status == 401, (header, path)
