import gzip
import subprocess
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)

from exporter.errors import ErrorKind
from exporter.jobs.ids import Api
from exporter.jobs.state import JobState
from exporter.jobs.tree import JobTree, flatten
from exporter.metrics import exposition
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.cce_job import FAMILIES, Family, render_job, render_polls, render_tree
from exporter.metrics.exposition import Renderer
from tests.conftest import labels, parse_series
from tests.standins.cce import PROJECT_ID
from tests.standins.jobs import EXAMPLE_JOB_ID, job_object
from tests.standins.processes import require_program

ROOT = EXAMPLE_JOB_ID
MASTER = "fd474fab-9606-11e8-baa9-0255ac10215d"
CERT = "fd474f82-9606-11e8-baa8-0255ac10215d"
POLLED_AT = 1_700_000_000.25


def _state(example_job: dict[str, Any], project_id: str = PROJECT_ID) -> JobState:
    job = JobState(ROOT, project_id=project_id)
    return job.succeeded(flatten(example_job, ROOT), POLLED_AT, Api.CCE)


def _job_part(text: str) -> str:
    return text[text.index("# HELP cce_job_info") :]


def test_example_gives_exactly_the_spec_series(
    example_job: dict[str, Any], instruments: Instruments
) -> None:
    """The API page's example renders every job-tree and polling series with exact values."""
    text = Renderer(instruments.registry).render([_state(example_job)]).decode()
    series = parse_series(text)
    p = PROJECT_ID
    jobs = {k: v for k, v in series.items() if k[0].startswith("cce_job_")}

    def base(job_id: str, job_type: str) -> dict[str, str]:
        return {"project_id": p, "job_id": job_id, "root_job_id": ROOT, "job_type": job_type}

    expected: dict[tuple[str, frozenset[tuple[str, str]]], float] = {
        ("cce_job_info", labels(**base(ROOT, "CreateCluster"), parent_job_id="",
            cluster_id="4d1ecb2c-229a-11e8-9c75-0255ac100ceb",
            resource_id="6f4dcb2c-229a-11e8-9c75-0255ac100ceb",
            resource_name="cluster-name", depth="0", api="cce")): 1.0,
        ("cce_job_info", labels(**base(MASTER, "InstallMaster"), parent_job_id=ROOT,
            cluster_id="fcc72de0-9606-11e8-baa8-0255ac10215d",
            resource_id="fd3b4ac0-9606-11e8-baa8-0255ac10215d",
            resource_name="", depth="1", api="cce")): 1.0,
        ("cce_job_info", labels(**base(CERT, "CreatePSMCert"), parent_job_id=ROOT,
            cluster_id="fcc72de0-9606-11e8-baa8-0255ac10215d",
            resource_id="", resource_name="", depth="1", api="cce")): 1.0,
        ("cce_job_created_timestamp_seconds", labels(**base(ROOT, "CreateCluster"))):
            1533197560.672772389,
        ("cce_job_updated_timestamp_seconds", labels(**base(ROOT, "CreateCluster"))):
            1533198110.478108569,
        ("cce_job_duration_seconds", labels(**base(ROOT, "CreateCluster"))): 549.80533618,
        ("cce_job_created_timestamp_seconds", labels(**base(MASTER, "InstallMaster"))):
            1533181954.615819618,
        ("cce_job_updated_timestamp_seconds", labels(**base(MASTER, "InstallMaster"))):
            1533182729.196243031,
        ("cce_job_duration_seconds", labels(**base(MASTER, "InstallMaster"))): 774.580423413,
        ("cce_job_created_timestamp_seconds", labels(**base(CERT, "CreatePSMCert"))):
            1533181953.859150791,
        ("cce_job_updated_timestamp_seconds", labels(**base(CERT, "CreatePSMCert"))):
            1533181954.615655429,
        ("cce_job_duration_seconds", labels(**base(CERT, "CreatePSMCert"))): 0.756504638,
        ("cce_job_progress_ratio", labels(**base(ROOT, "CreateCluster"))): 1.0,
        ("cce_job_poll_success", labels(project_id=p, job_id=ROOT)): 1.0,
        ("cce_job_last_poll_success_timestamp_seconds", labels(project_id=p, job_id=ROOT)):
            POLLED_AT,
    }  # fmt: skip
    for job_id, job_type, current in (
        (ROOT, "CreateCluster", "Running"),
        (MASTER, "InstallMaster", "Success"),
        (CERT, "CreatePSMCert", "Success"),
    ):
        for phase in ("Initializing", "Running", "Success", "Failed"):
            key = ("cce_job_status_phase", labels(**base(job_id, job_type), phase=phase))
            expected[key] = 1.0 if phase == current else 0.0
    for phase, count in (("Initializing", 0), ("Running", 0), ("Success", 2), ("Failed", 0)):
        expected[("cce_job_subjobs", labels(**base(ROOT, "CreateCluster"), phase=phase))] = count
    for kind in ErrorKind:
        key = ("cce_job_poll_errors_total", labels(project_id=p, job_id=ROOT, error=kind.value))
        expected[key] = 0.0
    assert jobs == expected
    assert "cce_job_duration_seconds" in text
    assert (
        f'job_type="InstallMaster",project_id="{p}",root_job_id="{ROOT}"}} 774.580423413\n' in text
    )


def test_reason_and_failed_polls_are_rendered(example_job: dict[str, Any]) -> None:
    """A reason gives one reason series (cut to 200 characters); failed polls count by kind."""
    example_job["status"] = {"phase": "Failed", "reason": 'bad "quote"\\ ' + "x" * 300}
    state = (
        _state(example_job, "p")
        .failed(ErrorKind.TIMEOUT, "t", 3.0)
        .failed(ErrorKind.TIMEOUT, "t", 4.0)
    )
    series = parse_series(render_job(state)[FAMILIES.index(Family.REASON)].decode())
    ((_name, label_set), value), *rest = series.items()
    assert rest == []
    assert value == 1.0
    reason = dict(label_set)["reason"]
    assert reason.startswith('bad "quote"\\ x')
    assert len(reason) == 200
    errors = parse_series(render_job(state)[FAMILIES.index(Family.POLL_ERRORS)].decode())
    assert errors[("cce_job_poll_errors_total", labels(
        project_id="p", job_id=ROOT, error="timeout"))] == 2.0  # fmt: skip
    success = render_job(state)[FAMILIES.index(Family.POLL_SUCCESS)].decode()
    assert success.endswith("} 0.0\n")


def test_unknown_phase_gets_its_own_series() -> None:
    """A phase outside the four is exported as its own series with value 1."""
    state = JobState("j").succeeded(flatten({"status": {"phase": "Paused"}}, "j"), 1.0)
    series = parse_series(render_job(state)[FAMILIES.index(Family.PHASE)].decode())
    phases = {dict(k[1])["phase"]: v for k, v in series.items()}
    assert phases == {"Initializing": 0, "Running": 0, "Success": 0, "Failed": 0, "Paused": 1}


def test_unpolled_job_has_only_its_error_counters() -> None:
    """Before its first poll a watched job shows zeroed error counters and nothing else."""
    series = parse_series(Renderer(CollectorRegistry()).render([JobState("j")]).decode())
    assert {name for name, _ in series} == {"cce_job_poll_errors_total"}
    assert set(series.values()) == {0.0}


def test_dropped_job_leaves_no_series(example_job: dict[str, Any]) -> None:
    """A job that is no longer passed to the renderer leaves no series behind."""
    renderer = Renderer(CollectorRegistry())
    other = JobState("other-job").succeeded(flatten({"status": {"phase": "Running"}}, "x"), 1.0)
    assert ROOT in renderer.render([_state(example_job), other]).decode()
    text = renderer.render([other]).decode()
    assert ROOT not in text
    assert "other-job" in text


def test_cached_rendering_follows_new_states(
    example_job: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new state of a job is rendered anew; the same state is served from the cache."""
    trees: list[JobTree | None] = []
    polls: list[JobState] = []

    def counting_render_tree(tree: JobTree | None, *args: Any, **kwargs: Any) -> tuple[bytes, ...]:
        trees.append(tree)
        return render_tree(tree, *args, **kwargs)

    def counting_render_polls(state: JobState, *args: Any, **kwargs: Any) -> tuple[bytes, ...]:
        polls.append(state)
        return render_polls(state, *args, **kwargs)

    monkeypatch.setattr(exposition, "render_tree", counting_render_tree)
    monkeypatch.setattr(exposition, "render_polls", counting_render_polls)
    renderer = Renderer(CollectorRegistry())
    first = _state(example_job, "p")
    part = renderer.body([first], gzip=True).jobs
    again = renderer.body([first], gzip=True).jobs
    assert (trees, polls) == ([first.tree], [first])  # the second scrape rendered nothing
    assert again is part  # the cached deflate stream itself is served, not a copy
    assert renderer.render([first]) == renderer.render([first])
    assert (trees, polls) == ([first.tree], [first])
    example_job["status"]["phase"] = "Success"
    second = first.succeeded(flatten(example_job, ROOT), POLLED_AT + 30)
    text = renderer.render([second]).decode()
    assert (trees, polls) == ([first.tree, second.tree], [first, second])
    key = ("cce_job_status_phase", labels(
        project_id="p", job_id=ROOT, root_job_id=ROOT, job_type="CreateCluster", phase="Success"
    ))  # fmt: skip
    assert parse_series(text)[key] == 1.0


def test_a_poll_that_read_the_same_tree_renders_only_the_polls(
    example_job: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new state holding the very tree of the last one re-renders its polling series alone."""
    trees: list[JobTree | None] = []

    def counting_render_tree(tree: JobTree | None, *args: Any, **kwargs: Any) -> tuple[bytes, ...]:
        trees.append(tree)
        return render_tree(tree, *args, **kwargs)

    monkeypatch.setattr(exposition, "render_tree", counting_render_tree)
    renderer = Renderer(CollectorRegistry())
    first = _state(example_job, "p")
    assert first.tree is not None
    renderer.render([first])
    second = first.succeeded(first.tree, POLLED_AT + 30)
    text = renderer.render([second]).decode()
    assert trees == [first.tree]
    assert text == Renderer(CollectorRegistry()).render([second]).decode()
    last = ("cce_job_last_poll_success_timestamp_seconds", labels(project_id="p", job_id=ROOT))
    assert parse_series(text)[last] == POLLED_AT + 30


class _Reference:
    """The same job families built with prometheus-client's own metric families."""

    def __init__(self, states: list[JobState], project_id: str) -> None:
        self._states = states
        self._project = project_id

    def collect(self) -> Iterator[Metric]:
        p = self._project
        info = GaugeMetricFamily("cce_job_info", Family.INFO.value[2], labels=[
            "project_id", "job_id", "root_job_id", "parent_job_id", "job_type", "cluster_id",
            "resource_id", "resource_name", "depth", "api"])  # fmt: skip
        base = ["project_id", "job_id", "root_job_id", "job_type"]
        phase = GaugeMetricFamily(
            "cce_job_status_phase", Family.PHASE.value[2], labels=[*base, "phase"]
        )
        created = GaugeMetricFamily(
            "cce_job_created_timestamp_seconds", Family.CREATED.value[2], labels=base
        )
        updated = GaugeMetricFamily(
            "cce_job_updated_timestamp_seconds", Family.UPDATED.value[2], labels=base
        )
        duration = GaugeMetricFamily(
            "cce_job_duration_seconds", Family.DURATION.value[2], labels=base
        )
        subjobs = GaugeMetricFamily(
            "cce_job_subjobs", Family.SUBJOBS.value[2], labels=[*base, "phase"]
        )
        progress = GaugeMetricFamily(
            "cce_job_progress_ratio", Family.PROGRESS.value[2], labels=base
        )
        reason = GaugeMetricFamily(
            "cce_job_status_reason_info", Family.REASON.value[2], labels=[*base, "reason"]
        )
        success = GaugeMetricFamily(
            "cce_job_poll_success", Family.POLL_SUCCESS.value[2], labels=["project_id", "job_id"]
        )
        last = GaugeMetricFamily(
            "cce_job_last_poll_success_timestamp_seconds",
            Family.LAST_SUCCESS.value[2],
            labels=["project_id", "job_id"],
        )
        errors = CounterMetricFamily(
            "cce_job_poll_errors",
            Family.POLL_ERRORS.value[2],
            labels=["project_id", "job_id", "error"],
        )
        for state in self._states:
            for node in state.tree.nodes if state.tree else ():
                b = [p, node.job_id, state.job_id, node.job_type]
                info.add_metric(
                    [p, node.job_id, state.job_id, node.parent_job_id, node.job_type,
                     node.cluster_id, node.resource_id, node.resource_name, str(node.depth),
                     state.api.value if state.api else ""],
                    1,
                )  # fmt: skip
                for name in ("Initializing", "Running", "Success", "Failed"):
                    phase.add_metric([*b, name], 1 if node.phase == name else 0)
                if node.created_ns is not None:
                    created.add_metric(b, node.created_ns / 10**9)
                if node.updated_ns is not None:
                    updated.add_metric(b, node.updated_ns / 10**9)
                if node.created_ns is not None and node.updated_ns is not None:
                    duration.add_metric(b, (node.updated_ns - node.created_ns) / 10**9)
                if node.subjob_phases:
                    for name, count in node.subjob_phases:
                        subjobs.add_metric([*b, name], count)
                    done = dict(node.subjob_phases)["Success"]
                    progress.add_metric(b, done / node.subjob_total)
                if node.reason:
                    reason.add_metric([*b, node.reason[:200]], 1)
            success.add_metric([p, state.job_id], float(state.last_ok))
            if state.last_success is not None:
                last.add_metric([p, state.job_id], state.last_success)
            for kind, count in zip(ErrorKind, state.errors, strict=True):
                errors.add_metric([p, state.job_id, kind.value], count)
        yield from (info, phase, created, updated, duration, subjobs, progress, reason)
        yield from (success, last, errors)


def test_output_is_byte_identical_to_prometheus_client(example_job: dict[str, Any]) -> None:
    """The fast renderer writes exactly what prometheus-client writes for the same series."""
    failed = {**example_job, "status": {"phase": "Failed", "reason": 'line\nbreak "q" \\'}}
    states = [
        _state(example_job, "proj"),
        JobState("job-2", project_id="proj")
        .succeeded(flatten(failed, "job-2"), 2.5, Api.AUTOPILOT)
        .failed(ErrorKind.NOT_FOUND, "x", 3.0),
    ]
    registry = CollectorRegistry()
    registry.register(_Reference(states, "proj"))
    reference = generate_latest(registry).decode()
    ours = _job_part(Renderer(CollectorRegistry()).render(states).decode())
    assert ours == reference


def test_openmetrics_and_gzip_forms(example_job: dict[str, Any], instruments: Instruments) -> None:
    """OpenMetrics output parses with the OpenMetrics parser; gzip output decompresses to text."""
    renderer = Renderer(instruments.registry)
    state = _state(example_job)
    om = renderer.render([state], openmetrics=True).decode()
    assert om.endswith("# EOF\n")
    assert om.count("# EOF") == 1
    families = {family.name: family for family in parse_openmetrics(om)}
    assert families["cce_job_poll_errors"].type == "counter"
    assert families["cce_job_info"].type == "gauge"
    plain = renderer.render([state]).decode()
    unzipped = gzip.decompress(renderer.render_gzip([state])).decode()
    assert _job_part(unzipped) == _job_part(plain)
    # One gzip member, so that clients that read only the first member see everything.
    member = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert member.decompress(renderer.render_gzip([state])).decode().endswith(_job_part(plain))
    assert member.eof
    assert member.unused_data == b""
    om_unzipped = gzip.decompress(renderer.render_gzip([state], openmetrics=True)).decode()
    assert _job_part(om_unzipped) == _job_part(om)


def test_promtool_accepts_the_exposition(
    example_job: dict[str, Any], instruments: Instruments
) -> None:
    """`promtool check metrics` finds no problem in a full exposition."""
    promtool = require_program("promtool")
    instruments.describe_target("default", PROJECT_ID, "cn-north-4", "https://cce.example.com")
    instruments.target("default").api_requests.labels("show_job", "200").inc()
    instruments.target("default").api_latency.labels("show_job").observe(0.1)
    instruments.target("default").token_expiry.set(2_000_000_000.0)
    instruments.parse_errors.labels("metadata.uid").inc()
    failed = {**example_job, "status": {"phase": "Failed", "reason": "quota exceeded"}}
    states = [_state(example_job), JobState("j2").succeeded(flatten(failed, "j2"), 1.0)]
    text = Renderer(instruments.registry).render(states).decode()
    result = subprocess.run(  # noqa: S603 - a fixed program on our own output
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_large_bodies_plain_and_gzip_say_the_same(instruments: Instruments) -> None:
    """Over many jobs and after changes, plain and gzip bodies hold the same text, of their size."""

    def job(n: int, phase: str) -> JobState:
        steps = [job_object(f"s{n}-{k}", phase, job_type=f"Step{k}") for k in range(6)]
        tree = flatten(job_object(f"j{n}", phase, steps, reason=f"r{n}"), f"j{n}")
        return JobState(f"j{n}").succeeded(tree, 1_000.0 + n)

    renderer = Renderer(instruments.registry)
    fresh = Renderer(CollectorRegistry())
    states = [job(n, "Running") for n in range(300)]
    for changed in (0, 1, 40):
        for n in range(changed):  # a new tree for some, a failed poll for others
            states[n] = job(n, "Success")
            states[-1 - n] = states[-1 - n].failed(ErrorKind.TIMEOUT, "t", 2_000.0)
        for openmetrics in (False, True):
            plain_body = renderer.body(states, openmetrics=openmetrics)
            gzip_body = renderer.body(states, openmetrics=openmetrics, gzip=True)
            plain = b"".join(plain_body)
            packed = b"".join(gzip_body)
            assert len(plain) == len(plain_body) > 200_000
            assert len(packed) == len(gzip_body)
            unpacked = gzip.decompress(packed).decode()
            reference = _job_part(fresh.render(states, openmetrics=openmetrics).decode())
            assert _job_part(unpacked) == _job_part(plain.decode()) == reference
