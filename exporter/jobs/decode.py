"""JSON as the API writes it, decoded whatever it holds: invalid bytes, huge numbers.

A value the exporter does not read must not fail an answer: a byte that is
not UTF-8 becomes U+FFFD, and an integer too long for `int()` (Python refuses
more than 4,300 digits) is kept as a float, which a field that wants text or
an object refuses alone.
"""

import codecs
import json
from typing import Any

# Integers longer than this are kept as a float (infinite, past 308 digits).
_MAX_INT_DIGITS = 100


def _parse_int(text: str) -> int | float:
    return int(text) if len(text) <= _MAX_INT_DIGITS else float(text)


def _each_object(value: dict[str, Any]) -> dict[str, Any]:
    # Only there to be Python code that runs between objects: a worker thread
    # that runs none keeps the interpreter, and so the event loop, for the
    # whole decode.
    return value


_SURROGATE_BYTES = (0xED, range(0xA0, 0xC0))
_TAIL = range(0x80, 0xC0)


def _replace_bad_bytes(error: UnicodeError) -> tuple[str, int]:
    """Replace what does not decode by U+FFFD: an encoded surrogate whole, else byte by byte."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    data, start = error.object, error.start
    # A surrogate written as UTF-8 (ED A0..BF 80..BF), which json.loads lets
    # through: one character, as exporter.errors.valid_text makes it.
    follows = data[start + 1 : start + 3]
    lead, high = _SURROGATE_BYTES
    if data[start] == lead and len(follows) == 2 and follows[0] in high and follows[1] in _TAIL:
        return "\ufffd", start + 3
    return "\ufffd", error.end


_BAD_BYTES = "cce-exporter-replace"
codecs.register_error(_BAD_BYTES, _replace_bad_bytes)

DECODER = json.JSONDecoder(parse_int=_parse_int)
# For worker threads: as DECODER, but lets the event loop run between objects.
THREAD_DECODER = json.JSONDecoder(parse_int=_parse_int, object_hook=_each_object)


def body_text(body: bytes) -> str:
    """Return the body as text, in the encoding its first bytes tell; bad bytes become U+FFFD."""
    return body.decode(json.detect_encoding(body), _BAD_BYTES)


def loads(body: bytes) -> Any:
    """Decode a JSON body; raise ValueError (or RecursionError) when it is not JSON."""
    return DECODER.decode(body_text(body))
