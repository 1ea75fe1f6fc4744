"""Secrets from every source, cleaned alike: given directly, or read from a `*_file`.

A secret and its `*_file` form hold the same cleaned value: surrounding
whitespace stripped, never empty, no control character. The messages name the
setting or the file, never the secret.
"""

import unicodedata
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, SecretStr


def has_control_character(value: str) -> bool:
    """Tell whether `value` holds a control character (line breaks, NUL, DEL, ...)."""
    return any(unicodedata.category(char) == "Cc" for char in value)


def checked_secret(text: str, what: str) -> str:
    """Return the secret in `text` without surrounding whitespace; refuse an unusable one.

    The messages name `what` (the setting's value, or its file) and never the secret.
    """
    secret = text.strip()
    if not secret:
        msg = f"{what} is empty"
        raise ValueError(msg)
    if has_control_character(secret):
        msg = (
            f"{what} holds a control character (such as a line break) inside the secret: "
            "a secret is one line of text"
        )
        raise ValueError(msg)
    return secret


def _clean_secret(value: object) -> object:
    """Clean a secret given directly (environment, YAML) as its file form is cleaned."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        return value  # None, or a wrong type that pydantic reports
    return checked_secret(value, "the value")


def _read_secret_file(value: object) -> object:
    """Read the secret that a `*_file` setting points to."""
    if value is None or isinstance(value, SecretStr):
        return value
    if not str(value).strip():
        msg = "is empty: give the path of the file that holds the secret"
        raise ValueError(msg)
    path = Path(str(value))
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror or exc}"
        raise ValueError(msg) from None
    except UnicodeDecodeError:
        msg = f"{path} is not UTF-8 text"
        raise ValueError(msg) from None
    return checked_secret(content, str(path))


# A secret and its `*_file` form hold the same cleaned value: surrounding
# whitespace stripped, never empty, no control character. A `*_file` setting is
# validated into the secret it holds, so a bad path is reported against the
# `*_file` setting itself.
Secret = Annotated[SecretStr | None, BeforeValidator(_clean_secret)]
SecretFile = Annotated[SecretStr | None, BeforeValidator(_read_secret_file)]
