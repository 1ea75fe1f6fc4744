"""Structured logging: one event name and key=value fields per line, as text or JSON."""

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

_FIELDS = "fields"
# The target whose work the running task does, if any: its name leads every
# event logged meanwhile, so that the lines of one target's client,
# authentication and discovery say whose they are.
_target: ContextVar[str | None] = ContextVar("log_target", default=None)


@contextlib.contextmanager
def about_target(name: str) -> Iterator[None]:
    """Name `name` as the target in every event the task logs within the block."""
    token = _target.set(name)
    try:
        yield
    finally:
        _target.reset(token)


class _TextFormatter(logging.Formatter):
    """`2026-01-02T03:04:05.678Z info poll_failed job_id=abc error=timeout`."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, _FIELDS, {})
        parts = [_timestamp(record.created), record.levelname.lower(), record.getMessage()]
        parts += [f"{key}={_text_value(value)}" for key, value in fields.items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, event, and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, _FIELDS, {})
        entry: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        entry |= {key: value for key, value in fields.items() if key not in entry}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _timestamp(created: float) -> str:
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


def _text_value(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def event(logger: logging.Logger, level: int, name: str, **fields: object) -> None:
    """Log the event `name` with its fields (the target's name first, within `about_target`)."""
    if logger.isEnabledFor(level):
        target = _target.get()
        if target is not None and "target" not in fields:
            fields = {"target": target, **fields}
        logger.log(level, name, extra={_FIELDS: fields})


def crash(logger: logging.Logger, name: str, error: BaseException, **fields: object) -> None:
    """Log the error event `name` of a bug, with its fields and the traceback of `error`."""
    logger.error(name, exc_info=error, extra={_FIELDS: fields})


# Distinct field sets a Summary counts apart in one interval; more share one line.
_MAX_SUMMARY_KEYS = 16

CallLater = Callable[[float, Callable[[], None]], object]


class Summary:
    """Logs an event that may repeat without end as one line per interval, with its count.

    The first occurrence after a quiet interval is logged at once (`count=1`);
    the ones that follow within `interval` seconds are counted, and logged
    together when it ends (`count=N`, `interval_seconds`), one line for each
    distinct set of fields (at most a few; any more share one line without
    fields). Where no event loop runs to end the interval, each occurrence
    is logged as it comes.
    """

    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        name: str,
        *,
        interval: float = 60.0,
        call_later: CallLater | None = None,
    ) -> None:
        self._logger = logger
        self._level = level
        self._name = name
        self._interval = interval
        self._call_later = call_later
        self._open = False
        self._counts: dict[tuple[tuple[str, object], ...], int] = {}

    def add(self, count: int = 1, **fields: object) -> None:
        """Count `count` occurrences of the event with these fields."""
        if not self._open:
            event(self._logger, self._level, self._name, count=count, **fields)
            self._open = self._schedule()
            return
        key = tuple(fields.items())
        if key not in self._counts and len(self._counts) >= _MAX_SUMMARY_KEYS:
            key = ()
        self._counts[key] = self._counts.get(key, 0) + count

    def _schedule(self) -> bool:
        call_later = self._call_later
        if call_later is None:
            try:
                call_later = asyncio.get_running_loop().call_later
            except RuntimeError:  # no loop: nothing would end the interval
                return False
        call_later(self._interval, self._close)
        return True

    def _close(self) -> None:
        counts, self._counts = self._counts, {}
        for key, count in counts.items():
            event(
                self._logger,
                self._level,
                self._name,
                count=count,
                interval_seconds=self._interval,
                **dict(key),
            )
        # Quiet for a whole interval: the next occurrence is news, logged at once.
        self._open = bool(counts) and self._schedule()


def setup_logging(level: str, log_format: str) -> None:
    """Send every log line to stderr in the chosen format and level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would print a line per scrape.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
