"""Many targets: several projects, regions or accounts watched by one exporter.

`targets` (YAML only) lists them. Each names where (endpoint or region), the
project, the jobs to watch and how to discover more, and may bring its own
authentication, rate limit and request timeout; what it does not bring comes
from the top level. Without `targets`, the top-level settings form one implicit
target named `default`. A target's values are checked by the same rules as the
top-level settings of the same names; `exporter.settings.resolved` gives the
typed view the exporter is built from.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator

from exporter.settings.auth import AUTH_SETTINGS, auth_problems
from exporter.settings.model import AUTH_METHODS, IdList, Settings
from exporter.settings.secrets import Secret, SecretFile, has_control_character

IMPLICIT_TARGET = "default"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")

# The top-level settings that say what a target says for itself: with
# `targets`, they are refused at the top level (one way to say a thing).
PER_TARGET = (
    "endpoint",
    "region",
    "project_id",
    "job_ids",
    *(name for name in Settings.model_fields if name.startswith("discover")),
)
_REFUSALS = {
    "endpoint": "give each target its own endpoint or region",
    "region": "give each target its own region or endpoint",
    "project_id": "give each target its own project_id",
    "job_ids": "list each job under the job_ids of its target",
}


def refusal(name: str) -> str:
    """Say why a top-level setting is refused when `targets` is given."""
    what = _REFUSALS.get(name, f"set {name} in each target that discovers jobs")
    return f"not a top-level setting when targets is given: {what}"


def _default(name: str) -> Any:
    """Return the default of a top-level setting, for the target setting of that name."""
    return Settings.model_fields[name].default


def _job_types(value: object) -> object:
    """Accept a list of job types, matched exactly, as well as a regular expression."""
    if not isinstance(value, list | tuple):
        return value
    if not value:
        msg = "is empty: list at least one job type, or leave discover_job_types out"
        raise ValueError(msg)
    for item in value:
        if not isinstance(item, str) or not item.strip() or has_control_character(item):
            msg = f"{item!r} is not a job type, like 'CreateCluster'"
            raise ValueError(msg)
    return "|".join(re.escape(item.strip()) for item in value)


JobTypes = Annotated[str | None, BeforeValidator(_job_types)]


class TargetSettings(BaseModel):
    """One entry of `targets`, as given; a value left out comes from the top level or a default."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # Required; checked with the rules across settings so that one run reports
    # every problem of a target.
    name: str | None = None
    endpoint: str | None = None
    region: str | None = None
    project_id: str | None = None
    job_ids: IdList = ()

    discover: bool = _default("discover")
    discover_interval: float = Field(default=_default("discover_interval"), gt=0)
    discover_max_age: float = Field(default=_default("discover_max_age"), gt=0)
    discover_job_types: JobTypes = None
    discover_clusters: tuple[str, ...] = ()

    auth_token: Secret = None
    auth_token_file: SecretFile = None
    access_key: Secret = None
    access_key_file: SecretFile = None
    secret_key: Secret = None
    secret_key_file: SecretFile = None
    security_token: Secret = None
    security_token_file: SecretFile = None
    iam_endpoint: str | None = None
    iam_domain: str | None = None
    iam_username: str | None = None
    iam_password: Secret = None
    iam_password_file: SecretFile = None

    rate_limit: float | None = Field(default=None, gt=0)
    request_timeout: float | None = Field(default=None, gt=0)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not NAME_PATTERN.fullmatch(value):
            msg = (
                f"{value!r} is not a target name: 1 to 32 lowercase letters, digits and "
                "hyphens, starting with a letter or digit, like 'cn-north'"
            )
            raise ValueError(msg)
        return value

    @field_validator("endpoint", "iam_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        return Settings._check_endpoint(value)

    @field_validator("region")
    @classmethod
    def _check_region(cls, value: str | None) -> str | None:
        return Settings._check_region(value)

    @field_validator("project_id")
    @classmethod
    def _check_project(cls, value: str | None) -> str | None:
        return Settings._check_project(value)

    @field_validator("job_ids")
    @classmethod
    def _check_job_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return Settings._check_job_ids(value)

    @field_validator("discover_job_types")
    @classmethod
    def _check_job_types(cls, value: str | None) -> str | None:
        return Settings._check_job_types(value)

    @field_validator("discover_clusters")
    @classmethod
    def _check_clusters(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return Settings._check_clusters(value)

    @field_validator("iam_domain", "iam_username")
    @classmethod
    def _check_iam_name(cls, value: str | None) -> str | None:
        return Settings._check_iam_name(value)

    def secret(self, name: str) -> SecretStr | None:
        """Return a secret setting's value, given directly or by its `*_file` form."""
        value = getattr(self, name)
        if value is None:
            value = getattr(self, f"{name}_file")
        assert value is None or isinstance(value, SecretStr)  # noqa: S101 - a secret's type
        return value

    @property
    def auth_method(self) -> str | None:
        """Which way of authenticating the target brings itself (first one set), if any."""
        for method, names in AUTH_METHODS.items():
            if any(getattr(self, name) is not None for name in names):
                return method
        return None


def target_label(index: object, name: object) -> str:
    """Name a target in messages: `targets[1] (cn-north)`, or `targets[1]` without a valid name."""
    if isinstance(name, str) and NAME_PATTERN.fullmatch(name):
        return f"targets[{index}] ({name})"
    return f"targets[{index}]"


def validation_problem(
    loc: Sequence[int | str], kind: str, message: str, raw_targets: object
) -> tuple[str, str]:
    """Name the target and setting of a validation error under `targets`, and say it plainly."""
    if len(loc) < 2:
        if kind == "tuple_type":
            message = "must be a list of targets, each a mapping of setting: value"
        return "targets", message
    index = loc[1]
    raw = raw_targets[index] if isinstance(raw_targets, list) and isinstance(index, int) else None
    label = target_label(index, raw.get("name") if isinstance(raw, Mapping) else None)
    if len(loc) == 2:
        if kind == "model_type":
            message = "must be a mapping of setting: value"
        return label, message
    field = str(loc[2])
    if kind == "extra_forbidden" and field in Settings.model_fields:
        message = "not a setting of a target: set it at the top level, for every target"
    return f"{label}.{field}", message


def target_problems(
    settings: Settings,
    *,
    demo: bool,
    reported: Mapping[int, frozenset[str]],
    top_auth_refused: bool,
) -> list[tuple[str, str]]:
    """Rules across the settings of targets, as (setting, message) pairs; empty when all hold.

    `reported` holds, for each target, the settings already refused (`*` for the
    whole target): those are not judged again, so that a refused value does not
    also count as a missing one. Nor is the inherited authentication judged when
    a top-level authentication setting was refused (`top_auth_refused`).
    """
    if settings.targets is None:
        return []
    if not settings.targets:
        return [("targets", "is empty: list at least one target, or leave targets out")]
    problems: list[tuple[str, str]] = []
    seen = _Seen({}, {})
    for index, target in enumerate(settings.targets):
        done = set(reported.get(index, frozenset()))
        if "*" in done:
            continue
        if done & AUTH_SETTINGS:
            done |= AUTH_SETTINGS  # a credential refused is not a missing one
        if "region" in done:
            done |= {"endpoint", "iam_endpoint"}  # nor is a refused region
        label = target_label(index, target.name)
        found = seen.problems(target, label)
        if not demo and not target.endpoint and not target.region:
            found.append(("endpoint", "set endpoint, or region to derive it from"))
        if target.auth_method is not None:
            found += auth_problems(target, demo=demo)
        elif not demo and not top_auth_refused:
            found += _inherited_auth_problems(target, settings)
        problems += [(f"{label}.{field}", message) for field, message in found if field not in done]
    return problems


@dataclass(frozen=True, slots=True)
class _Seen:
    """The names and projects of the targets before, to refuse a second one."""

    names: dict[str, str]
    projects: dict[str, str]

    def problems(self, target: TargetSettings, label: str) -> list[tuple[str, str]]:
        """Check the name and project that each target needs and no other target may share."""
        found: list[tuple[str, str]] = []
        if target.name is None:
            found.append(("name", "required: a name for the target, like 'cn-north'"))
        elif target.name in self.names:
            found.append(
                ("name", f"{target.name!r} is already the name of {self.names[target.name]}")
            )
        else:
            self.names[target.name] = label
        if target.project_id is None:
            found.append(("project_id", "required: the project whose jobs are watched"))
        elif target.project_id in self.projects:
            owner = self.projects[target.project_id]
            found.append(("project_id", f"{target.project_id!r} is already the project of {owner}"))
        else:
            self.projects[target.project_id] = label
        return found


def _inherited_auth_problems(target: TargetSettings, top: Settings) -> list[tuple[str, str]]:
    """Rules of a target that uses the top-level authentication."""
    method = top.auth_method
    if method is None:
        return [
            (
                "auth_token",
                "no authentication: give the target its own (a token, AK/SK or IAM), "
                "or set one at the top level for every target",
            )
        ]
    if method == "iam" and not top.iam_endpoint and not target.region:
        return [
            (
                "region",
                "the target uses the top-level IAM authentication, whose endpoint is derived "
                "from the target's region: set region, or iam_endpoint at the top level",
            )
        ]
    return []


# Settings types its `targets` with TargetSettings, which builds on Settings:
# complete the model now (exporter/settings/__init__.py imports this module first).
Settings.model_rebuild(_types_namespace={"TargetSettings": TargetSettings})
