import gzip
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from exporter.errors import ErrorKind
from exporter.jobs.clusters import Cluster, ClusterDirectory, ClusterKind
from exporter.jobs.state import JobState, JobStore
from exporter.jobs.tree import flatten
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.exposition import Renderer
from exporter.server.endpoints import WebContext, create_app
from exporter.server.statuspage import (
    Filters,
    StatusViews,
    human_duration,
    iso_time,
    jobs_json,
    page,
    render_html,
    views,
)
from tests.standins.jobs import EXAMPLE_JOB_ID, job_object

# 2018-08-02 08:12:40.672772389 UTC, the example job's creation.
CREATED = 1533197560.672772389
UPDATED = 1533198110.478108569
NOW = CREATED + 3600


def _put(store: JobStore, job: dict[str, Any], job_id: str) -> None:
    store.put(JobState(job_id).succeeded(flatten(job, job_id), NOW - 60))


def _store(example_job: dict[str, Any]) -> JobStore:
    """Hold a failed, a stuck, a running and a succeeded job, a failing one and an unpolled one.

    The example job (CreateCluster) has run exactly its stuck threshold (1 h):
    not longer, so it counts as running.
    """
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
    # Older than the failed job above: shown after it.
    old = job_object("job-failed-old", "Failed", job_type="DeleteNode", created=NOW - 86400)
    _put(store, old, "job-failed-old")
    waiting = job_object("sub-wait", "Initializing", job_type="UpgradeNode", created=NOW - 9000)
    upgrade = job_object(
        "job-stuck", "Running", [waiting], job_type="UpgradeCluster", created=NOW - 10801
    )
    _put(store, upgrade, "job-stuck")
    done = job_object(
        "job-done",
        "Success",
        job_type="CreateNode",
        cluster="c-3",
        resource_name="node-a",
        created=NOW - 7200,
    )
    _put(store, done, "job-done")
    return store


# The order of both views: failed, stuck, running (unread ones as newest), succeeded.
ORDER = [
    "job-failed",
    "job-failed-old",
    "job-stuck",
    "job-new",
    "job-unreadable",
    EXAMPLE_JOB_ID,
    "job-done",
]


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
    assert set(by_id) == set(ORDER)
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


def test_both_views_put_problems_first(example_job: dict[str, Any]) -> None:
    """Failed, then stuck, then running, then succeeded jobs; newest first within each group."""
    ids = [job["job_id"] for job in jobs_json(_store(example_job), "p1", NOW)["jobs"]]
    assert ids == ORDER
    html = render_html(_store(example_job), "p1", NOW)
    assert re.findall(r'<article class="job \w+" id="job-([^"]+)"', html) == ORDER
    assert re.findall(r"<h2>(\w+) \(\d+\)</h2>", html) == [
        "Failed",
        "Stuck",
        "Running",
        "Succeeded",
    ]
    assert html.index('class="summary"') < html.index("<article")


def test_stuck_follows_the_alert_thresholds(example_job: dict[str, Any]) -> None:
    """A job is stuck once it runs longer than its type's threshold, not at the threshold."""
    jobs = {job["job_id"]: job for job in jobs_json(_store(example_job), "p1", NOW)["jobs"]}
    assert jobs["job-stuck"]["stuck"] is True  # UpgradeCluster: 3 h and 1 s
    assert jobs[EXAMPLE_JOB_ID]["stuck"] is False  # CreateCluster: exactly 1 h
    assert jobs["job-failed-old"]["stuck"] is False  # finished, however old
    page_text = render_html(_store(example_job), "p1", NOW)
    assert '<span class="stuckmark" title="longer than 3h 0m">stuck</span>' in page_text


def test_problem_trees_are_open_and_others_folded(example_job: dict[str, Any]) -> None:
    """Failed and stuck trees are open, the others closed; the root is not its own first row."""
    html = render_html(_store(example_job), "p1", NOW)
    cards = dict(re.findall(r'<article class="job \w+" id="job-([^"]+)"(.*?)</article>', html))
    assert '<details class="tree" open>' in cards["job-failed"]
    assert '<details class="tree" open>' in cards["job-stuck"]
    assert '<details class="tree">' in cards[EXAMPLE_JOB_ID]
    assert "<details" not in cards["job-done"]  # no sub-jobs: nothing to fold
    rows = re.findall(r'<li class="node"[^>]*data-job-id="([^"]+)"', cards[EXAMPLE_JOB_ID])
    assert EXAMPLE_JOB_ID not in rows
    assert len(rows) == 2


def test_initializing_steps_show_as_waiting(example_job: dict[str, Any]) -> None:
    """A step not started yet says waiting (never started once its job ended), not a duration."""
    store = _store(example_job)
    skipped = job_object("sub-skipped", "Initializing", job_type="ConfigureNode")
    _put(store, job_object("job-ended", "Failed", [skipped], created=NOW - 60), "job-ended")
    html = render_html(store, "p1", NOW)
    ended = re.search(r'<li class="node"[^>]*data-job-id="sub-skipped".*?</li>', html)
    assert ended is not None
    assert '<span class="muted">never started</span>' in ended.group(0)
    row = re.search(r'<li class="node"[^>]*data-job-id="sub-wait".*?</li>', html)
    assert row is not None
    assert '<span class="muted">waiting</span>' in row.group(0)
    assert "2h 30m" not in row.group(0)


def test_cards_show_the_failed_step_the_reason_and_a_json_link(
    example_job: dict[str, Any],
) -> None:
    """A failed job's card names its failed step and reason, its cluster, and links its JSON."""
    html = render_html(_store(example_job), "p1", NOW)
    card = re.search(r'id="job-job-failed".*?</article>', html)
    assert card is not None
    assert "Failed step: InstallNode." in card.group(0)
    assert "Something bad happened at server" in card.group(0)
    assert "cluster c-2" in card.group(0)
    assert 'href="api/v1/jobs/job-failed"' in card.group(0)


def test_status_messages_show_on_cards_rows_and_in_json() -> None:
    """`status.message`, the details of a job's state, shows on its card, its row and in JSON."""
    store = JobStore()
    sub = job_object("sub-slow", "Running", job_type="InstallNode")
    sub["status"]["message"] = "waiting for the ECS server <to boot>"
    job = job_object("job-msg", "Running", [sub], created=NOW - 60)
    job["status"]["message"] = "2 of 3 steps left"
    _put(store, job, "job-msg")
    html = render_html(store, "p1", NOW)
    card = re.search(r'id="job-job-msg".*?</article>', html)
    assert card is not None
    assert '<p class="message">2 of 3 steps left</p>' in card.group(0)
    row = re.search(r'<li class="node"[^>]*data-job-id="sub-slow".*?</li>', html)
    assert row is not None
    assert "waiting for the ECS server &lt;to boot&gt;" in row.group(0)
    nodes = jobs_json(store, "p1", NOW)["jobs"][0]["nodes"]
    assert [node["message"] for node in nodes] == [
        "2 of 3 steps left",
        "waiting for the ECS server <to boot>",
    ]


def test_page_shows_phases_progress_and_reasons(example_job: dict[str, Any]) -> None:
    """The page has a section per job, phase badges, a progress bar and the failure reasons."""
    page = render_html(_store(example_job), "p1", NOW)
    parser = _Text()
    parser.feed(page)
    text = " ".join(parser.text)
    assert page.count('<article class="job') == 7
    assert '<span class="phase running">Running</span>' in page
    assert '<span class="phase failed">Failed</span>' in page
    assert "2/2 sub-jobs done" in text
    assert "Something bad happened at server" in text
    assert "running for 1h 0m" in text
    assert "took 30m 0s" in text
    assert "last good poll 5s ago" in text
    assert "Last poll failed" in text
    assert "not polled yet" in text
    joined = "".join(parser.text)
    assert "7 watched job(s): 2 Failed, 1 stuck, 2 Running, 1 Success, 2 not read yet." in joined
    assert "Polls failing for 1: job-unreadable." in joined


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
    assert page.count('<li class="node"') == 3000
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
    """The real HTTP app over the test store, its status views at NOW."""
    renderer = Renderer(instruments.registry)
    # The views' clock stands still at NOW: ages and stuck jobs are as in the other tests.
    views = StatusViews(clock=lambda: NOW)
    context = WebContext(_store(example_job), renderer, lambda: True, "p1", views)
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
    assert len(doc["jobs"]) == 7


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


def _ids(html: str) -> list[str]:
    return re.findall(r'<article class="job \w+" id="job-([^"]+)"', html)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("phase=Failed", ["job-failed", "job-failed-old"]),
        ("phase=running", ["job-stuck", EXAMPLE_JOB_ID]),
        ("phase=Success&phase=Failed", ["job-failed", "job-failed-old", "job-done"]),
        ("type=UpgradeCluster", ["job-stuck"]),
        ("cluster=c-3", ["job-done"]),
        ("q=FAILED", ["job-failed", "job-failed-old"]),  # job IDs, any case
        ("q=node-a", ["job-done"]),  # resource names
        ("q=sub-wait", ["job-stuck"]),  # sub-jobs too
        ("phase=Failed&type=DeleteNode", ["job-failed-old"]),
        ("phase=Failed&cluster=c-2&q=job", ["job-failed"]),
        ("phase=Success&type=DeleteNode", []),
    ],
)
async def test_filters_apply_to_both_views(
    client: TestClient[Any, Any], query: str, expected: list[str]
) -> None:
    """Each filter, and filters combined, select the same jobs on the page and in the JSON."""
    html = await (await client.get(f"/jobs?{query}")).text()
    assert _ids(html) == expected
    doc = await (await client.get(f"/api/v1/jobs?{query}")).json()
    assert [job["job_id"] for job in doc["jobs"]] == expected
    # The summary still counts every watched job.
    assert "7 watched job(s)" in html


async def test_links_keep_the_filters(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JSON link, the pages and the filter form carry the filters of the page."""
    monkeypatch.setattr(page, "PAGE_SIZE", 1)
    html = await (await client.get("/jobs?type=DeleteNode&type=ScaleupCluster&q=job")).text()
    kept = "q=job&amp;type=DeleteNode&amp;type=ScaleupCluster"
    # The filter values are listed in a fixed order, whatever order the request gave them.
    assert f'href="api/v1/jobs?{kept.replace("q=job&amp;", "")}&amp;q=job"' in html
    assert f'rel="next" href="jobs?{kept.replace("q=job&amp;", "")}&amp;q=job&amp;page=2"' in html
    assert 'name="q" value="job"' in html
    second = await (await client.get(f"/jobs?{kept.replace('&amp;', '&')}&page=2")).text()
    assert _ids(second) == ["job-failed-old"]
    assert 'rel="prev" href="jobs?type=DeleteNode&amp;type=ScaleupCluster&amp;q=job"' in second


async def test_views_are_gzipped_when_asked(client: TestClient[Any, Any]) -> None:
    """Both views and one job's JSON come gzipped to a client that accepts it, plain otherwise."""
    for path in ("/jobs", "/api/v1/jobs?phase=failed", "/api/v1/jobs/job-failed"):
        plain = await client.get(path, headers={"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in plain.headers
        assert plain.headers["Vary"] == "Accept-Encoding"
        packed = await client.get(path, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
        assert packed.headers["Content-Encoding"] == "gzip"
        body = await packed.read()
        assert len(body) < len(await plain.read())
        assert gzip.decompress(body) == await plain.read()


async def test_one_job_has_its_own_json(client: TestClient[Any, Any]) -> None:
    """GET /api/v1/jobs/{id} gives one watched job; 404 when not watched, 400 for a bad ID."""
    response = await client.get("/api/v1/jobs/job-failed")
    assert response.status == 200
    doc = await response.json()
    assert doc["project_id"] == "p1"
    assert doc["job"]["job_id"] == "job-failed"
    assert [node["job_id"] for node in doc["job"]["nodes"]] == ["job-failed", "sub-x"]
    missing = await client.get("/api/v1/jobs/job-elsewhere")
    assert missing.status == 404
    assert (await missing.json())["job_id"] == "job-elsewhere"
    for bad in ("-starts-with-dash", "x" * 65, "semi;colon"):
        assert (await client.get(f"/api/v1/jobs/{bad}")).status == 400


def test_the_page_shows_at_most_a_page_of_jobs_and_counts_them_all() -> None:
    """Past PAGE_SIZE jobs the page stops, says how many match and links the next page."""
    store = JobStore()
    extra = page.PAGE_SIZE + 3
    for n in range(extra):
        sub = job_object(f"s-{n}", "Success")
        _put(store, job_object(f"j-{n:04d}", "Success", [sub], created=NOW - n), f"j-{n:04d}")
    first = render_html(store, "p", NOW)
    assert _ids(first) == [f"j-{n:04d}" for n in range(page.PAGE_SIZE)]
    assert f"Showing 1-{page.PAGE_SIZE} of {extra} job(s), page 1 of 2" in first
    assert 'rel="next" href="jobs?page=2"' in first
    last = render_html(store, "p", NOW, Filters(), page=2)
    assert _ids(last) == [f"j-{n:04d}" for n in range(page.PAGE_SIZE, extra)]
    # A page past the last shows the last; the full tree of a job is on its card.
    assert render_html(store, "p", NOW, Filters(), page=99) == last
    assert 'data-job-id="s-101"' in last


async def test_views_of_other_filters_are_kept_within_a_bound(
    example_job: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each filter's view is kept for the same snapshot, until the views outgrow their bound."""
    built: list[Filters] = []
    real = views.render_html

    def counting(*args: Any, **kwargs: Any) -> str:
        built.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(views, "render_html", counting)
    store, status = _store(example_job), StatusViews(clock=lambda: NOW)
    failed, done = Filters(phase=("failed",)), Filters(phase=("success",))
    for filters in (failed, done, failed, done):
        await status.html(store, "p1", filters)
    assert built == [failed, done]
    monkeypatch.setattr(views, "MAX_VIEW_BYTES", 1)  # room for the newest view only
    running = Filters(phase=("running",))
    for filters in (running, failed, done):
        await status.html(store, "p1", filters)
    assert built == [failed, done, running, failed, done]


@dataclass
class _Lists:
    """A cluster directory holder, as the cluster refresher is one."""

    directory: ClusterDirectory

    async def first_read(self) -> ClusterDirectory:
        return self.directory


def _cluster(cluster_id: str, name: str) -> Cluster:
    return Cluster(cluster_id, name, ClusterKind.CCE, "Available", "CCE", "VirtualMachine", "", "")


async def test_clusters_are_filtered_and_shown_by_name(
    aiohttp_client: AiohttpClient, instruments: Instruments, example_job: dict[str, Any]
) -> None:
    """The cluster filter takes a name from the cluster lists; cards and JSON name the cluster."""
    lists = _Lists(ClusterDirectory([_cluster("c-2", "prod-eu"), _cluster("c-3", "edge")]))
    context = WebContext(
        _store(example_job),
        Renderer(instruments.registry),
        lambda: True,
        "p1",
        StatusViews(clock=lambda: NOW),
        clusters=lists,
    )
    client = await aiohttp_client(create_app(context))
    html = await (await client.get("/jobs?cluster=edge")).text()
    assert _ids(html) == ["job-done"]
    assert "cluster edge (c-3)" in html
    doc = await (await client.get("/api/v1/jobs?cluster=prod-eu&cluster=edge")).json()
    named = {job["job_id"]: job["cluster_name"] for job in doc["jobs"]}
    assert named["job-done"] == "edge"
    assert set(named.values()) == {"prod-eu", "edge"}
    # A rename shows on the next request, though no job changed.
    lists.directory = ClusterDirectory([_cluster("c-3", "edge-renamed")])
    html = await (await client.get("/jobs?cluster=edge-renamed")).text()
    assert _ids(html) == ["job-done"]
    assert "cluster edge-renamed (c-3)" in html
