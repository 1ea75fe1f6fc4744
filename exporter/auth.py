"""Ways of authenticating requests to the CCE API.

Each is an `Authenticator`: given a request about to be sent, it returns the
headers that authenticate it. The client knows nothing more of credentials.
"""

from dataclasses import dataclass
from typing import Protocol

from pydantic import SecretStr
from yarl import URL


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    """What an authenticator may need to know of a request: all of it."""

    method: str
    url: URL
    headers: dict[str, str]
    body: bytes = b""


class Authenticator(Protocol):
    """Adds credentials to requests."""

    async def authenticate(self, request: OutgoingRequest) -> dict[str, str]:
        """Return the headers to add to `request`."""
        ...


class TokenAuth:
    """A static token, sent as `X-Auth-Token`."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "TokenAuth(token=**********)"

    async def authenticate(self, request: OutgoingRequest) -> dict[str, str]:
        """Return the token header."""
        return {"X-Auth-Token": self._token.get_secret_value()}
