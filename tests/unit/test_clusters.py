"""The cluster list as the API spells it, the cluster directory, and the refresh setting."""

from pathlib import Path
from typing import Any

import pytest

from exporter.jobs.clusters import (
    MAX_CLUSTERS,
    Cluster,
    ClusterDirectory,
    ClusterKind,
    ClusterListError,
    read_clusters,
)
from exporter.settings.load import ConfigError, load_settings
from tests.standins.clusters import cluster_object

# The example of ListClusters in the API reference, as its fields are documented.
EXAMPLE_ID = "4d1ecb2c-229a-11e8-9c75-0255ac100ceb"


def _example() -> dict[str, Any]:
    return {
        "kind": "Cluster",
        "apiVersion": "v3",
        "items": [cluster_object(EXAMPLE_ID, "prod-eu")],
    }


def test_the_documented_example_reads_every_field() -> None:
    """ID, name, phase, category, type, flavor and version are read from their documented keys."""
    listed = read_clusters(_example(), ClusterKind.CCE)
    assert listed.clusters == (
        Cluster(
            cluster_id=EXAMPLE_ID,
            name="prod-eu",
            kind=ClusterKind.CCE,
            phase="Available",
            category="CCE",
            cluster_type="VirtualMachine",
            flavor="cce.s2.small",
            version="v1.28",
        ),
    )
    assert listed.parse_errors == ()
    assert listed.ignored == 0


def test_bad_items_cost_only_themselves() -> None:
    """Items that are not objects or have no ID are skipped and named; the others are read."""
    data = _example()
    data["items"] += [
        "not a cluster",
        None,
        {"metadata": {"name": "no-id"}},
        {"metadata": {"uid": 42}},
        {"metadata": "flat", "spec": {}},
        cluster_object("c-2", "second"),
    ]
    listed = read_clusters(data, ClusterKind.AUTOPILOT)
    assert [c.cluster_id for c in listed.clusters] == [EXAMPLE_ID, "c-2"]
    assert all(c.kind is ClusterKind.AUTOPILOT for c in listed.clusters)
    assert sorted(listed.parse_errors) == sorted(
        [
            "cluster",
            "cluster",
            "cluster.metadata.uid",
            "cluster.metadata.uid",
            "cluster.metadata",
            "cluster.metadata.uid",
        ]
    )


def test_a_field_of_the_wrong_type_costs_only_its_value() -> None:
    """A field of the wrong type is empty and named; a missing one is empty and not named."""
    item = cluster_object("c-1", "one")
    item["spec"]["flavor"] = ["cce.s2.small"]
    item["status"] = {"phase": {"value": "Available"}}
    del item["spec"]["version"]
    (cluster,) = read_clusters({"items": [item]}, ClusterKind.CCE).clusters
    assert (cluster.name, cluster.flavor, cluster.phase, cluster.version) == ("one", "", "", "")
    assert cluster.category == "CCE"
    listed = read_clusters({"items": [item]}, ClusterKind.CCE)
    assert sorted(listed.parse_errors) == ["cluster.spec.flavor", "cluster.status.phase"]


def test_every_field_may_be_missing() -> None:
    """An item with only its ID is a cluster of empty fields; a list without items is empty."""
    (cluster,) = read_clusters({"items": [{"metadata": {"uid": "c-1"}}]}, ClusterKind.CCE).clusters
    assert cluster == Cluster("c-1", "", ClusterKind.CCE)
    assert read_clusters({}, ClusterKind.CCE).clusters == ()
    assert read_clusters({"items": None}, ClusterKind.CCE).clusters == ()


@pytest.mark.parametrize("data", [[], "clusters", None, {"items": {"a": 1}}, {"items": "x"}])
def test_an_answer_that_is_no_cluster_list_is_refused(data: object) -> None:
    """A body that is not an object, or whose items are not a list, is not a cluster list."""
    with pytest.raises(ClusterListError):
        read_clusters(data, ClusterKind.CCE)


def test_long_and_unencodable_text_is_cut_and_made_safe() -> None:
    """Label values are cut to 200 characters and lone surrogates become U+FFFD."""
    item = cluster_object("c-1", "n" * 500, flavor="bad\ud800")
    (cluster,) = read_clusters({"items": [item]}, ClusterKind.CCE).clusters
    assert cluster.name == "n" * 200
    assert cluster.flavor == "bad\ufffd"


def test_the_list_is_capped_and_a_repeated_id_read_once() -> None:
    """At most MAX_CLUSTERS items are read, the rest counted; a repeated ID keeps its first item."""
    items = [cluster_object(f"c-{i}", f"n-{i}") for i in range(MAX_CLUSTERS + 5)]
    items.insert(1, cluster_object("c-0", "duplicate"))
    listed = read_clusters({"items": items}, ClusterKind.CCE)
    assert len(listed.clusters) == MAX_CLUSTERS - 1
    assert listed.clusters[0].name == "n-0"
    assert listed.ignored == 6


def test_the_directory_answers_by_id_and_by_name() -> None:
    """get, name, resolve, membership and iteration answer from the clusters given."""
    prod = Cluster("id-prod", "prod", ClusterKind.CCE, "Available")
    auto = Cluster("id-auto", "serverless", ClusterKind.AUTOPILOT, "Unavailable")
    twin = Cluster("id-twin", "prod", ClusterKind.AUTOPILOT)
    directory = ClusterDirectory([prod, auto, twin, Cluster("id-prod", "again", ClusterKind.CCE)])
    assert len(directory) == 3
    assert list(directory) == [prod, auto, twin]
    assert "id-auto" in directory
    assert "serverless" not in directory
    assert directory.get("id-auto") is auto
    assert directory.get("nope") is None
    assert directory.name("id-prod") == "prod"
    assert directory.name("nope") == ""
    assert directory.resolve("id-auto") == ("id-auto",)
    assert directory.resolve("prod") == ("id-prod", "id-twin")
    assert directory.resolve("unknown") == ()


def test_the_directory_does_not_change_with_what_built_it() -> None:
    """A directory is a snapshot: changing the list it was built from changes nothing."""
    clusters = [Cluster("a", "one", ClusterKind.CCE)]
    directory = ClusterDirectory(clusters)
    clusters.append(Cluster("b", "two", ClusterKind.CCE))
    assert len(directory) == 1
    assert list(directory) == [Cluster("a", "one", ClusterKind.CCE)]
    assert "b" not in directory


@pytest.mark.usefixtures("clean_env")
def test_cluster_refresh_interval_defaults_to_five_minutes_and_must_be_positive(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """cluster_refresh_interval is 300 unless set; 0, negative and infinite values are refused."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    minimal = {"project_id": "proj", "region": "cn-north-4"}
    assert load_settings(minimal).cluster_refresh_interval == 300.0
    assert (
        load_settings({**minimal, "cluster_refresh_interval": "60"}).cluster_refresh_interval == 60
    )
    for bad in ("0", "-5", "inf", "soon"):
        with pytest.raises(ConfigError) as caught:
            load_settings({**minimal, "cluster_refresh_interval": bad})
        assert [problem.setting for problem in caught.value.problems] == [
            "cluster_refresh_interval"
        ]


def test_the_docs_state_the_cluster_cap() -> None:
    """docs/metrics.md and docs/operations.md give MAX_CLUSTERS as the code has it."""
    docs = Path(__file__).parents[2] / "docs"
    metrics = " ".join((docs / "metrics.md").read_text().split())
    operations = " ".join((docs / "operations.md").read_text().split())
    assert f"first {MAX_CLUSTERS:,} clusters of each list" in metrics
    assert f"more than {MAX_CLUSTERS:,} clusters" in operations
