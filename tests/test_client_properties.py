"""Property: whatever JSON value sits at whatever field of a job, the client never crashes."""

import asyncio
import copy
import json
from typing import Any

import aiohttp
from aioresponses import aioresponses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from exporter.auth import TokenAuth
from exporter.client import CCEClient, RetryPolicy
from exporter.errors import ApiError, ErrorKind
from exporter.instruments import Instruments
from exporter.model import JobTree
from tests.conftest import DATA, EXAMPLE_JOB_ID, EXAMPLE_PROJECT_ID

ENDPOINT = "https://cce.cn-north-4.myhuaweicloud.com"
URL = f"{ENDPOINT}/api/v3/projects/{EXAMPLE_PROJECT_ID}/jobs/{EXAMPLE_JOB_ID}"
EXAMPLE: Any = json.loads((DATA / "job-example.json").read_text())

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

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["kind", "metadata", "spec", "status", "subJobs", "phase", "uid"])
            | st.text(max_size=8),
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


async def _show(body: str) -> JobTree | ApiError:
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
                return await client.show_job(EXAMPLE_PROJECT_ID, EXAMPLE_JOB_ID)
            except ApiError as exc:
                return exc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), value=JSON_VALUES)
def test_any_json_at_any_field_gives_a_tree_or_an_api_error(path: Path, value: Any) -> None:
    """Any JSON value at any field of a job gives a JobTree or an ApiError, nothing else."""
    document = _replace(EXAMPLE, path, value)
    outcome = asyncio.run(_show(json.dumps(document)))
    assert isinstance(outcome, JobTree | ApiError)
    if isinstance(outcome, ApiError):
        assert outcome.kind is ErrorKind.INVALID_RESPONSE
    if isinstance(outcome, JobTree):
        assert outcome.root.job_id == EXAMPLE_JOB_ID
        # Whatever else broke, the nodes that were readable are all there, once each.
        ids = [node.job_id for node in outcome.nodes]
        assert len(ids) == len(set(ids))


def test_every_field_of_the_example_is_a_candidate() -> None:
    """The generated paths reach the sub-jobs' deepest fields, and the whole document."""
    assert () in PATHS
    assert ("spec", "subJobs", 1, "status", "phase") in PATHS
    assert ("metadata", "creationTimestamp") in PATHS
