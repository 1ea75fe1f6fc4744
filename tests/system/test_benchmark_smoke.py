import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"


@pytest.mark.slow
def test_benchmark_script_runs_at_a_tiny_size() -> None:
    """The benchmark script runs every benchmark at a tiny size and prints its figures."""
    result = subprocess.run(  # noqa: S603 - our own script, with this interpreter
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for section in ("scrape:", "poll:", "cpu:", "requests:", "memory:", "series:", "status:"):
        assert section in out
    assert "/metrics gzip time / (generate_latest + gzip time)" in out
    assert "v3 requests for jobs known finished" in out
    # The four figures of issue 16, each beside what it is measured against.
    assert "exporter CPU per poll / bare loop's (median of the rounds)" in out
    assert "aiohttp GET + json.loads CPU per request" in out
    assert "resident memory after plain scrapes too (VmRSS)" in out
    assert "job series, dense form" in out
    assert "job series, sparse / dense" in out
    assert "goals:" in out
