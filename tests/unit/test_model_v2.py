import copy
import json
from typing import Any

import pytest

from exporter.jobs.tree import MAX_NODES, MAX_REASON_CHARS, InvalidJobError, flatten
from exporter.jobs.v2 import flatten_v2, read_list_text, read_listing
from tests.standins.jobs import v2_job, v3_job

# The published GetOneJob example of list-jobs.md, as the job list would carry it.
LISTED_EXAMPLE = json.loads("""
{
  "kind" : "Job",
  "apiVersion" : "v2",
  "metadata" : {
    "uid" : "e43c6f3b-87e6-11f0-be88-0255ac10003f",
    "creationTimestamp" : "2025-09-02 10:23:38.987955 +0000 UTC",
    "updateTimestamp" : "2025-09-02 11:26:03.218087 +0000 UTC"
  },
  "spec" : {
    "type" : "ScaleupCluster",
    "clusteruid" : "7ec8b73d-83db-11f0-8baa-0255ac10003e",
    "resourceid" : "3b4410fa-87e6-11f0-be88-0255ac10003f",
    "resourcename" : "node-iv28j9",
    "extendparam" : {"claimrollback" : "true", "v3-scaleup" : "true"}
  },
  "status" : {
    "status" : "Failed",
    "reason" : "Something bad happened at server, recycle resource",
    "completionTime" : "2025-09-02 11:26:03.218087 +0000 UTC"
  }
}
""")


def test_flatten_v2_reads_the_v2_spelling() -> None:
    """The published v2 example becomes a root node with every field in place."""
    tree = flatten_v2(LISTED_EXAMPLE, "e43c6f3b-87e6-11f0-be88-0255ac10003f")
    root = tree.root
    assert tree.parse_errors == ()
    assert root.job_type == "ScaleupCluster"
    assert root.cluster_id == "7ec8b73d-83db-11f0-8baa-0255ac10003e"
    assert root.resource_id == "3b4410fa-87e6-11f0-be88-0255ac10003f"
    assert root.resource_name == "node-iv28j9"
    assert root.phase == "Failed"
    assert root.finished
    assert root.reason.startswith("Something bad happened")
    assert root.created_ns == 1756808618_987955000
    assert root.subjob_phases is None


@pytest.mark.parametrize("phase", ["Running", "Success", "Failed"])
def test_v2_and_v3_of_one_job_flatten_alike(phase: str) -> None:
    """A job read from the v2 list and from the v3 API gives the same tree."""
    kwargs: dict[str, Any] = {"created": 1_750_000_000.25, "phase": phase, "subjobs": 3}
    assert flatten_v2(v2_job("job-a", **kwargs), "job-a") == flatten(
        v3_job("job-a", **kwargs), "job-a"
    )


def test_v3_spelling_is_not_read_as_v2() -> None:
    """A v3 object handed to the v2 model yields no v3-only fields: the spellings never mix."""
    tree = flatten_v2(v3_job("job-a", created=1_750_000_000, subjobs=2), "job-a")
    assert tree.root.phase is None
    assert tree.root.cluster_id == ""
    assert len(tree.nodes) == 1


def test_flatten_v2_costs_only_the_bad_value() -> None:
    """A field of the wrong type is reported and left empty; the rest is kept."""
    raw = v2_job("job-a", created=1_750_000_000)
    raw["spec"]["clusteruid"] = 42
    raw["spec"]["subjobs"].append("not a job")
    tree = flatten_v2(raw, "job-a")
    assert tree.root.cluster_id == ""
    assert "spec.clusteruid" in tree.parse_errors
    assert "spec.subjobs" in tree.parse_errors
    assert len(tree.nodes) == 3


def test_a_listed_tree_over_the_node_cap_is_not_a_job() -> None:
    """The v2 spelling has the same cap: MAX_NODES nodes are a tree, one more is refused."""
    at_cap = read_listing([v2_job("job-a", created=1_750_000_000, subjobs=MAX_NODES - 1)])
    assert len(at_cap[0].tree().nodes) == MAX_NODES
    over = read_listing([v2_job("job-b", created=1_750_000_000, subjobs=MAX_NODES)])
    with pytest.raises(InvalidJobError, match=f"job tree has more than {MAX_NODES} nodes"):
        over[0].tree()


def test_read_listing_reads_summaries_and_skips_non_objects() -> None:
    """The list is read into ID, type, phase and times; non-objects are skipped."""
    listed = read_listing([LISTED_EXAMPLE, "junk", {"metadata": {}}])
    assert len(listed) == 2
    first = listed[0]
    assert first.job_id == "e43c6f3b-87e6-11f0-be88-0255ac10003f"
    assert first.job_type == "ScaleupCluster"
    assert first.finished
    assert first.completed_ns == 1756812363_218087000
    assert listed[1].job_id is None
    assert listed[1].created_ns is None
    with pytest.raises(InvalidJobError, match="no ID"):
        listed[1].tree()


def test_read_listing_refuses_what_is_not_a_list() -> None:
    """An answer that is not a JSON array is not a job list."""
    with pytest.raises(InvalidJobError, match="expected a list"):
        read_listing({"items": []})


def test_lone_surrogates_in_the_list_become_replacement_characters() -> None:
    """The list's IDs, types and phases, and its trees, have U+FFFD for lone surrogates."""
    raw = json.loads(
        r"""[{"metadata": {"uid": "job-\ud800", "creationTimestamp": "2025-09-02T10:23:38Z"},
              "spec": {"type": "Scaleup\udc00", "resourcename": "n-\udfff",
                       "extendparam": {"\udbff": "\ud800"}},
              "status": {"status": "Fail\ud800ed", "reason": "why \udc00"}}]"""
    )
    [listed] = read_listing(raw)
    assert (listed.job_id, listed.job_type, listed.phase) == (
        "job-\ufffd",
        "Scaleup\ufffd",
        "Fail\ufffded",
    )
    assert listed.created_ns == 1756808618_000000000
    root = listed.tree().root
    assert (root.job_id, root.job_type, root.resource_name, root.phase, root.reason) == (
        "job-\ufffd",
        "Scaleup\ufffd",
        "n-\ufffd",
        "Fail\ufffded",
        "why \ufffd",
    )


def test_go_zero_times_in_the_list_read_as_absent() -> None:
    """Zero creation and completion times are absent: the job ended at its update time."""
    raw = copy.deepcopy(LISTED_EXAMPLE)
    raw["metadata"]["creationTimestamp"] = "0001-01-01 00:00:00 +0000 UTC"
    raw["status"]["completionTime"] = "0001-01-01T00:00:00Z"
    raw["metadata"]["updateTimestamp"] = "2025-09-02 11:30:00 +0000 UTC"
    [listed] = read_listing([raw])
    assert listed.created_ns is None
    assert listed.completed_ns == 1756812600_000000000
    root = listed.tree().root
    assert (root.created_ns, root.updated_ns) == (None, 1756812600_000000000)
    assert listed.tree().parse_errors == ()


@pytest.mark.parametrize(
    ("spec", "tree_listed"),
    [
        ({"type": "X", "subjobs": []}, True),
        ({"type": "X", "subjobs": [{"metadata": {"uid": "s"}}]}, True),
        ({"type": "X"}, False),
        ({"type": "X", "subjobs": None}, False),
        ({"type": "X", "subjobs": "not a list"}, False),
        ("not an object", False),
    ],
)
def test_a_listed_job_tells_whether_it_carries_its_tree(spec: object, tree_listed: bool) -> None:
    """Only an item whose spec has a `subjobs` list (even empty) carries its tree."""
    raw = copy.deepcopy(LISTED_EXAMPLE) | {"spec": spec}
    [listed] = read_listing([raw])
    assert listed.tree_listed is tree_listed
    [from_text], _ = read_list_text(json.dumps([raw]))
    assert from_text.tree_listed is tree_listed


def test_the_published_example_does_not_carry_its_tree() -> None:
    """The published list item has no `subjobs`: the list says nothing of its sub-jobs."""
    [listed] = read_listing([LISTED_EXAMPLE])
    assert not listed.tree_listed


def test_status_message_is_read_from_list_items_and_cut() -> None:
    """A listed job's `status.message`, and its sub-jobs', is kept, up to 4,096 characters."""
    raw = copy.deepcopy(LISTED_EXAMPLE)
    raw["status"]["message"] = "m" * (MAX_REASON_CHARS + 10)
    raw["spec"]["subjobs"] = [{"metadata": {"uid": "s1"}, "status": {"message": "step 2 of 3"}}]
    [listed] = read_listing([raw])
    root, sub = listed.tree().nodes
    assert root.message == "m" * MAX_REASON_CHARS
    assert sub.message == "step 2 of 3"


def test_a_status_message_of_the_wrong_type_costs_only_itself() -> None:
    """A `status.message` that is not text is left empty and counted; the reason stays."""
    raw = copy.deepcopy(LISTED_EXAMPLE)
    raw["status"]["message"] = {"not": "text"}
    tree = read_listing([raw])[0].tree()
    assert tree.root.message == ""
    assert tree.root.reason == "Something bad happened at server, recycle resource"
    assert tree.parse_errors == ("status.message",)
