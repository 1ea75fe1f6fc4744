"""Property: whatever JSON value sits at whatever field of a job, the client never crashes.

Strings include lone surrogates, which JSON can spell and `json.loads` keeps:
whatever the client returns must render into pages that encode as UTF-8.
"""

import asyncio
import copy
import json
from typing import Any

import aiohttp
from aioresponses import aioresponses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from exporter.cce.auth.base import TokenAuth
from exporter.cce.client import CCEClient, RetryPolicy
from exporter.errors import ApiError, ErrorKind
from exporter.jobs.state import JobState
from exporter.jobs.tree import JobTree
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.exposition import Renderer
from exporter.server.statuspage import jobs_json, render_html
from tests.conftest import labels, parse_series
from tests.standins.cce import PROJECT_ID
from tests.standins.jobs import EXAMPLE_JOB_ID, example_job

ENDPOINT = "https://cce.cn-north-4.myhuaweicloud.com"
URL = f"{ENDPOINT}/api/v3/projects/{PROJECT_ID}/jobs/{EXAMPLE_JOB_ID}"
EXAMPLE = example_job()

Path = tuple[str | int, ...]


def _paths(value: Any, path: Path = ()) -> list[Path]:
    """Every place in a JSON value: the value itself, each key and each list item, deep."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


PATHS = _paths(EXAMPLE)

# Text with lone surrogates often among its pieces (drawn from all code points,
# hypothesis would give one a tiny share of the time).
TEXT = st.lists(st.text(max_size=6) | st.characters(categories=["Cs"]), max_size=5).map("".join)

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["kind", "metadata", "spec", "status", "subJobs", "phase", "uid"])
            | TEXT.filter(lambda key: len(key) <= 8),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


def _replace(document: Any, path: Path, value: Any) -> Any:
    """A copy of `document` with `value` at `path` (the whole document for the empty path)."""
    if not path:
        return value
    result = copy.deepcopy(document)
    parent = result
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return result


async def _show(body: bytes) -> JobTree | ApiError:
    """Serve `body` as the job and read it through a real client; return the tree or error."""
    async with aiohttp.ClientSession() as session:
        client = CCEClient(
            session,
            ENDPOINT,
            TokenAuth(SecretStr("tok")),
            Instruments(),
            timeout=5,
            retry=RetryPolicy(attempts=1),
        )
        with aioresponses() as mock:
            mock.get(URL, status=200, body=body)
            try:
                return await client.show_job(PROJECT_ID, EXAMPLE_JOB_ID)
            except ApiError as exc:
                return exc


def _encode(document: Any, *, escaped: bool) -> bytes:
    """Write `document` as JSON, a lone surrogate either escaped or as its raw bytes."""
    if escaped:
        return json.dumps(document).encode()
    return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _assert_renders(outcome: JobTree | ApiError) -> None:
    """The outcome, stored as a poll's, renders on /metrics, /jobs and /api/v1/jobs as UTF-8."""
    now = 1_700_000_000.0
    state = JobState(EXAMPLE_JOB_ID, project_id=PROJECT_ID)
    if isinstance(outcome, JobTree):
        state = state.succeeded(outcome, now)
    else:
        state = state.failed(outcome.kind, str(outcome), now)
    renderer = Renderer(Instruments().registry)
    series = parse_series(renderer.render([state]).decode())
    poll = labels(job_id=EXAMPLE_JOB_ID, project_id=PROJECT_ID)
    assert series[("cce_job_poll_success", poll)] == float(isinstance(outcome, JobTree))
    assert renderer.render([state], openmetrics=True).decode().endswith("# EOF\n")
    assert render_html([state], PROJECT_ID, now).encode()
    assert json.dumps(jobs_json([state], PROJECT_ID, now), ensure_ascii=False).encode()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# A bare string as often as any JSON value: most fields that reach a page are text.
@given(path=st.sampled_from(PATHS), value=TEXT | JSON_VALUES, escaped=st.booleans())
def test_any_json_at_any_field_gives_a_tree_or_an_api_error(
    path: Path, value: Any, escaped: bool
) -> None:
    """Any JSON value at any field of a job gives a JobTree or an ApiError that renders."""
    document = _replace(EXAMPLE, path, value)
    outcome = asyncio.run(_show(_encode(document, escaped=escaped)))
    assert isinstance(outcome, JobTree | ApiError)
    if isinstance(outcome, ApiError):
        assert outcome.kind is ErrorKind.INVALID_RESPONSE
    if isinstance(outcome, JobTree):
        assert outcome.root.job_id == EXAMPLE_JOB_ID
        # Whatever else broke, the nodes that were readable are all there, once each.
        ids = [node.job_id for node in outcome.nodes]
        assert len(ids) == len(set(ids))
    _assert_renders(outcome)


def test_every_field_of_the_example_is_a_candidate() -> None:
    """The generated paths reach the sub-jobs' deepest fields, and the whole document."""
    assert () in PATHS
    assert ("spec", "subJobs", 1, "status", "phase") in PATHS
    assert ("metadata", "creationTimestamp") in PATHS
