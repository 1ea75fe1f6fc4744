r"""What crosses the API boundary: failures of a few kinds, and text made safe.

Failures are values at the boundary: each is an `ApiError` of one
`ErrorKind`, a label value users alert on.

Text from the APIs is made safe to encode: a lone surrogate becomes U+FFFD.
JSON may spell a code point that is not Unicode text, half of a surrogate pair
(`"\ud800"`), and `json.loads` keeps it in the string it builds; aiohttp does
the same for header bytes that are not UTF-8. Such a string cannot be encoded
as UTF-8 and would fail every response it reached. Every string read from an
API answer passes through `valid_text` before the rest of the exporter sees it.
"""

import re
from enum import StrEnum

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


class ErrorKind(StrEnum):
    """Why a request failed: the `error` label of `cce_job_poll_errors_total`."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    THROTTLED = "throttled"
    SERVER_ERROR = "server_error"
    INVALID_RESPONSE = "invalid_response"


TRANSIENT = frozenset(
    {ErrorKind.TIMEOUT, ErrorKind.CONNECTION, ErrorKind.SERVER_ERROR, ErrorKind.THROTTLED}
)


class ApiError(Exception):
    """A request to the API that did not give a usable answer."""

    def __init__(
        self,
        kind: ErrorKind,
        detail: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.kind = kind
        # Text from the answer (its body, a header, aiohttp's words on it) may
        # hold lone surrogates; this text reaches logs and the status pages.
        self.detail = valid_text(detail)
        self.status = status
        self.request_id = None if request_id is None else valid_text(request_id)
        # Seconds the API asked us to wait (its Retry-After header), if it did.
        self.retry_after = retry_after
        super().__init__(str(self))

    @property
    def transient(self) -> bool:
        """Tell whether trying again soon may succeed."""
        return self.kind in TRANSIENT

    def __str__(self) -> str:
        status = f"HTTP {self.status}: " if self.status is not None else ""
        request = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.kind}: {status}{self.detail}{request}"
