"""Failures at the API boundary: a few kinds, each a label value users alert on."""

from enum import StrEnum

from exporter.text import valid_text


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
