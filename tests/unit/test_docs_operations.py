import re
from pathlib import Path

from exporter.cce.client import MAX_LIST_BODY_BYTES, RetryPolicy
from exporter.cce.ratelimit import THROTTLE_PAUSE, THROTTLE_PAUSE_CAP
from exporter.cce.transport import MAX_BODY_BYTES
from exporter.errors import TRANSIENT, ErrorKind
from exporter.jobs.timestamps import MAX_TIMESTAMP_CHARS
from exporter.jobs.tree import MAX_LABEL_CHARS, MAX_NODES, MAX_REASON_CHARS
from exporter.jobs.v2 import MAX_LISTED_JOBS

ROOT = Path(__file__).parents[2]


def _operations() -> str:
    """The operations guide."""
    return (ROOT / "docs" / "operations.md").read_text()


def test_operations_explains_every_error_kind() -> None:
    """The error table lists exactly the kinds of cce_job_poll_errors_total."""
    text = _operations()
    table = text[text.index("| `error` |") :].split("\n\n")[0].split("\n", 1)[1]
    kinds = re.findall(r"^\| `([a-z_]+)` \| ", table, flags=re.MULTILINE)
    assert sorted(kinds) == sorted(kind.value for kind in ErrorKind)


def test_operations_states_the_code_s_numbers() -> None:
    """Attempts, waits, the body and node caps, the transient kinds: stated as the code has them."""
    text = " ".join(_operations().split())
    policy = RetryPolicy()
    assert f"up to {policy.attempts} attempts" in text
    assert f"capped at {policy.cap:g} s" in text
    assert f"between 0 and {policy.initial:g} s" in text
    assert f"longer than {policy.max_retry_after:g} s" in text
    assert f"{MAX_BODY_BYTES // 2**20} MiB" in text
    assert f"more than {MAX_NODES:,} nodes" in text
    assert f"job tree has more than {MAX_NODES} nodes" in text
    assert f"for {THROTTLE_PAUSE:g} s" in text
    assert f"up to {THROTTLE_PAUSE_CAP:g} s" in text
    transient = re.search(r"transient kind \(([^)]*)\)", text)
    assert transient is not None
    assert set(re.findall(r"`([a-z_]+)`", transient.group(1))) == {k.value for k in TRANSIENT}


def test_operations_states_the_limits_on_what_arrives() -> None:
    """The job list's body and item caps, the label and timestamp lengths: as the code has them."""
    text = " ".join(_operations().split())
    assert f"up to {MAX_LIST_BODY_BYTES // 2**20} MiB" in text
    assert f"first {MAX_LISTED_JOBS:,} jobs" in text
    assert f"longer than {MAX_TIMESTAMP_CHARS} characters" in text
    assert f"cut to {MAX_LABEL_CHARS} characters" in text
    assert f"up to {MAX_REASON_CHARS:,} characters of a reason" in text
    metrics = " ".join((ROOT / "docs" / "metrics.md").read_text().split())
    assert f"is cut to {MAX_LABEL_CHARS} characters" in metrics
