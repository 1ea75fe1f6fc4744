import string
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from yarl import URL

from exporter.cce.auth.aksk import AkSkAuth, canonical_path, sign
from exporter.cce.auth.base import OutgoingRequest
from tests.standins.cce import PROJECT_ID
from tests.standins.jobs import EXAMPLE_JOB_ID

JOB_URL = URL(
    f"https://cce.cn-north-4.myhuaweicloud.com/api/v3/projects/{PROJECT_ID}/jobs/{EXAMPLE_JOB_ID}"
)
DATE = "20251208T120000Z"


def test_known_answer_with_only_the_date() -> None:
    """The signature of the notes' first known answer is reproduced byte for byte."""
    headers = sign(
        "GET", JOB_URL, {}, b"", access_key="AKEXAMPLE", secret_key="SKEXAMPLE", date=DATE
    )
    assert headers["Authorization"] == (
        "SDK-HMAC-SHA256 Access=AKEXAMPLE, SignedHeaders=host;x-sdk-date, "
        "Signature=650cd876f54a9df614bafe7c24ed9ce44745ceaa142f6ac4e31398436c9f8433"
    )
    assert headers["Host"] == "cce.cn-north-4.myhuaweicloud.com"
    assert headers["X-Sdk-Date"] == DATE


def test_known_answer_with_content_type_and_project() -> None:
    """The notes' second known answer (Content-Type and X-Project-Id signed) is reproduced."""
    headers = sign(
        "GET",
        JOB_URL,
        {"Content-Type": "application/json", "X-Project-Id": PROJECT_ID},
        b"",
        access_key="AKEXAMPLE",
        secret_key="SKEXAMPLE",
        date=DATE,
    )
    assert headers["Authorization"] == (
        "SDK-HMAC-SHA256 Access=AKEXAMPLE, "
        "SignedHeaders=content-type;host;x-project-id;x-sdk-date, "
        "Signature=6005f34321732c15f99ccd720117d7789ea7cf58e0c8999d8d17fd0a69777560"
    )


def test_canonical_path_encodes_each_segment_and_ends_with_slash() -> None:
    """Path segments are decoded then re-encoded (unreserved and ~ kept), with a trailing /."""
    assert canonical_path("/a%20b/c~d/%E2%82%AC") == "/a%20b/c~d/%E2%82%AC/"
    assert canonical_path("/x/") == "/x/"


def _sdk_authorization(
    method: str, url: URL, headers: dict[str, str], body: bytes, *, ak: str, sk: str
) -> str:
    request = SdkRequest(
        method=method,
        schema=url.scheme,
        host=url.raw_authority,
        resource_path=url.raw_path,
        query_params=list(url.query.items()),
        header_params={**headers, "X-Sdk-Date": DATE},
        body=body,
    )
    signed = Signer(SimpleNamespace(ak=ak, sk=sk)).sign(request)
    return str(signed.header_params["Authorization"])


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
_HEADER_NAME = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)
_HEADER_VALUE = st.text(string.printable.replace("\r", "").replace("\n", ""), max_size=20)


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, URL, dict[str, str], bytes]:
    segments = draw(st.lists(_TEXT, min_size=1, max_size=5))
    raw_path = "/" + "/".join(quote(segment, safe="") for segment in segments)
    if draw(st.booleans()):
        raw_path += "/"
    host = draw(st.sampled_from(["cce.example.com", "127.0.0.1:8443", "[::1]:9000"]))
    url = URL(f"https://{host}{raw_path}", encoded=True)
    query = draw(st.lists(st.tuples(_TEXT, st.text(max_size=8)), max_size=4))
    if query:
        url = url.with_query(query)
    names = draw(st.lists(_HEADER_NAME, max_size=5, unique_by=str.lower))
    headers = {name: draw(_HEADER_VALUE) for name in names if name.lower() != "x-sdk-date"}
    if draw(st.booleans()):
        headers["Content-Type"] = draw(
            st.sampled_from(["application/json", "application/json;charset=utf8", "text/plain"])
        )
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    body = draw(st.binary(max_size=32)) if method in ("POST", "PUT") else b""
    return method, url, headers, body


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=_requests(), ak=st.text(string.ascii_uppercase, min_size=1, max_size=20))
def test_signatures_match_the_official_sdk(
    request: tuple[str, URL, dict[str, str], bytes], ak: str
) -> None:
    """On generated paths, queries, header sets and bodies, the signature is the SDK's."""
    method, url, headers, body = request
    ours = sign(method, url, headers, body, access_key=ak, secret_key="sk-" + ak, date=DATE)
    assert ours["Authorization"] == _sdk_authorization(
        method, url, headers, body, ak=ak, sk="sk-" + ak
    )


async def test_aksk_auth_adds_project_and_security_token_and_a_fresh_date() -> None:
    """The authenticator signs X-Project-Id and X-Security-Token, dated at each request."""
    now = [1765195200.0]  # 2025-12-08T12:00:00Z
    auth = AkSkAuth(
        SecretStr("AKEXAMPLE"),
        SecretStr("SKEXAMPLE"),
        project_id=PROJECT_ID,
        security_token=SecretStr("temporary-token"),
        clock=lambda: now[0],
    )
    request = OutgoingRequest("GET", JOB_URL, {"Content-Type": "application/json"})
    first = await auth.authenticate(request)
    assert first["X-Sdk-Date"] == DATE
    assert first["X-Project-Id"] == PROJECT_ID
    assert first["X-Security-Token"] == "temporary-token"
    assert (
        "SignedHeaders=content-type;host;x-project-id;x-sdk-date;x-security-token,"
        in (first["Authorization"])
    )
    now[0] += 61
    second = await auth.authenticate(request)
    assert second["X-Sdk-Date"] == "20251208T120101Z"
    assert second["Authorization"] != first["Authorization"]


def test_aksk_auth_repr_hides_the_keys() -> None:
    """The authenticator's repr names no key."""
    auth = AkSkAuth(
        SecretStr("AKVISIBLE"),
        SecretStr("SKVISIBLE"),
        project_id=None,
        security_token=SecretStr("TOKVISIBLE"),
    )
    assert "VISIBLE" not in repr(auth)


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream"])
def test_non_json_bodies_are_sent_unsigned_like_the_sdk(content_type: str) -> None:
    """A body that is not JSON is marked UNSIGNED-PAYLOAD, as the SDK does."""
    url = JOB_URL.with_path("/upload")
    headers = {"Content-Type": content_type}
    ours = sign("POST", url, headers, b"data", access_key="AK", secret_key="SK", date=DATE)
    assert ours["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"
    assert ours["Authorization"] == _sdk_authorization(
        "POST", url, headers, b"data", ak="AK", sk="SK"
    )
