from pathlib import Path

from exporter.server.connections import HEAD_TIMEOUT, MAX_CONNECTIONS, WRITE_TIMEOUT
from exporter.server.endpoints import WRITE_BYTES
from exporter.server.statuspage import VIEW_MAX_AGE
from exporter.server.statuspage.views import MAX_VIEW_BYTES, MAX_VIEWS
from exporter.server.webconfig.basic_auth import CHECKS_PER_CLIENT

ROOT = Path(__file__).parents[2]


def test_security_states_the_http_server_s_limits() -> None:
    """The limits of the HTTP server are stated in docs/security.md as the code has them."""
    text = " ".join((ROOT / "docs" / "security.md").read_text().split())
    limits = text[text.index("## Limits of the HTTP server") :]
    assert f"a whole request head {HEAD_TIMEOUT:g} seconds after connecting" in limits
    assert f"takes none of for {WRITE_TIMEOUT:g} seconds" in limits
    assert f"At most {MAX_CONNECTIONS} connections" in limits
    assert f"{WRITE_BYTES // 1024} KiB at a time" in limits
    assert f"up to {VIEW_MAX_AGE:g} seconds" in limits
    assert f"at most {MAX_VIEWS} of them and {MAX_VIEW_BYTES >> 20} MiB together" in limits
    assert f"at most {CHECKS_PER_CLIENT} checks running or waiting" in text
