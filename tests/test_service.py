"""The service's own loops: one that ends on its own stops the process with exit 1."""

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import pytest

from exporter.app import Exporter, run_service
from exporter.config import load_settings
from tests.standin import free_port


async def _returns_at_once() -> None:
    """A loop that, by a bug, returns instead of running until cancelled."""


async def test_a_loop_that_ends_stops_the_service_with_exit_1(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A background loop that returns is logged as loop_ended, and the service exits 1."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "service-test-token")
    settings = load_settings(
        {
            "endpoint": "http://127.0.0.1:9",
            "project_id": "service",
            "listen_address": f"127.0.0.1:{free_port()}",
        }
    )

    def companions(ex: Exporter) -> list[Coroutine[Any, Any, None]]:
        return [_returns_at_once()]

    with caplog.at_level(logging.ERROR, logger="exporter"):
        status = await asyncio.wait_for(run_service(settings, asyncio.Event(), companions), 10)
    assert status == 1
    [record] = [r for r in caplog.records if r.getMessage() == "loop_ended"]
    assert record.fields == {"task": "_returns_at_once"}  # type: ignore[attr-defined]
    assert record.exc_info is not None
