"""Ways of authenticating requests to the CCE API.

Each is an `Authenticator`: given a request about to be sent, it returns the
headers that authenticate it. The client knows nothing more of credentials.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from pydantic import SecretStr
from yarl import URL

from exporter.errors import ErrorKind


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    """What an authenticator may need to know of a request: all of it."""

    method: str
    url: URL
    headers: dict[str, str]
    body: bytes = b""


class Authenticator(Protocol):
    """Adds credentials to requests."""

    # What to check when the API refuses the credentials (401) or the permission (403).
    hints: Mapping[ErrorKind, str]

    async def authenticate(self, request: OutgoingRequest) -> dict[str, str]:
        """Return the headers to add to `request`."""
        ...

    def refused(self, sent: Mapping[str, str]) -> bool:
        """Hear that the API answered 401 to a request sent with `sent` headers.

        Return True when the credentials were renewed since (a retry may work).
        """
        ...


TOKEN_HINTS: Mapping[ErrorKind, str] = {
    ErrorKind.UNAUTHORIZED: (
        "the token in auth_token (or auth_token_file) is wrong or expired (tokens live 24 h); "
        "use AK/SK or IAM settings for credentials that do not expire"
    ),
    ErrorKind.FORBIDDEN: (
        "the token's user lacks permission: grant cce:job:get (and cce:job:list for discovery, "
        "cce:cluster:list for cluster names) on project_id"
    ),
}


class TokenAuth:
    """A static token, sent as `X-Auth-Token`."""

    hints = TOKEN_HINTS

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "TokenAuth(token=**********)"

    async def authenticate(self, request: OutgoingRequest) -> dict[str, str]:
        """Return the token header."""
        return {"X-Auth-Token": self._token.get_secret_value()}

    def refused(self, sent: Mapping[str, str]) -> bool:
        """Say that a static token cannot be renewed."""
        return False
