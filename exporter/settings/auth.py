"""The rules of the ways of authenticating, for the top-level settings and for each target.

Exactly one way (token, AK/SK or IAM), each complete, each secret given once.
The rules read the settings by name, so that a target, which has the same
authentication settings as the top level, is judged by the same rules.
"""

from typing import Protocol

from pydantic import SecretStr

from exporter.settings.model import AUTH_METHODS, SECRET_FIELDS

AUTH_SETTINGS = frozenset(name for names in AUTH_METHODS.values() for name in names)
METHOD_NAMES = {"token": "token", "aksk": "AK/SK", "iam": "IAM"}


class AuthSource(Protocol):
    """Settings that hold the authentication settings: the top level, or one target."""

    @property
    def region(self) -> str | None:
        """The region, to derive the IAM endpoint from."""

    @property
    def iam_endpoint(self) -> str | None:
        """The IAM endpoint, when given."""

    def secret(self, name: str) -> SecretStr | None:
        """Return a secret setting's value, given directly or by its `*_file` form."""


def auth_problems(
    settings: AuthSource, *, demo: bool, shared: bool = False
) -> list[tuple[str, str]]:
    """Exactly one way of authenticating, each complete, each secret given once.

    `shared` is for the top-level authentication of several targets: it may be
    absent (every target may bring its own), and each target that uses it
    derives the IAM endpoint from its own region.
    """
    problems = [
        (f"{name}_file", f"set {name} or {name}_file, not both")
        for name in sorted(SECRET_FIELDS)
        if f"{name}_file" in SECRET_FIELDS
        # getattr with a default: a target has the secrets of authentication only
        and getattr(settings, name, None) is not None
        and getattr(settings, f"{name}_file", None) is not None
    ]
    used = {
        method: [name for name in names if getattr(settings, name) is not None]
        for method, names in AUTH_METHODS.items()
    }
    used = {method: names for method, names in used.items() if names}
    if len(used) > 1:
        found = " and ".join(f"{METHOD_NAMES[m]} ({', '.join(n)})" for m, n in used.items())
        first = next(iter(used.values()))[0]
        problems.append(
            (first, f"configure exactly one way of authenticating, not several: found {found}")
        )
        return problems
    method = next(iter(used), None)
    if not demo and not (shared and method is None):
        problems += _method_problems(settings, method, derive_iam=not shared)
    return problems


def _method_problems(
    settings: AuthSource, method: str | None, *, derive_iam: bool
) -> list[tuple[str, str]]:
    """List the settings missing from the way of authenticating chosen (or from any)."""
    problems: list[tuple[str, str]] = []
    if method is None:
        problems.append(
            (
                "auth_token",
                "no authentication configured: set access_key and secret_key (AK/SK), "
                "iam_domain, iam_username and iam_password (IAM), or auth_token",
            )
        )
    elif method == "aksk":
        for name in ("access_key", "secret_key"):
            if settings.secret(name) is None:
                problems.append((name, f"AK/SK signing needs {name} (or {name}_file)"))
    elif method == "iam":
        for name in ("iam_domain", "iam_username"):
            if getattr(settings, name) is None:
                problems.append((name, f"IAM authentication needs {name}"))
        if settings.secret("iam_password") is None:
            problems.append(
                ("iam_password", "IAM authentication needs iam_password (or iam_password_file)")
            )
        if derive_iam and not settings.iam_endpoint and not settings.region:
            problems.append(("iam_endpoint", "set iam_endpoint, or region to derive it from"))
    return problems
