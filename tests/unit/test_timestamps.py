from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.jobs.timestamps import GO_ZERO_TIME_NS, is_zero_time, parse_timestamp

BASE = 1533197560  # 2018-08-02 08:12:40 UTC


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2018-08-02 08:12:40.672772389 +0000 UTC", BASE * 10**9 + 672772389),
        ("2018-08-02 08:12:40 +0000 UTC", BASE * 10**9),
        ("2018-08-02 08:12:40.5 +0000 UTC", BASE * 10**9 + 500_000_000),
        ("2018-08-02 08:12:40.987955 +0000 UTC", BASE * 10**9 + 987_955_000),
        ("2018-08-02 16:12:40.1 +0800 CST", BASE * 10**9 + 100_000_000),
        ("2018-08-02 03:12:40 -0500 EST", BASE * 10**9),
        ("2018-08-02 13:42:40 +0530 +0530", BASE * 10**9),
        ("2018-08-02 08:12:40.000000001 +0000 UTC m=+0.001234", BASE * 10**9 + 1),
        ("2018-08-02 08:12:40 +0000", BASE * 10**9),
        ("2018-08-02T08:12:40Z", BASE * 10**9),
        ("2018-08-02T08:12:40.672772389Z", BASE * 10**9 + 672772389),
        ("2018-08-02T10:12:40.25+02:00", BASE * 10**9 + 250_000_000),
        ("2018-08-02t08:12:40z", BASE * 10**9),
        ("2018-08-02T08:12:40.1234567891234Z", BASE * 10**9 + 123456789),
        ("  2018-08-02T08:12:40Z  ", BASE * 10**9),
    ],
)
def test_parses_go_and_rfc3339_forms(text: str, expected: int) -> None:
    """Every documented form parses to the exact Unix nanosecond."""
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2018-08-02",
        "2018-13-02 08:12:40 +0000 UTC",
        "2018-02-30T00:00:00Z",
        "2018-08-02 25:00:00 +0000 UTC",
        "2018-08-02 08:12:60 +0000 UTC",
        "2018-08-02 08:12:40 +2500 UTC",
        "2018-08-02T08:12:40",
        "2018-08-02T08:12:40+0200",
        "1533197560",
        "0001-01-01 00:00:00 +0100 X",
        "9999-12-31 23:59:59 -0100 X",
        "0001-01-01T00:30:00+01:00",
    ],
)
def test_rejects_what_is_not_a_timestamp(text: str) -> None:
    """Malformed or impossible timestamps give None instead of raising."""
    assert parse_timestamp(text) is None


moments = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60)


def _expected_nanos(moment: datetime, nanos: int) -> int:
    return int(moment.replace(microsecond=0).timestamp()) * 10**9 + nanos


@given(moment=moments, nanos=st.integers(0, 10**9 - 1), offset=offsets, digits=st.integers(0, 9))
def test_go_form_round_trips(moment: datetime, nanos: int, offset: int, digits: int) -> None:
    """A time written in Go's form with any offset and 0-9 digits parses back exactly."""
    kept = nanos - nanos % 10 ** (9 - digits)
    local = moment.astimezone(timezone(timedelta(minutes=offset)))
    sign = "-" if offset < 0 else "+"
    fraction = f".{kept:09d}"[: digits + 1] if digits else ""
    text = (
        f"{local:%Y-%m-%d %H:%M:%S}{fraction} "
        f"{sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d} ZONE"
    )
    assert parse_timestamp(text) == _expected_nanos(moment, kept)


@given(moment=moments, nanos=st.integers(0, 10**9 - 1), offset=offsets)
def test_rfc3339_round_trips(moment: datetime, nanos: int, offset: int) -> None:
    """A time written in RFC 3339 with any offset parses back exactly."""
    local = moment.astimezone(timezone(timedelta(minutes=offset)))
    sign = "-" if offset < 0 else "+"
    zone = "Z" if offset == 0 else f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    text = f"{local:%Y-%m-%dT%H:%M:%S}.{nanos:09d}{zone}"
    assert parse_timestamp(text) == _expected_nanos(moment, nanos)


@given(st.text(max_size=60))
def test_never_raises(text: str) -> None:
    """Any string gives an int or None, never an exception."""
    result = parse_timestamp(text)
    assert result is None or isinstance(result, int)


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01 00:00:00 +0000 UTC",  # time.Time{}.String()
        "0001-01-01T00:00:00Z",  # time.Time{} as JSON
        "0001-01-01T00:00:00.000000Z",
        "0001-01-01 00:00:00 +0000 UTC m=+0.000000001",
        "0001-01-01 08:00:00 +0800 CST",  # the same instant, printed in another zone
    ],
)
def test_go_zero_time_is_told_in_every_form(text: str) -> None:
    """Go's zero time.Time is recognised as unset, whichever way it is written."""
    assert parse_timestamp(text) == GO_ZERO_TIME_NS == -62_135_596_800 * 10**9
    assert is_zero_time(text)


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00.000000001Z",
        "0001-01-01 00:00:01 +0000 UTC",
        "0001-01-01 00:00:00 +0800 CST",
        "1970-01-01T00:00:00Z",
        "2018-08-02 08:12:40 +0000 UTC",
        "",
        "never",
    ],
)
def test_other_times_are_not_the_zero_time(text: str) -> None:
    """Moments next to the zero time, the Unix epoch and text that is no time are not it."""
    assert not is_zero_time(text)
