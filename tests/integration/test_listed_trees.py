"""Whole trees for jobs discovery first sees finished: one read by ID when the list lacks them.

The stand-in lists a job with or without `spec.subjobs` and serves its whole
tree by ID; its requests are counted exactly.
"""

import time
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from exporter.app import Exporter, exporter
from exporter.jobs.ids import Api
from exporter.settings.model import Settings
from tests.conftest import parse_series
from tests.standins.cce import PROJECT_ID, TOKEN, FakeCCE

HOUR = 3600.0


@pytest.fixture
def cce() -> FakeCCE:
    """An empty stand-in project."""
    return FakeCCE()


@pytest.fixture
async def server(cce: FakeCCE, aiohttp_server: AiohttpServer) -> TestServer:
    """Serve the stand-in on loopback."""
    served: TestServer = await aiohttp_server(cce.app())
    return served


def _settings(server: TestServer) -> Settings:
    return Settings(
        endpoint=str(server.make_url("")).rstrip("/"),
        project_id=PROJECT_ID,
        auth_token=SecretStr(TOKEN),
        discover=True,
        finished_retention=HOUR,
    )


async def _passes(ex: Exporter, count: int) -> list[Any]:
    """Read the lists and poll what is due, `count` times; return the passes."""
    assert ex.discovery is not None
    passes = []
    for _ in range(count):
        passes.append(await ex.discovery.refresh())
        await ex.scheduler.poll_due(jitter=False)
    return passes


def _job_ids(ex: Exporter, root: str) -> set[str]:
    text = ex.renderer.render(ex.store).decode()
    return {
        dict(key)["job_id"]
        for name, key in parse_series(text)
        if name == "cce_job_info" and dict(key)["root_job_id"] == root
    }


@pytest.mark.parametrize("api", list(Api))
async def test_a_job_listed_finished_without_subjobs_gets_its_tree_from_one_read(
    cce: FakeCCE, server: TestServer, api: Api
) -> None:
    """Listed Failed with no `subjobs` key: one read by ID, on its API, gives the whole tree."""
    now = time.time()
    cce.add_listed(
        "bare",
        created=now - 600,
        updated=now - 60,
        phase="Failed",
        reason="boom",
        subjobs=3,
        listed_subjobs=False,
        api=api,
    )
    async with exporter(_settings(server)) as ex:
        first, *_ = await _passes(ex, 3)
        state = ex.store.get("bare")
        job_ids = _job_ids(ex, "bare")
    assert (first.watched, first.stored_finished) == (1, 0)
    reads = cce.requests if api is Api.CCE else cce.autopilot_requests
    others = cce.autopilot_requests if api is Api.CCE else cce.requests
    assert reads == {"bare": 1}
    assert others.total() == 0
    assert state is not None
    assert state.finished
    assert state.tree is not None
    assert [node.phase for node in state.tree.nodes] == ["Failed"] * 4
    assert job_ids == {"bare", "bare-sub0", "bare-sub1", "bare-sub2"}


async def test_a_job_listed_finished_with_subjobs_even_empty_costs_no_read(
    cce: FakeCCE, server: TestServer
) -> None:
    """Listed with a `subjobs` list, two steps or none: stored from the list, no read at all."""
    now = time.time()
    cce.add_listed("steps", created=now - 600, updated=now - 60, phase="Success", subjobs=2)
    cce.add_listed("alone", created=now - 600, updated=now - 60, phase="Success", subjobs=0)
    cce.add_listed(
        "ap-steps",
        created=now - 600,
        updated=now - 60,
        phase="Failed",
        subjobs=1,
        api=Api.AUTOPILOT,
    )
    async with exporter(_settings(server)) as ex:
        first, *_ = await _passes(ex, 3)
        trees = {
            state.job_id: len(state.tree.nodes) for state in ex.store if state.tree is not None
        }
    assert (first.watched, first.stored_finished) == (0, 3)
    assert cce.requests.total() == cce.autopilot_requests.total() == 0
    assert trees == {"steps": 3, "alone": 1, "ap-steps": 2}
