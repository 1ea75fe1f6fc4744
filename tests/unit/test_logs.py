import json
import logging
from collections.abc import Iterator

import pytest

from exporter.logs import crash, event, setup_logging


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
