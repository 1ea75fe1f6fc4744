import gzip
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from pytest_aiohttp import AiohttpClient

from exporter.jobs.state import JobState, JobStore
from exporter.jobs.tree import flatten
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.exposition import Renderer
from exporter.server.endpoints import WebContext, create_app, wants_gzip, wants_openmetrics
from tests.conftest import parse_series
from tests.standins.jobs import EXAMPLE_JOB_ID


@pytest.fixture
async def web(
    aiohttp_client: AiohttpClient, instruments: Instruments, example_job: dict[str, Any]
) -> tuple[TestClient[Any, Any], JobStore]:
    """The real HTTP app over a store holding one polled and one unpolled job."""
    store = JobStore()
    store.put(JobState(EXAMPLE_JOB_ID).succeeded(flatten(example_job, EXAMPLE_JOB_ID), 5.0))
    store.put(JobState("waiting"))
    context = WebContext(store, Renderer(instruments.registry), lambda: False)
    return await aiohttp_client(create_app(context)), store


async def test_metrics_serves_text_format(web: tuple[TestClient[Any, Any], JobStore]) -> None:
    """/metrics answers the text format, which prometheus-client's parser reads."""
    client, _ = web
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    series = parse_series(await response.text())
    assert any(name == "cce_job_info" for name, _ in series)
    assert any(name == "cce_exporter_build_info" for name, _ in series)
    assert any(name.startswith("process_") for name, _ in series)


async def test_metrics_serves_openmetrics_when_asked(
    web: tuple[TestClient[Any, Any], JobStore],
) -> None:
    """A scraper that asks for OpenMetrics gets it, ending in # EOF."""
    client, _ = web
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    response = await client.get("/metrics", headers={"Accept": accept})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    text = await response.text()
    assert text.endswith("# EOF\n")
    names = {family.name for family in parse_openmetrics(text)}
    assert {"cce_job_info", "cce_job_poll_errors", "cce_exporter_api_requests"} <= names


async def test_metrics_is_gzipped_when_asked(web: tuple[TestClient[Any, Any], JobStore]) -> None:
    """With Accept-Encoding gzip the body is gzip and decodes to the same series."""
    client, _ = web
    response = await client.get(
        "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert response.headers["Content-Encoding"] == "gzip"
    text = gzip.decompress(await response.read()).decode()
    assert 'cce_job_poll_success{job_id="' + EXAMPLE_JOB_ID in text
    plain = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers


async def test_dropped_job_disappears_from_metrics(
    web: tuple[TestClient[Any, Any], JobStore],
) -> None:
    """Once a job leaves the store, /metrics has no series of it."""
    client, store = web
    assert EXAMPLE_JOB_ID in await (await client.get("/metrics")).text()
    store.remove(EXAMPLE_JOB_ID)
    assert EXAMPLE_JOB_ID not in await (await client.get("/metrics")).text()


async def test_health_readiness_and_landing(web: tuple[TestClient[Any, Any], JobStore]) -> None:
    """/healthz is 200, /readyz 503 while a job waits for its first poll, / links the rest."""
    client, _ = web
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert "1 job(s) not polled yet" in await ready.text()
    landing = await client.get("/")
    page = await landing.text()
    assert landing.status == 200
    for link in ('href="metrics"', 'href="healthz"', 'href="readyz"'):
        assert link in page


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, GZIP;q=0.5", True),
        ("gzip;q=0", False),
        ("GZIP;Q=0", False),
        ("gzip;q=0.0000", False),
        ("gzip;q=nonsense", False),
        ("*", True),
        ("*;q=0", False),
        ("gzip;q=0, *", False),
        ("identity", False),
        ("", False),
    ],
)
def test_gzip_negotiation(header: str, expected: bool) -> None:
    """A gzip body is sent only when the scraper accepts gzip with a non-zero weight."""
    assert wants_gzip(header) is expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/openmetrics-text; version=1.0.0", True),
        ("Application/OpenMetrics-Text; version=1.0.0", True),
        # What Prometheus sends: OpenMetrics first, text as the fallback.
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            True,
        ),
        ("application/openmetrics-text;q=0, text/plain", False),
        ("application/openmetrics-text;q=0.3, text/plain;q=0.9", False),
        ("text/plain;version=0.0.4", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_openmetrics_negotiation(header: str, expected: bool) -> None:
    """OpenMetrics is chosen when Accept names it with a weight no lower than plain text's."""
    assert wants_openmetrics(header) is expected
