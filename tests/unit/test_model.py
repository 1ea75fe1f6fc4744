import copy
import json
import re
from dataclasses import astuple
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.jobs.tree import MAX_NODES, InvalidJobError, Job, JobNode, NodeFacts, flatten
from tests.standins.jobs import EXAMPLE_JOB_ID


def test_example_flattens_to_three_nodes(example_job: dict[str, Any]) -> None:
    """The API page's example gives the root and its two sub-jobs with all their fields."""
    tree = flatten(example_job, EXAMPLE_JOB_ID)
    root, master, cert = tree.nodes
    assert tree.parse_errors == ()
    assert (root.job_id, root.parent_job_id, root.depth) == (EXAMPLE_JOB_ID, "", 0)
    assert (root.job_type, root.phase, root.resource_name) == (
        "CreateCluster",
        "Running",
        "cluster-name",
    )
    assert root.cluster_id == "4d1ecb2c-229a-11e8-9c75-0255ac100ceb"
    assert root.subjob_phases == (
        ("Initializing", 0),
        ("Running", 0),
        ("Success", 2),
        ("Failed", 0),
    )
    assert (master.job_id, master.parent_job_id, master.depth) == (
        "fd474fab-9606-11e8-baa9-0255ac10215d",
        EXAMPLE_JOB_ID,
        1,
    )
    assert master.updated_ns is not None
    assert master.created_ns is not None
    assert master.updated_ns - master.created_ns == 774_580_423_413
    assert master.subjob_phases is None
    assert (cert.job_type, cert.resource_id, cert.phase) == ("CreatePSMCert", "", "Success")


def test_root_is_named_by_the_watched_id(example_job: dict[str, Any]) -> None:
    """The watched job keeps the ID it is watched under, whatever its uid says."""
    example_job["metadata"]["uid"] = "something-else"
    assert flatten(example_job, "watched").root.job_id == "watched"


@pytest.mark.parametrize(
    "data",
    [
        {"metadata": {}},
        {"status": {}},
        {"spec": {"subJobs": [{}]}},
        {"metadata": None, "spec": None, "status": {"phase": None}},
    ],
)
def test_missing_fields_at_every_level_are_empty(data: dict[str, Any]) -> None:
    """A job with fields missing at any level flattens with empty values and no error."""
    tree = flatten(data, "job-1")
    root = tree.root
    assert (root.job_type, root.cluster_id, root.reason, root.phase) == ("", "", "", None)
    assert root.created_ns is None
    assert root.updated_ns is None
    assert "metadata.uid" in tree.parse_errors or len(tree.nodes) == 1


def test_wrong_types_cost_only_their_value(example_job: dict[str, Any]) -> None:
    """A field of the wrong type is dropped and reported; the rest of the job stays."""
    example_job["spec"]["type"] = 42
    example_job["metadata"]["creationTimestamp"] = "not a time"
    example_job["spec"]["subJobs"][0]["status"] = "Success"
    example_job["spec"]["subJobs"].append("not a job")
    tree = flatten(example_job, EXAMPLE_JOB_ID)
    assert tree.root.job_type == ""
    assert tree.root.created_ns is None
    assert tree.root.updated_ns is not None
    assert tree.nodes[1].phase is None
    assert len(tree.nodes) == 3
    assert sorted(tree.parse_errors) == [
        "metadata.creationTimestamp",
        "spec.subJobs",
        "spec.type",
        "status",
    ]


def test_unknown_phase_is_kept_and_counted() -> None:
    """A phase outside the four is reported as it came, and counted among the sub-jobs."""
    data = {
        "status": {"phase": "Paused"},
        "spec": {"subJobs": [{"metadata": {"uid": "a"}, "status": {"phase": "Paused"}}]},
    }
    tree = flatten(data, "root")
    assert tree.root.phase == "Paused"
    assert tree.root.finished is False
    assert dict(tree.root.subjob_phases or ()) == {
        "Initializing": 0,
        "Running": 0,
        "Success": 0,
        "Failed": 0,
        "Paused": 1,
    }


def test_progress_counts_every_direct_sub_job() -> None:
    """Progress is Success over all direct sub-jobs, those without a phase included."""
    data = {"spec": {"subJobs": [{"status": {"phase": "Success"}}, {"metadata": {"uid": "x"}}]}}
    root = flatten(data, "root").root
    assert root.subjob_total == 2
    assert root.progress == 0.5
    assert flatten({"status": {"phase": "Running"}}, "leaf").root.progress is None


def test_missing_and_duplicate_uids_get_unique_ids() -> None:
    """Sub-jobs without a uid, or repeating one, still get distinct IDs."""
    data = {
        "spec": {
            "subJobs": [
                {"metadata": {"uid": "dup"}},
                {"metadata": {"uid": "dup"}},
                {},
                {"metadata": {"uid": "root.2"}},
            ]
        }
    }
    tree = flatten(data, "root")
    ids = [node.job_id for node in tree.nodes]
    assert len(set(ids)) == len(ids) == 5
    assert tree.parse_errors.count("metadata.uid") == 2


def test_lone_surrogates_cost_only_their_code_points() -> None:
    """Text fields holding lone surrogates keep their text, each surrogate as U+FFFD."""
    data = json.loads(
        r"""{
          "metadata": {"uid": "\ud800-root"},
          "spec": {
            "type": "Create\udc00Cluster", "clusterUID": "c-\ud83d\ude00",
            "resourceID": "r-\udfff", "resourceName": "é-\udbff",
            "extendParam": {"k\ud800": "v\udc00"},
            "subJobs": [
              {"metadata": {"uid": "sub-\ud800"}, "spec": {"type": "\udc00"},
               "status": {"phase": "Run\ud800ning", "reason": "disk \udfff full"}}
            ]
          },
          "status": {"phase": "Running", "reason": "\ud800\ud800 why"}
        }"""
    )
    tree = flatten(data, "root")
    root, sub = tree.nodes
    assert tree.parse_errors == ()
    assert (root.job_type, root.cluster_id, root.resource_id, root.resource_name) == (
        "Create\ufffdCluster",
        "c-😀",  # an escaped pair that is whole is one good code point
        "r-\ufffd",
        "é-\ufffd",
    )
    assert root.reason == "\ufffd\ufffd why"
    assert dict(root.subjob_phases or ())["Run\ufffdning"] == 1
    assert (sub.job_id, sub.job_type, sub.phase, sub.reason) == (
        "sub-\ufffd",
        "\ufffd",
        "Run\ufffdning",
        "disk \ufffd full",
    )
    spec = Job.model_validate(data).spec
    assert spec is not None
    assert spec.extendParam == {"k\ufffd": "v\ufffd"}


@pytest.mark.parametrize("zero", ["0001-01-01 00:00:00 +0000 UTC", "0001-01-01T00:00:00Z"])
def test_go_zero_time_reads_as_an_absent_timestamp(example_job: dict[str, Any], zero: str) -> None:
    """Go's zero time in a timestamp field gives the same tree as the field left out."""
    absent = copy.deepcopy(example_job)
    for job in (example_job, example_job["spec"]["subJobs"][0]):
        job["metadata"]["creationTimestamp"] = zero
        job["metadata"]["updateTimestamp"] = zero
    for job in (absent, absent["spec"]["subJobs"][0]):
        del job["metadata"]["creationTimestamp"], job["metadata"]["updateTimestamp"]
    tree = flatten(example_job, EXAMPLE_JOB_ID)
    assert tree == flatten(absent, EXAMPLE_JOB_ID)
    assert tree.parse_errors == ()
    root, first, second = tree.nodes
    assert (root.created_ns, root.updated_ns, first.created_ns, first.updated_ns) == (None,) * 4
    assert second.created_ns is not None


@pytest.mark.parametrize("data", [[], "job", 3, None, {"kind": "Job"}, {"foo": {"bar": 1}}])
def test_what_is_not_a_job_is_refused(data: object) -> None:
    """A body that is not a job object at all raises InvalidJobError."""
    with pytest.raises(InvalidJobError):
        flatten(data, "job-1")


def _chain(depth: int) -> dict[str, Any]:
    job: dict[str, Any] = {"metadata": {"uid": f"n{depth}"}, "status": {"phase": "Success"}}
    for level in range(depth - 1, -1, -1):
        job = {"metadata": {"uid": f"n{level}"}, "spec": {"subJobs": [job]}}
    return job


def test_deep_tree_does_not_exhaust_the_stack() -> None:
    """A tree thousands of levels deep flattens without recursion."""
    tree = flatten(_chain(3000), "n0")
    assert len(tree.nodes) == 3001
    assert tree.nodes[-1].depth == 3000
    assert tree.nodes[-1].parent_job_id == "n2999"


def test_wide_tree_counts_every_sub_job() -> None:
    """Five thousand sub-jobs are all flattened and counted by phase."""
    subs = [
        {"metadata": {"uid": f"s{i}"}, "status": {"phase": "Success" if i % 2 else "Running"}}
        for i in range(5000)
    ]
    tree = flatten({"spec": {"subJobs": subs}}, "root")
    assert len(tree.nodes) == 5001
    assert dict(tree.root.subjob_phases or ())["Success"] == 2500
    assert [node.job_id for node in tree.nodes[1:4]] == ["s0", "s1", "s2"]


def _wide(count: int) -> dict[str, Any]:
    """A job with `count` empty sub-jobs: `count + 1` nodes."""
    return {"metadata": {"uid": "root"}, "spec": {"subJobs": [{} for _ in range(count)]}}


def test_a_tree_at_the_node_cap_is_flattened_in_full() -> None:
    """A tree of exactly MAX_NODES nodes, spread over two levels, is a good tree."""
    half = MAX_NODES // 2 - 1
    job = {"spec": {"subJobs": [_wide(half), _wide(MAX_NODES - 3 - half)]}}
    tree = flatten(job, "root")
    assert len(tree.nodes) == MAX_NODES
    assert max(node.depth for node in tree.nodes) == 2


@pytest.mark.parametrize("where", ["wide", "deeper", "not objects"])
def test_a_tree_over_the_node_cap_is_not_a_job(where: str) -> None:
    """One node past MAX_NODES, at any depth, even in entries that are not objects, is refused."""
    if where == "wide":
        job = _wide(MAX_NODES)
    elif where == "deeper":
        job = {"spec": {"subJobs": [_wide(10), _wide(MAX_NODES - 13), {}]}}
    else:
        job = {"spec": {"subJobs": [1] * MAX_NODES}}
    with pytest.raises(InvalidJobError, match=f"^job tree has more than {MAX_NODES} nodes$"):
        flatten(job, "root")


class _CountingJob(Job):
    """A v3 job node that counts the nodes validated, to see where the walk stops."""

    validated: ClassVar[list[str | None]] = []

    def facts(self) -> NodeFacts:
        """Count this node, then return its facts."""
        facts = super().facts()
        _CountingJob.validated.append(facts.uid)
        return facts


def test_the_walk_stops_as_soon_as_the_cap_is_passed() -> None:
    """The sub-job list that passes the cap is refused before any of its entries is validated."""
    first, second = _wide(MAX_NODES // 2), _wide(MAX_NODES // 2)
    first["metadata"]["uid"], second["metadata"]["uid"] = "first", "second"
    _CountingJob.validated.clear()
    with pytest.raises(InvalidJobError):
        flatten({"spec": {"subJobs": [first, second]}}, "root", _CountingJob)
    # The root, its two sub-jobs, the first one's entries: not the second one's.
    assert len(_CountingJob.validated) == 3 + MAX_NODES // 2
    assert _CountingJob.validated[:3] == [None, "first", "second"]


def test_half_a_million_empty_sub_jobs_are_refused_at_once() -> None:
    """The 2 MB answer of `subJobs: [{}, ...]` that once made /metrics 300 MB costs one node."""
    _CountingJob.validated.clear()
    with pytest.raises(InvalidJobError, match="more than"):
        flatten(json.loads(json.dumps(_wide(500_000))), "root", _CountingJob)
    assert _CountingJob.validated == ["root"]


def _trees(max_leaves: int = 40) -> st.SearchStrategy[dict[str, Any]]:
    leaf = st.builds(
        lambda uid, phase: {"metadata": {"uid": uid}, "status": {"phase": phase}},
        st.uuids().map(str),
        st.sampled_from(["Initializing", "Running", "Success", "Failed", "Other"]),
    )
    return st.recursive(
        leaf,
        lambda children: st.builds(
            lambda uid, subs: {"metadata": {"uid": uid}, "spec": {"subJobs": subs}},
            st.uuids().map(str),
            st.lists(children, max_size=5),
        ),
        max_leaves=max_leaves,
    )


def _count(job: dict[str, Any]) -> int:
    return 1 + sum(_count(sub) for sub in job.get("spec", {}).get("subJobs", []))


@given(_trees())
def test_flattening_keeps_every_node_and_its_place(job: dict[str, Any]) -> None:
    """Any tree gives one node per job, each with a parent one level up and unique IDs."""
    tree = flatten(job, "root")
    assert len(tree.nodes) == _count(job)
    by_id = {node.job_id: node for node in tree.nodes}
    assert len(by_id) == len(tree.nodes)
    assert tree.root.depth == 0
    assert tree.root.parent_job_id == ""
    for node in tree.nodes[1:]:
        parent = by_id[node.parent_job_id]
        assert node.depth == parent.depth + 1
        children = sum(1 for other in tree.nodes if other.parent_job_id == parent.job_id)
        assert sum(count for _, count in parent.subjob_phases or ()) <= children


_SURROGATE = re.compile("[\ud800-\udfff]")
# Text with lone surrogates (which JSON can spell) often among its pieces.
text_values = st.lists(st.text(max_size=6) | st.characters(categories=["Cs"]), max_size=4).map(
    "".join
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text_values,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = [
    ("metadata",),
    ("metadata", "uid"),
    ("metadata", "creationTimestamp"),
    ("metadata", "updateTimestamp"),
    ("spec",),
    ("spec", "type"),
    ("spec", "clusterUID"),
    ("spec", "resourceName"),
    ("spec", "extendParam"),
    ("spec", "subJobs"),
    ("status",),
    ("status", "phase"),
    ("status", "reason"),
]


# The fixture is only read (deep-copied) by each example, so sharing it is safe.
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=st.sampled_from(FIELDS), value=text_values | json_values, in_sub_job=st.booleans())
def test_any_value_in_any_field_never_raises(
    example_job: dict[str, Any], path: tuple[str, ...], value: object, in_sub_job: bool
) -> None:
    """Any JSON value in any field gives InvalidJobError or a tree of encodable text."""
    job = copy.deepcopy(example_job)
    target = job["spec"]["subJobs"][0] if in_sub_job else job
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    try:
        tree = flatten(job, EXAMPLE_JOB_ID)
    except InvalidJobError:
        return
    assert tree.root.job_id == EXAMPLE_JOB_ID
    for node in tree.nodes:
        assert not _SURROGATE.search(_texts(node)), node


def _texts(node: JobNode) -> str:
    """Every text of a node, sub-job phases included, run together."""
    texts = [value for value in astuple(node) if isinstance(value, str)]
    return "".join(texts + [phase for phase, _ in node.subjob_phases or ()])
