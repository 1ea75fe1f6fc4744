"""Loading the settings: flags, environment and YAML, each value's source, every problem.

Sources, highest first: command-line flags, `CCE_EXPORTER_<NAME>` environment
variables, the YAML file given by `--config`, defaults. `load_settings` turns
every problem into a `ConfigError` naming the setting and where it came from.
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings import EnvSettingsSource, YamlConfigSettingsSource

from exporter.cce.proxy import proxy_problems
from exporter.settings.model import AUTH_METHODS, ENV_PREFIX, SECRET_FIELDS, Settings

_AUTH_SETTINGS = frozenset(name for names in AUTH_METHODS.values() for name in names)
_METHOD_NAMES = {"token": "token", "aksk": "AK/SK", "iam": "IAM"}

# What Kubernetes injects into every pod for a Service named `cce-exporter` in
# its namespace ("service links"): neither settings nor typos of settings.
_SERVICE_LINK = re.compile(
    re.escape(ENV_PREFIX)
    + r"(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    + r"|PORT(?:_[0-9]+_(?:TCP|UDP|SCTP)(?:_PROTO|_PORT|_ADDR)?)?)"
)


def is_service_link(key: str) -> bool:
    """Tell whether an environment variable is one of the service links Kubernetes injects."""
    return _SERVICE_LINK.fullmatch(key) is not None


@dataclass(frozen=True, slots=True)
class Problem:
    """One configuration problem: the setting, where its value came from, what is wrong."""

    setting: str
    source: str
    message: str

    def __str__(self) -> str:
        where = f" ({self.source})" if self.source else ""
        return f"{self.setting}{where}: {self.message}"


class ConfigError(Exception):
    """The settings cannot be used; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True, slots=True)
class _Sources:
    """Which source gave each setting, to name it in error messages."""

    flags: Mapping[str, object]
    env_keys: frozenset[str]
    config_file: Path | None
    file_keys: frozenset[str]

    def source_of(self, name: str) -> str:
        if name in self.flags:
            return f"flag --{name.replace('_', '-')}"
        if name in self.env_keys:
            return f"environment variable {env_name(name)}"
        if name in self.file_keys:
            return f"config file {self.config_file}"
        return "default"


def env_name(name: str) -> str:
    """Return the environment variable that holds a setting."""
    return f"{ENV_PREFIX}{name.upper()}"


def _read_config_file(path: Path) -> tuple[dict[str, Any], list[Problem]]:
    """Read the YAML settings file; return its values, or the problem with it."""
    if not path.is_file():
        return {}, [Problem("--config", "", f"{path} is not a readable file")]
    try:
        data = YamlConfigSettingsSource(Settings, yaml_file=path)()
    except OSError as exc:
        return {}, [Problem("--config", "", f"cannot read {path}: {exc.strerror}")]
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return {}, [Problem("--config", "", f"{path} is not valid YAML: {exc}")]
    except (TypeError, ValueError):  # pydantic-settings' answers to a file that is no mapping
        return {}, [Problem("--config", "", f"{path} must hold a mapping of setting: value")]
    return dict(data), []


def _validation_problems(exc: ValidationError, sources: _Sources) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = error["loc"]
        name = str(loc[0]) if loc else "settings"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        elif error["type"] == "finite_number":
            message = "must be a finite number, not inf or nan"
        problems.append(Problem(name, sources.source_of(name), message))
    return problems


def _auth_problems(settings: Settings, *, demo: bool) -> list[tuple[str, str]]:
    """Exactly one way of authenticating, each complete, each secret given once."""
    problems = [
        (f"{name}_file", f"set {name} or {name}_file, not both")
        for name in sorted(SECRET_FIELDS)
        if f"{name}_file" in SECRET_FIELDS
        and getattr(settings, name) is not None
        and getattr(settings, f"{name}_file") is not None
    ]
    used = {
        method: [name for name in names if getattr(settings, name) is not None]
        for method, names in AUTH_METHODS.items()
    }
    used = {method: names for method, names in used.items() if names}
    if len(used) > 1:
        found = " and ".join(f"{_METHOD_NAMES[m]} ({', '.join(n)})" for m, n in used.items())
        first = next(iter(used.values()))[0]
        problems.append(
            (first, f"configure exactly one way of authenticating, not several: found {found}")
        )
        return problems
    if not demo:
        problems += _method_problems(settings, next(iter(used), None))
    return problems


def _method_problems(settings: Settings, method: str | None) -> list[tuple[str, str]]:
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
        if not settings.iam_endpoint and not settings.region:
            problems.append(("iam_endpoint", "set iam_endpoint, or region to derive it from"))
    return problems


def check_settings(settings: Settings, *, demo: bool) -> list[tuple[str, str]]:
    """Rules across settings, as (setting, message) pairs; empty when all hold."""
    problems = _auth_problems(settings, demo=demo)
    if settings.insecure_skip_verify and settings.ca_bundle is not None:
        problems.append(("ca_bundle", "has no effect with insecure_skip_verify; set one of them"))
    problems += _check_sharing(settings)
    if demo:
        return problems
    if not settings.project_id:
        problems.append(("project_id", "required: the project whose jobs are watched"))
    if not settings.endpoint and not settings.region:
        problems.append(("endpoint", "set endpoint, or region to derive it from"))
    return problems


def _check_sharing(settings: Settings) -> list[tuple[str, str]]:
    """Rules of the settings that find jobs and share the work."""
    problems: list[tuple[str, str]] = []
    try:
        index = settings.shard
    except ValueError as exc:
        problems.append(("shard_index", str(exc)))
    else:
        if index >= settings.shard_count:
            problems.append(
                ("shard_index", f"{index} is not below shard_count {settings.shard_count}")
            )
    return problems


def load_settings(
    flags: Mapping[str, Any], config_file: Path | None = None, *, demo: bool = False
) -> Settings:
    """Read and check the settings; raise ConfigError listing every problem.

    `flags` are the values given on the command line; the environment is read
    from `os.environ`.
    """
    problems: list[Problem] = []
    file_values: dict[str, Any] = {}
    if config_file is not None:
        file_values, problems = _read_config_file(config_file)
        if problems:
            raise ConfigError(problems)
    env_values = EnvSettingsSource(Settings)()
    sources = _Sources(flags, frozenset(env_values), config_file, frozenset(file_values))
    for key in sorted(os.environ):
        name = key[len(ENV_PREFIX) :].lower()
        if (
            key.upper().startswith(ENV_PREFIX)
            and name not in Settings.model_fields
            and not is_service_link(key)
        ):
            problems.append(Problem(name, f"environment variable {key}", "unknown setting"))

    raw = {**file_values, **env_values, **flags}
    settings: Settings | None
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems += _validation_problems(exc, sources)
        # Check the rules across settings on what did validate, so that one run
        # reports every problem.
        bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
        try:
            settings = Settings.model_validate({k: v for k, v in raw.items() if k not in bad})
        except ValidationError:
            settings = None
    if settings is not None:
        reported = {problem.setting for problem in problems}
        if reported & _AUTH_SETTINGS:
            # A credential given but refused is not a missing one: the rules of
            # the ways of authenticating would judge what is left, and mislead.
            reported |= _AUTH_SETTINGS
        if "region" in reported:
            reported |= {"endpoint", "iam_endpoint"}  # nor is a refused region a missing one
        problems += [
            Problem(name, sources.source_of(name), message)
            for name, message in check_settings(settings, demo=demo)
            if name not in reported
        ]
    # No settings of ours, but the requests depend on them as much (see cce.proxy).
    problems += [Problem(name, "environment", text) for name, text in proxy_problems(os.environ)]
    if problems:
        raise ConfigError(problems)
    assert settings is not None  # noqa: S101 - no problems means it validated
    return settings
