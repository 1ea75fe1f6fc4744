r"""Text from the APIs made safe to encode: a lone surrogate becomes U+FFFD.

JSON may spell a code point that is not Unicode text, half of a surrogate pair
(`"\ud800"`), and `json.loads` keeps it in the string it builds; aiohttp does
the same for header bytes that are not UTF-8. Such a string cannot be encoded
as UTF-8 and would fail every response it reached. Every string read from an
API answer passes through `valid_text` before the rest of the exporter sees it.
"""

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """Return `text` with each code point UTF-8 cannot encode (a surrogate) replaced by U+FFFD."""
    if text.isascii():  # the common case, answered from a flag of the string
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text
