"""The shipped alerts and recording rules answer alike whether the exporter is dense or sparse.

Every promtool test file of config/ (`*.test.yml`) is run as it is, and again
in its sparse form: the same test, with each zero-valued sample of the series
that `sparse_metrics` leaves out at zero (cce_job_status_phase,
cce_job_subjobs, cce_job_poll_errors_total) made absent. Where a series had a
value just before, its first absent sample is a staleness marker, as
Prometheus writes one when a scraped series disappears; otherwise `_`. The
expected alerts and samples stay as they are: a rule that leaned on a zero
sample fails here. New test files in config/ are covered as they come.
"""

import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.standins.processes import require_program

CONFIG = Path(__file__).parents[2] / "config"
SPARSE_FAMILIES = ("cce_job_status_phase", "cce_job_subjobs", "cce_job_poll_errors_total")
TEST_FILES = sorted(CONFIG.glob("*.test.yml"))

_NUMBER = r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|Inf|inf|NaN|nan)"
# a, a+bxn or a-bxn (n + 1 values: a, a+b, ..., a+nb), axn (a+0xn), _ and _xn (n missing).
_SEQUENCE = re.compile(rf"(?P<a>{_NUMBER})(?:(?P<sign>[-+])(?P<b>{_NUMBER}))?x(?P<n>\d+)")
_SINGLE = re.compile(_NUMBER)
_MISSING = re.compile(r"_(?:x(?P<n>\d+))?")


@dataclass(frozen=True)
class Run:
    """Steps of a series' values: `count` missing ones, a stale marker, a number or a sequence."""

    kind: str  # "missing", "stale", "zero" or "values"
    count: int = 1
    text: str = ""  # "values": the notation of these steps


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _runs(values: str) -> list[Run]:
    """Read promtool's notation of a series' values into runs, the zero ones told apart."""
    runs = []
    for token in values.split():
        if token == "stale":
            runs.append(Run("stale"))
        elif missing := _MISSING.fullmatch(token):
            runs.append(Run("missing", int(missing["n"] or 1)))
        elif _SINGLE.fullmatch(token):
            runs.append(Run("zero") if float(token) == 0 else Run("values", 1, token))
        elif sequence := _SEQUENCE.fullmatch(token):
            runs += _sequence_runs(token, sequence)
        else:
            msg = f"cannot read {token!r} of the values {values!r}"
            raise ValueError(msg)
    return runs


def _sequence_runs(token: str, sequence: re.Match[str]) -> list[Run]:
    """Split a sequence a+bxn around the one step where it is zero, if it has one."""
    start, count = float(sequence["a"]), int(sequence["n"]) + 1
    step = float(sequence["b"] or 0) * (-1 if sequence["sign"] == "-" else 1)
    if step == 0:
        return [Run("zero", count)] if start == 0 else [Run("values", count, token)]
    at = -start / step
    if not (at.is_integer() and 0 <= at < count) or not math.isfinite(at):
        return [Run("values", count, token)]
    k = int(at)
    runs = []
    change = f"{sequence['sign']}{sequence['b']}"
    if k:
        runs.append(Run("values", k, f"{sequence['a']}{change}x{k - 1}"))
    runs.append(Run("zero"))
    if count - k - 1:
        after = _number(start + (k + 1) * step)
        runs.append(Run("values", count - k - 1, f"{after}{change}x{count - k - 2}"))
    return runs


def sparse_values(values: str) -> str:
    """Return a series' values as the sparse form has them: zeros absent, stale where they go."""
    out: list[str] = []
    absent = 0  # missing steps not yet written: a run of them is written as one
    visible = False  # a value is on show (Prometheus looks back for it)

    def flush() -> None:
        nonlocal absent
        if absent:
            out.append("_" if absent == 1 else f"_x{absent}")
            absent = 0

    def write(token: str) -> None:
        flush()
        out.append(token)

    for run in _runs(values):
        if run.kind == "zero":
            if visible:
                write("stale")
            absent += run.count - visible
            visible = False
        elif run.kind == "missing":
            absent += run.count
        elif run.kind == "stale":
            write("stale")
            visible = False
        else:
            write(run.text)
            visible = True
    flush()
    return " ".join(out)


def _sparse_file(path: Path) -> tuple[dict[str, Any], int]:
    """Return a promtool test file in its sparse form, and how many series it changed."""
    tests = yaml.safe_load(path.read_text())
    tests["rule_files"] = [str(path.parent / name) for name in tests.get("rule_files", [])]
    changed = 0
    for test in tests.get("tests", []):
        for series in test.get("input_series", []):
            if series["series"].startswith(SPARSE_FAMILIES):
                values = str(series["values"])
                series["values"] = sparse_values(values)
                changed += series["values"] != values
    return tests, changed


def _promtool_test(promtool: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - a fixed program on our own files
        [promtool, "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("dense", "sparse"),
    [
        ("0x5", "_x6"),
        ("0+0x5", "_x6"),
        ("1x9 0x20 stale", "1x9 stale _x20 stale"),
        ("0x9 1x20 stale", "_x10 1x20 stale"),
        ("0+2x30", "_ 2+2x29"),
        ("0 0+1x29", "_x2 1+1x28"),
        ("-2+1x4", "-2+1x1 stale 1+1x1"),
        ("3-1x3", "3-1x2 stale"),
        ("1 _ 0 0 5", "1 _ stale _ 5"),
        ("_x3 0 1.5", "_x4 1.5"),
        ("0.5+1x3 stale 0", "0.5+1x3 stale _"),
    ],
)
def test_zeros_become_absent_samples(dense: str, sparse: str) -> None:
    """Zero samples, in every notation, become `_`, the first after a value a stale marker."""
    assert sparse_values(dense) == sparse


def test_unknown_notation_is_refused() -> None:
    """A values token this test cannot read fails it, rather than passing unchanged."""
    with pytest.raises(ValueError, match="cannot read"):
        sparse_values("1 {{schema:0 sum:1 count:1}}")


def test_there_are_rule_tests_to_run() -> None:
    """config/ holds promtool tests of the alerts, among them series the sparse form thins."""
    assert CONFIG / "alerts.test.yml" in TEST_FILES
    _, changed = _sparse_file(CONFIG / "alerts.test.yml")
    assert changed >= 10


@pytest.mark.parametrize("path", TEST_FILES, ids=[path.name for path in TEST_FILES])
def test_rule_tests_pass_in_both_forms(path: Path, tmp_path: Path) -> None:
    """A promtool test file passes as written (dense) and with its zeros made absent (sparse)."""
    promtool = require_program("promtool")
    dense = _promtool_test(promtool, path)
    assert dense.returncode == 0, dense.stdout + dense.stderr
    sparse, _ = _sparse_file(path)
    sparse_path = tmp_path / path.name
    sparse_path.write_text(yaml.safe_dump(sparse, sort_keys=False, width=1000))
    result = _promtool_test(promtool, sparse_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
