"""Error bodies read as the official SDK reads them: the same code, message and policy text."""

import json
from typing import Any

import pytest
from huaweicloudsdkcce.v3.cce_exception_handler import CceExceptionHandler
from huaweicloudsdkcore.exceptions.exception_handler import DefaultExceptionHandler
from huaweicloudsdkcore.exceptions.exceptions import ServiceResponseException

from exporter.cce.transport import MAX_ENCODED_AUTHORIZATION_CHARS, error_detail, refusal_detail
from tests.standins.cce import SDK_ERROR_BODIES


class _Answer:
    """What the SDK's exception handlers read of an HTTP answer."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status_code = status
        self.content = json.dumps(body).encode()
        self.text = self.content.decode()
        self.headers = {"X-Request-Id": "req-1"}


def _sdk_reading(name: str, status: int = 400) -> ServiceResponseException:
    """Let the SDK read a stand-in body: CCE's handler for CCE's bodies, the core's for IAM's."""
    body = SDK_ERROR_BODIES[name]
    handler = DefaultExceptionHandler() if name in ("iam", "generic") else CceExceptionHandler()
    with pytest.raises(ServiceResponseException) as caught:
        handler.handle_exception(None, _Answer(status, body))
    return caught.value


def test_a_body_with_two_codes_reports_the_one_the_sdk_reports() -> None:
    """The real two-code body reports CCE_CM.0201 and its message, never E.CFE.4000201."""
    body = json.dumps(SDK_ERROR_BODIES["two_codes"]).encode()
    assert error_detail(body) == "CCE_CM.0201: Request body invalid"
    assert _sdk_reading("two_codes").error_code == "CCE_CM.0201"


@pytest.mark.parametrize("name", sorted(SDK_ERROR_BODIES))
def test_each_stand_in_body_reports_the_sdks_code_and_message(name: str) -> None:
    """For every stand-in error body, the detail is the SDK's code, then the SDK's message."""
    sdk = _sdk_reading(name)
    detail = error_detail(json.dumps(SDK_ERROR_BODIES[name]).encode())
    assert detail == f"{sdk.error_code}: {sdk.error_msg}"[:200]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        # The pairs in the SDK's order, whatever order the keys come in.
        ({"errorCode": "B", "errorMessage": "b", "error_code": "A", "error_msg": "a"}, "A: a"),
        ({"code": "C", "message": "c", "errorCode": "B", "errorMsg": "b"}, "B: b"),
        # A code without its own message takes the first message there is.
        ({"errorCode": "B", "message": "m"}, "B: m"),
        ({"error_code": "", "errorCode": "B"}, "B"),
        # Nested, IAM's `error` first; numbers are codes too.
        (
            {"other": {"code": "X"}, "error": {"code": 401, "message": "bad token"}},
            "401: bad token",
        ),
        ({"detail": {"error_code": "D", "error_msg": "deep"}}, "D: deep"),
        # A message alone (a Kubernetes Status), and a body with neither.
        ({"kind": "Status", "reason": "ServiceUnavailable"}, "ServiceUnavailable"),
        ({"code": {"not": "a value"}, "user": "x"}, "unexpected body with keys: code, user"),
    ],
)
def test_codes_and_messages_come_from_the_first_pair_present(
    body: dict[str, Any], detail: str
) -> None:
    """Code and message come from the first pair present, else nested, else a message alone."""
    assert error_detail(json.dumps(body).encode()) == detail


def test_a_refusal_keeps_the_policys_encoded_message_as_the_sdk_does() -> None:
    """A 403's encoded_authorization_message follows the detail, whole, as the SDK keeps it."""
    sdk = _sdk_reading("policy", 403)
    detail = refusal_detail(json.dumps(SDK_ERROR_BODIES["policy"]).encode())
    assert detail == (
        f"{sdk.error_code}: {sdk.error_msg}; encoded_authorization_message: {sdk.encoded_auth_msg}"
    )
    # A body without one says only what error_detail says.
    plain = json.dumps(SDK_ERROR_BODIES["cce"]).encode()
    assert refusal_detail(plain) == error_detail(plain)
    assert refusal_detail(b"<html>no</html>") == error_detail(b"<html>no</html>")


def test_a_long_encoded_message_is_cut_and_says_so() -> None:
    """An encoded message past the cap is cut there, with its full length told."""
    encoded = "x" * (MAX_ENCODED_AUTHORIZATION_CHARS + 5)
    body = {"error": {"code": "IAM.403", "message": "no", "encoded_authorization_message": encoded}}
    detail = refusal_detail(json.dumps(body).encode())
    kept = "x" * MAX_ENCODED_AUTHORIZATION_CHARS
    assert detail == (
        f"IAM.403: no; encoded_authorization_message: {kept} "
        f"(cut at {MAX_ENCODED_AUTHORIZATION_CHARS} of {len(encoded)} characters)"
    )
