"""Timestamps as CCE writes them, to integer Unix nanoseconds.

CCE is written in Go, whose zero `time.Time` (0001-01-01 00:00:00 UTC) is what
a time that was never set prints as. It parses like any instant, but it is
none: `is_zero_time` tells it, and readers treat it as an absent field.
"""

import re
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache

# Go's time.Time.String(): "2018-08-02 08:12:40.672772389 +0000 UTC", with 0 to 9
# fraction digits, any offset, any zone name (or none), and possibly the
# monotonic clock reading Go appends ("m=+0.001").
_GO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r" ([+-])(\d{2})(\d{2})(?: [^\s]+)?(?: m=[+-]\d+(?:\.\d+)?)?",
    re.ASCII,
)
# RFC 3339: "2023-01-01T10:00:00Z", "2023-01-01T10:00:00.5+08:00".
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_S = 1_000_000_000
# Go's zero time.Time, as Unix nanoseconds: "0001-01-01 00:00:00 +0000 UTC" in
# time.Time.String(), "0001-01-01T00:00:00Z" in JSON.
GO_ZERO_TIME_NS = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(seconds=1) * _NS_PER_S


# The longest timestamp text that is parsed: Go's longest form, with a long
# zone name and the monotonic reading, is about 60 characters. Longer text is
# refused before it reaches the cache, which so holds a few MB at the most.
MAX_TIMESTAMP_CHARS = 100
_CACHE_SIZE = 65536


def parse_timestamp(text: str) -> int | None:
    """Parse a CCE timestamp to Unix nanoseconds, or None when it does not parse.

    Digits of the fraction past the ninth (finer than a nanosecond) are dropped;
    text longer than MAX_TIMESTAMP_CHARS does not parse.
    """
    if len(text) > MAX_TIMESTAMP_CHARS:
        return None
    return _parse(text)


# A job's timestamps come back unchanged at every poll (sub-jobs that are done
# or waiting, creation times): most parses are answered from this cache.
@lru_cache(maxsize=_CACHE_SIZE)
def _parse(text: str) -> int | None:
    """Parse timestamp text of a bounded length (see parse_timestamp)."""
    text = text.strip()
    match = _GO.fullmatch(text) or _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    offset = timedelta(0)
    if sign is not None:
        if int(off_h) > 23 or int(off_m) > 59:
            return None
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        if sign == "-":
            offset = -offset
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=timezone(offset),
        )
    except ValueError:  # month 13, February 30th, second 60 and the like
        return None
    try:
        moment.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 that its offset takes out of range
        return None
    seconds = (moment - _EPOCH) // timedelta(seconds=1)
    nanos = int((fraction or "").ljust(9, "0")[:9])
    return seconds * _NS_PER_S + nanos


def is_zero_time(text: str) -> bool:
    """Tell whether `text` is Go's zero time, in any form: a time that was never set."""
    return parse_timestamp(text) == GO_ZERO_TIME_NS
