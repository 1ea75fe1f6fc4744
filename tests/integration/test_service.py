"""The service's own loops: one that ends on its own stops the process with exit 1."""

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from exporter.app import Exporter, run_service
from exporter.settings.load import load_settings
from tests.standins.processes import free_port


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


async def test_the_service_runs_the_web_config_reload_loop_and_cancels_it(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With web_config_file, the reload loop is one of the service's tasks, cancelled at stop."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "service-test-token")
    web_config = tmp_path / "web.yml"
    web_config.write_text("basic_auth_users: {}\n")
    settings = load_settings(
        {
            "endpoint": "http://127.0.0.1:9",
            "project_id": "service",
            "listen_address": f"127.0.0.1:{free_port()}",
            "web_config_file": str(web_config),
        }
    )
    stop = asyncio.Event()
    loops: list[asyncio.Task[Any]] = []

    async def look_then_stop() -> None:
        loops.extend(
            task
            for task in asyncio.all_tasks()
            if task.get_coro().__qualname__ == "LiveWebConfig.run"  # type: ignore[union-attr]
        )
        stop.set()

    status = await asyncio.wait_for(run_service(settings, stop, lambda ex: [look_then_stop()]), 10)
    assert status == 0
    [loop] = loops
    assert loop.cancelled()
