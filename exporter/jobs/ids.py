"""Identifiers that go into URL paths: project and job IDs, and the API a job lives on."""

import re
from enum import StrEnum

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def is_valid_id(value: str) -> bool:
    """Tell whether `value` may be used as a project or job ID."""
    return ID_PATTERN.fullmatch(value) is not None


def check_id(value: str) -> str:
    """Return `value` if it is a valid ID, else raise ValueError saying why."""
    if not is_valid_id(value):
        msg = (
            f"{value!r} is not a valid ID: 1 to 64 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
        raise ValueError(msg)
    return value


class Api(StrEnum):
    """The job API a job lives on: CCE's (`/api/...`) or CCE Autopilot's (`/autopilot/...`).

    The same job object under two path prefixes; a job ID is known to one of them only.
    """

    CCE = "cce"
    AUTOPILOT = "autopilot"
