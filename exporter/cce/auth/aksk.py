"""AK/SK request signing, SDK-HMAC-SHA256, the way Huawei Cloud's official SDK signs.

`sign` is the algorithm as a pure function of the request and the date;
`AkSkAuth` is the authenticator that signs every request with a fresh date.
"""

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import quote, unquote

from pydantic import SecretStr
from yarl import URL

from exporter.cce.auth.base import OutgoingRequest
from exporter.errors import ErrorKind

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_BODY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_CONTENT_SHA256 = "X-Sdk-Content-Sha256"


def _encode(text: str) -> str:
    """Percent-encode everything but the unreserved characters."""
    return quote(text, safe="~")


def canonical_path(raw_path: str) -> str:
    """Each segment of the (encoded) path decoded and re-encoded, with a trailing `/`."""
    path = "/".join(_encode(segment) for segment in unquote(raw_path).split("/"))
    return path if path.endswith("/") else path + "/"


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Return the query's `k=v` pairs, sorted, encoded and joined by `&`."""
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(pairs))


def sign(
    method: str,
    url: URL,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    date: str,
) -> dict[str, str]:
    """Return the headers to add to the request: `X-Sdk-Date`, `Host`, `Authorization`.

    Every header of `headers` whose name has no `_` is signed, with `Host`
    (taken from the URL unless given) and `X-Sdk-Date`.
    """
    added = {"X-Sdk-Date": date}
    lowered = {name.lower() for name in headers}
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    if content_type and not content_type.startswith(("application/json", "application/bson")):
        added[_CONTENT_SHA256] = "UNSIGNED-PAYLOAD"
    if "host" not in lowered:
        added["Host"] = url.raw_authority
    everything = {**{k: v for k, v in headers.items() if k.lower() != "x-sdk-date"}, **added}
    values = {name.lower(): str(value).strip() for name, value in everything.items()}
    signed = sorted(values.keys() - {name for name in values if "_" in name})
    if not body:
        payload_hash = EMPTY_BODY_SHA256
    else:
        payload_hash = values.get(_CONTENT_SHA256.lower()) or hashlib.sha256(body).hexdigest()
    canonical_request = "\n".join(
        [
            method.upper(),
            canonical_path(url.raw_path),
            canonical_query(url.query.items()),
            "".join(f"{name}:{values[name]}\n" for name in signed),
            ";".join(signed),
            payload_hash,
        ]
    )
    string_to_sign = "\n".join(
        [ALGORITHM, date, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    signature = hmac.new(secret_key.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
    added["Authorization"] = (
        f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return added


class AkSkAuth:
    """Signs each request with an access key pair, and a security token when temporary."""

    hints: Mapping[ErrorKind, str] = {
        ErrorKind.UNAUTHORIZED: (
            "the signature was refused: check that access_key and secret_key (or their *_file) "
            "are a current pair, security_token too when the keys are temporary, and that this "
            "host's clock is right (within 15 minutes)"
        ),
        ErrorKind.FORBIDDEN: (
            "the access key's user lacks permission: grant cce:job:get "
            "(and cce:job:list for discovery, cce:cluster:list for cluster names) on project_id"
        ),
    }

    def __init__(
        self,
        access_key: SecretStr,
        secret_key: SecretStr,
        *,
        project_id: str | None,
        security_token: SecretStr | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._access_key = access_key
        self._secret_key = secret_key
        self._project_id = project_id
        self._security_token = security_token
        self._clock = clock

    def __repr__(self) -> str:
        token = ", security_token=**********" if self._security_token else ""
        return f"AkSkAuth(access_key=**********, secret_key=**********{token})"

    async def authenticate(self, request: OutgoingRequest) -> dict[str, str]:
        """Return the signature headers, dated now."""
        extra: dict[str, str] = {}
        if self._project_id:
            extra["X-Project-Id"] = self._project_id
        if self._security_token is not None:
            extra["X-Security-Token"] = self._security_token.get_secret_value()
        date = time.strftime(DATE_FORMAT, time.gmtime(self._clock()))
        signed = sign(
            request.method,
            request.url,
            {**request.headers, **extra},
            request.body,
            access_key=self._access_key.get_secret_value(),
            secret_key=self._secret_key.get_secret_value(),
            date=date,
        )
        return extra | signed

    def refused(self, sent: Mapping[str, str]) -> bool:
        """Say that a key pair is not renewed by the exporter."""
        return False
