from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.app import exporter
from exporter.errors import ErrorKind
from exporter.jobs.state import JobState
from exporter.jobs.tree import flatten
from exporter.metrics.exposition import Renderer
from exporter.settings.load import load_settings
from tests.conftest import parse_series

# The families whose zeros the sparse form leaves out; every other sample stays.
SPARSE_FAMILIES = ("cce_job_status_phase", "cce_job_subjobs", "cce_job_poll_errors_total")
_PHASES = st.sampled_from([None, "Initializing", "Running", "Success", "Failed", "Paused"])
# Times that give zeros elsewhere too: the epoch, and a job updated as it was created.
_TIMES = st.sampled_from([None, "1970-01-01T00:00:00Z", "2025-01-01 10:00:00 +0000 UTC"])


def _node(uid: str, phase: str | None, created: str | None, updated: str | None) -> dict[str, Any]:
    node: dict[str, Any] = {"metadata": {"uid": uid}, "spec": {"type": "Step"}, "status": {}}
    if phase is not None:
        node["status"]["phase"] = phase
    for field, value in (("creationTimestamp", created), ("updateTimestamp", updated)):
        if value is not None:
            node["metadata"][field] = value
    return node


def _trees() -> st.SearchStrategy[dict[str, Any]]:
    leaf = st.builds(_node, st.uuids().map(str), _PHASES, _TIMES, _TIMES)

    def parent(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
        def build(node: dict[str, Any], subs: list[dict[str, Any]]) -> dict[str, Any]:
            node["spec"]["subJobs"] = subs
            return node

        return st.builds(build, leaf, st.lists(children, max_size=5))

    return st.recursive(leaf, parent, max_leaves=30)


# A job's polls: True a good read, else the kind of error of a failed one.
_POLLS = st.lists(st.booleans() | st.sampled_from(list(ErrorKind)), max_size=6)


def _state(job_id: str, job: dict[str, Any], polls: list[bool | ErrorKind]) -> JobState:
    state = JobState(job_id)
    for n, poll in enumerate(polls):
        if poll is True:
            state = state.succeeded(flatten(job, job_id), 1_000.0 + n)
        else:
            kind = ErrorKind.TIMEOUT if poll is False else poll
            state = state.failed(kind, "failed", 1_000.0 + n)
    return state


def _samples(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def _zero_of_sparse_family(line: str) -> bool:
    return line.startswith(SPARSE_FAMILIES) and line.endswith(" 0.0")


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_trees(), _POLLS), max_size=4))
def test_sparse_is_the_dense_form_without_its_zeros(jobs: list[tuple[dict[str, Any], Any]]) -> None:
    """The sparse form is the dense one, in the same order, less the zeros of three families."""
    states = [_state(f"job-{n}", job, polls) for n, (job, polls) in enumerate(jobs)]
    dense = Renderer(CollectorRegistry()).render(states).decode()
    sparse = Renderer(CollectorRegistry(), sparse=True).render(states).decode()
    expected = [line for line in _samples(dense) if not _zero_of_sparse_family(line)]
    assert _samples(sparse) == expected
    # Every other zero stays: the sparse form drops nothing but those.
    dense_series, sparse_series = parse_series(dense), parse_series(sparse)
    dropped = dense_series.keys() - sparse_series.keys()
    assert all(
        name in SPARSE_FAMILIES and dense_series[name, labels] == 0 for name, labels in dropped
    )
    assert all(dense_series[key] == value for key, value in sparse_series.items())
    assert {line for line in sparse.splitlines() if line.startswith("#")} <= set(dense.splitlines())


def test_sparse_form_at_most_halves_a_typical_job() -> None:
    """A running job of ten steps costs at most half the series in the sparse form."""
    steps = [_node(f"s{n}", "Success" if n < 4 else "Initializing", None, None) for n in range(10)]
    root = _node("root", "Running", "2025-01-01 10:00:00 +0000 UTC", None)
    root["spec"]["subJobs"] = steps
    state = _state("root", root, [True, True])
    dense = _samples(Renderer(CollectorRegistry()).render([state]).decode())
    sparse = _samples(Renderer(CollectorRegistry(), sparse=True).render([state]).decode())
    assert len(sparse) <= len(dense) / 2


async def test_the_setting_makes_the_service_render_the_sparse_form() -> None:
    """`sparse_metrics: true` gives the service's renderer the sparse form; false the dense."""
    base = {"endpoint": "http://127.0.0.1:9", "project_id": "p", "auth_token": "t"}
    job = _node("root", "Running", None, None)
    for value, phases in (("false", 4), ("true", 1)):
        async with exporter(load_settings({**base, "sparse_metrics": value})) as ex:
            ex.store.put(_state("root", job, [True]))
            text = ex.renderer.render(ex.store).decode()
        assert text.count("cce_job_status_phase{") == phases
