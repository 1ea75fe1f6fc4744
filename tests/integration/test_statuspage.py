import re
from html.parser import HTMLParser
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from exporter.errors import ErrorKind
from exporter.jobs.state import JobState, JobStore
from exporter.jobs.tree import flatten
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.exposition import Renderer
from exporter.server.endpoints import WebContext, create_app
from exporter.server.statuspage import human_duration, iso_time, jobs_json, render_html
from tests.standins.jobs import EXAMPLE_JOB_ID

# 2018-08-02 08:12:40.672772389 UTC, the example job's creation.
CREATED = 1533197560.672772389
UPDATED = 1533198110.478108569
NOW = CREATED + 3600


def _store(example_job: dict[str, Any]) -> JobStore:
    """Hold the example job (Running), a failed one, a failing one and an unpolled one."""
    store = JobStore()
    store.put(JobState(EXAMPLE_JOB_ID).succeeded(flatten(example_job, EXAMPLE_JOB_ID), NOW - 5))
    failed = {
        "metadata": {
            "uid": "job-failed",
            "creationTimestamp": "2018-08-02 07:00:00 +0000 UTC",
            "updateTimestamp": "2018-08-02 07:30:00 +0000 UTC",
        },
        "spec": {
            "type": "ScaleupCluster",
            "clusterUID": "c-2",
            "resourceName": "<script>alert(1)</script>",
            "subJobs": [
                {
                    "metadata": {"uid": "sub-x"},
                    "spec": {"type": "InstallNode"},
                    "status": {"phase": "Failed", "reason": 'disk <full> & "gone"'},
                }
            ],
        },
        "status": {"phase": "Failed", "reason": "Something bad happened at server"},
    }
    store.put(JobState("job-failed").succeeded(flatten(failed, "job-failed"), NOW - 60))
    store.put(
        JobState("job-unreadable").failed(
            ErrorKind.UNAUTHORIZED, "unauthorized: HTTP 401: APIG.0301: <b>bad token</b>", NOW
        )
    )
    store.put(JobState("job-new"))
    return store


class _Text(HTMLParser):
    """Collect the visible text and the tags of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_json_lists_every_job_with_its_tree_and_polls(example_job: dict[str, Any]) -> None:
    """The JSON view gives each watched job's poll record and its nodes, root first."""
    doc = jobs_json(_store(example_job), "p1", NOW)
    assert doc["project_id"] == "p1"
    by_id = {job["job_id"]: job for job in doc["jobs"]}
    assert set(by_id) == {EXAMPLE_JOB_ID, "job-failed", "job-unreadable", "job-new"}
    example = by_id[EXAMPLE_JOB_ID]
    assert example["last_poll_ok"] is True
    assert example["finished"] is False
    root, *subs = example["nodes"]
    assert root["job_id"] == EXAMPLE_JOB_ID
    assert root["depth"] == 0
    assert root["job_type"] == "CreateCluster"
    assert root["resource_name"] == "cluster-name"
    assert root["created"] == "2018-08-02T08:12:40.672772Z"
    assert root["progress_ratio"] == 1.0
    assert root["subjobs"] == {"Initializing": 0, "Running": 0, "Success": 2, "Failed": 0}
    # Still Running: its duration is the time since creation.
    assert root["duration_seconds"] == pytest.approx(3600)
    assert [sub["job_type"] for sub in subs] == ["InstallMaster", "CreatePSMCert"]
    assert all(sub["parent_job_id"] == EXAMPLE_JOB_ID and sub["depth"] == 1 for sub in subs)
    failed = by_id["job-failed"]
    assert failed["finished"] is True
    assert failed["nodes"][0]["duration_seconds"] == 1800
    assert failed["nodes"][0]["reason"] == "Something bad happened at server"
    unreadable = by_id["job-unreadable"]
    assert unreadable["last_poll_ok"] is False
    assert unreadable["last_error_kind"] == "unauthorized"
    assert unreadable["poll_errors"]["unauthorized"] == 1
    assert unreadable["nodes"] == []
    assert by_id["job-new"]["last_poll_ok"] is None


def test_jobs_under_way_come_before_finished_ones(example_job: dict[str, Any]) -> None:
    """Both views list unfinished jobs first and finished ones last."""
    ids = [job["job_id"] for job in jobs_json(_store(example_job), "p1", NOW)["jobs"]]
    assert ids[-1] == "job-failed"
    page = render_html(_store(example_job), "p1", NOW)
    assert page.index(f'id="job-{EXAMPLE_JOB_ID}"') < page.index('id="job-failed"')


def test_page_shows_phases_progress_and_reasons(example_job: dict[str, Any]) -> None:
    """The page has a section per job, phase badges, a progress bar and the failure reasons."""
    page = render_html(_store(example_job), "p1", NOW)
    parser = _Text()
    parser.feed(page)
    text = " ".join(parser.text)
    assert page.count('<section class="job') == 4
    assert '<span class="phase running">Running</span>' in page
    assert '<span class="phase failed">Failed</span>' in page
    assert "2/2 sub-jobs done" in text
    assert "Something bad happened at server" in text
    assert "running for 1h 0m" in text
    assert "took 30m 0s" in text
    assert "last good poll 5s ago" in text
    assert "Last poll failed" in text
    assert "not polled yet" in text
    assert "1 Running, 1 Failed, 1 with failing polls" in text


def test_page_escapes_job_data(example_job: dict[str, Any]) -> None:
    """Markup in job data or error text shows as text and never becomes a tag."""
    page = render_html(_store(example_job), "p1", NOW)
    parser = _Text()
    parser.feed(page)
    assert "script" not in parser.tags
    assert "b" not in parser.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "disk &lt;full&gt; &amp; &quot;gone&quot;" in page
    assert "<script>alert(1)</script>" in " ".join(parser.text)


def test_page_loads_nothing_from_outside(example_job: dict[str, Any]) -> None:
    """The page has no script, no external stylesheet, image or font."""
    page = render_html(_store(example_job), "p1", NOW)
    parser = _Text()
    parser.feed(page)
    assert not {"script", "link", "img", "iframe"} & set(parser.tags)
    assert not re.search(r"https?://", page)
    assert "url(" not in page


def test_page_says_when_nothing_is_watched() -> None:
    """An empty store gives a page that says so."""
    page = render_html(JobStore(), "", NOW)
    assert "No jobs are watched." in page


def test_deep_trees_render_without_recursion() -> None:
    """A tree thousands of levels deep renders, with its indentation capped."""
    node: dict[str, Any] = {"spec": {"type": "Leaf"}, "status": {"phase": "Running"}}
    for level in range(3000):
        node = {"metadata": {"uid": f"n{level}"}, "spec": {"type": "Step", "subJobs": [node]}}
    store = JobStore()
    store.put(JobState("deep").succeeded(flatten(node, "deep"), NOW))
    page = render_html(store, "p", NOW)
    assert page.count('<li class="node"') == 3001
    assert "depth 3000" in page
    assert len(jobs_json(store, "p", NOW)["jobs"][0]["nodes"]) == 3001


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "0s"), (59.9, "59s"), (61, "1m 1s"), (3725, "1h 2m"), (90000, "1d 1h")],
)
def test_human_duration(seconds: float | None, text: str) -> None:
    """Durations read the short way: seconds, minutes, hours, days."""
    assert human_duration(seconds) == text


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, instruments: Instruments, example_job: dict[str, Any]
) -> TestClient[Any, Any]:
    """The real HTTP app over the test store."""
    context = WebContext(
        _store(example_job), Renderer("p1", instruments.registry), lambda: True, "p1"
    )
    return await aiohttp_client(create_app(context))


async def test_jobs_page_is_served_with_a_strict_policy(client: TestClient[Any, Any]) -> None:
    """GET /jobs serves the HTML page under a policy that allows no outside content."""
    response = await client.get("/jobs")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "CCE jobs in project p1" in await response.text()


async def test_jobs_api_serves_json(client: TestClient[Any, Any]) -> None:
    """GET /api/v1/jobs serves the same jobs as JSON."""
    response = await client.get("/api/v1/jobs")
    assert response.status == 200
    doc = await response.json()
    assert doc["project_id"] == "p1"
    assert len(doc["jobs"]) == 4


async def test_landing_page_links_the_status_views(client: TestClient[Any, Any]) -> None:
    """The landing page links /jobs and /api/v1/jobs."""
    page = await (await client.get("/")).text()
    assert 'href="jobs"' in page
    assert 'href="api/v1/jobs"' in page


def test_times_beyond_a_datetime_are_shown_as_absent() -> None:
    """A time no datetime can hold is shown as absent, not a failed page."""
    assert iso_time(-62135596800) == "0001-01-01T00:00:00Z"
    assert iso_time(1e20) is None
    assert iso_time(-1e20) is None
