"""JobHistory on its own: what it remembers, for how long, and its bound on label sets."""

import logging

import pytest

from exporter.jobs.state import JobState
from exporter.jobs.tree import flatten
from exporter.metrics import history
from exporter.metrics.cce_exporter import Instruments
from exporter.metrics.history import JobHistory
from tests.standins.clocks import Clock
from tests.standins.jobs import job_object

START = 1_800_000_000.0
RETENTION = 600.0


def _running(job_id: str, **kwargs: str) -> JobState:
    tree = flatten(job_object(job_id, "Running", created=START, updated=START, **kwargs), job_id)
    return JobState(job_id, project_id="p").succeeded(tree, START)


def _ended(before: JobState, phase: str, at: float, **kwargs: str) -> JobState:
    job_id = before.job_id
    body = job_object(job_id, phase, created=START, updated=at, **kwargs)
    return before.succeeded(flatten(body, job_id), at)


def _history(clock: Clock) -> tuple[JobHistory, Instruments]:
    instruments = Instruments()
    return (
        JobHistory(instruments.registry, started=START, retention=RETENTION, clock=clock),
        instruments,
    )


def _finished(instruments: Instruments, job_type: str = "CreateNode") -> float | None:
    return instruments.registry.get_sample_value(
        "cce_jobs_finished_total",
        {"project_id": "p", "cluster_id": "c-1", "job_type": job_type, "phase": "Failed"},
    )


def test_a_job_is_remembered_for_its_retention_then_forgotten() -> None:
    """A counted job seen ending again within its retention is not counted; later it may be."""
    clock = Clock(START + 100)
    recorder, instruments = _history(clock)
    running = _running("a")
    recorder.observe(None, running)
    recorder.observe(running, _ended(running, "Failed", clock.now))
    clock.now += RETENTION - 1
    recorder.observe(None, _ended(JobState("a", project_id="p"), "Failed", START + 100))
    assert _finished(instruments) == 1.0
    clock.now += 2
    recorder.observe(None, _ended(JobState("a", project_id="p"), "Failed", START + 100))
    assert _finished(instruments) == 2.0


def test_remembered_jobs_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """However many jobs end within a retention, at most MAX_REMEMBERED IDs are kept."""
    monkeypatch.setattr(history, "MAX_REMEMBERED", 10)
    clock = Clock(START + 1)
    recorder, instruments = _history(clock)
    for index in range(50):
        recorder.observe(None, _ended(JobState(f"j{index}", project_id="p"), "Failed", clock.now))
    assert _finished(instruments) == 50.0
    assert recorder.remembered <= 10


def test_label_sets_are_bounded_and_the_limit_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Past MAX_LABEL_SETS, jobs of new types are not counted, and one warning says so."""
    monkeypatch.setattr(history, "MAX_LABEL_SETS", 6)
    clock = Clock(START + 1)
    recorder, instruments = _history(clock)
    with caplog.at_level(logging.WARNING, logger="exporter.metrics.history"):
        for index in range(5):
            state = _ended(
                JobState(f"j{index}", project_id="p"), "Failed", clock.now, job_type=f"Type{index}"
            )
            recorder.observe(None, state)
    # Each counted type takes two label sets of cce_jobs_finished_total and two of the histogram.
    assert _finished(instruments, "Type0") == 1.0
    assert _finished(instruments, "Type4") is None
    families = {metric.name: metric for metric in instruments.registry.collect()}
    finished = [s for s in families["cce_jobs_finished"].samples if s.name.endswith("_total")]
    assert len(finished) <= 6
    assert [r.getMessage() for r in caplog.records] == ["history_label_limit"]


def test_a_job_without_an_end_time_first_seen_finished_does_not_count() -> None:
    """With no update time, a job found finished cannot be shown to have ended after the start."""
    clock = Clock(START + 1)
    recorder, instruments = _history(clock)
    body = job_object("x", "Failed", created=START)
    del body["metadata"]["updateTimestamp"]
    recorder.observe(None, JobState("x", project_id="p").succeeded(flatten(body, "x"), clock.now))
    assert _finished(instruments) is None
