import json
import logging
from collections.abc import Callable, Iterator

import pytest

from exporter.logs import Summary, crash, event, setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger back as it was after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_have_event_and_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """Text logs are one line: time, level, event, then key=value fields, quoted when needed."""
    setup_logging("info", "text")
    event(logging.getLogger("exporter.test"), logging.WARNING, "job_poll_failing",
          job_id="abc", error="timeout", detail="no answer within 10 s")  # fmt: skip
    event(logging.getLogger("exporter.test"), logging.DEBUG, "hidden", job_id="x")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    timestamp, level, rest = lines[0].split(" ", 2)
    assert timestamp.endswith("Z")
    assert level == "warning"
    assert rest == 'job_poll_failing job_id=abc error=timeout detail="no answer within 10 s"'


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_are_objects(capsys: pytest.CaptureFixture[str]) -> None:
    """JSON logs are one object a line, with ts, level, event and the fields."""
    setup_logging("debug", "json")
    event(logging.getLogger("exporter.test"), logging.INFO, "job_finished",
          job_id="abc", phase="Failed", reason='quota "exceeded"\nfor ECS')  # fmt: skip
    crash(logging.getLogger("exporter.test"), "poll_crashed", ValueError("boom"), job_id="abc")
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["event"] == "job_finished"
    assert first["level"] == "info"
    assert first["reason"] == 'quota "exceeded"\nfor ECS'
    assert first["logger"] == "exporter.test"
    assert second["event"] == "poll_crashed"
    assert second["job_id"] == "abc"
    assert "ValueError: boom" in second["exception"]


def test_a_summary_logs_the_first_event_then_counts_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A flood is one line at once, then one line per interval and field set, with its count."""
    timers: list[Callable[[], None]] = []
    summary = Summary(
        logging.getLogger("exporter.test"),
        logging.WARNING,
        "jobs_refused",
        interval=60,
        call_later=lambda _delay, callback: timers.append(callback),
    )
    with caplog.at_level(logging.WARNING, logger="exporter.test"):
        for _ in range(1000):
            summary.add(route="discovery")
        summary.add(5, route="file")
        assert [r.fields for r in caplog.records] == [{"count": 1, "route": "discovery"}]
        timers.pop()()  # the interval ends
        assert [r.fields for r in caplog.records[1:]] == [
            {"count": 999, "interval_seconds": 60, "route": "discovery"},
            {"count": 5, "interval_seconds": 60, "route": "file"},
        ]
        timers.pop()()  # a quiet interval: nothing to say, and the next one is news
        assert timers == []
        summary.add(route="api")
    assert len(caplog.records) == 4
    assert caplog.records[-1].fields == {"count": 1, "route": "api"}


def test_a_summary_keeps_few_field_sets_apart(caplog: pytest.LogCaptureFixture) -> None:
    """Beyond a few distinct field sets in an interval, the rest share one line: lines stay few."""
    timers: list[Callable[[], None]] = []
    summary = Summary(
        logging.getLogger("exporter.test"),
        logging.WARNING,
        "refused",
        call_later=lambda _delay, callback: timers.append(callback),
    )
    with caplog.at_level(logging.WARNING, logger="exporter.test"):
        for n in range(1000):
            summary.add(remote=f"10.0.0.{n}")
        timers.pop()()
    assert 2 <= len(caplog.records) <= 18
    assert sum(r.fields["count"] for r in caplog.records) == 1000
