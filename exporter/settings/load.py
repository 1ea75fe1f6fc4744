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
from exporter.settings.auth import AUTH_SETTINGS, auth_problems
from exporter.settings.model import ENV_PREFIX, Settings
from exporter.settings.targets import PER_TARGET, refusal, target_problems, validation_problem

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


def _validation_problems(
    exc: ValidationError, sources: _Sources, raw_targets: object
) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = error["loc"]
        name = str(loc[0]) if loc else "settings"
        source = sources.source_of(name)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        elif error["type"] == "finite_number":
            message = "must be a finite number, not inf or nan"
        if name == "targets":  # name the target and its setting
            name, message = validation_problem(loc, error["type"], message, raw_targets)
        problems.append(Problem(name, source, message))
    return problems


@dataclass(frozen=True, slots=True)
class _Refused:
    """The settings that did not validate: top-level names, and each target's by index."""

    names: frozenset[str]
    in_targets: Mapping[int, frozenset[str]]  # `*` when the whole target is refused

    @classmethod
    def of(cls, exc: ValidationError | None) -> "_Refused":
        names: set[str] = set()
        in_targets: dict[int, set[str]] = {}
        for error in exc.errors() if exc is not None else ():
            loc = error["loc"]
            if len(loc) >= 2 and loc[0] == "targets" and isinstance(loc[1], int):
                in_targets.setdefault(loc[1], set()).add(str(loc[2]) if len(loc) > 2 else "*")
            elif loc:
                names.add(str(loc[0]))
        return cls(frozenset(names), {i: frozenset(n) for i, n in in_targets.items()})

    def left(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Return the values without those refused, to check the rules across what is left.

        A target keeps its place (an empty one stands for a target refused as a
        whole), so that later problems name it by the same index.
        """
        kept = {k: v for k, v in raw.items() if k not in self.names}
        if "targets" in self.names:
            kept["targets"] = ()  # still several targets, all refused: no implicit one
        elif self.in_targets and isinstance(raw.get("targets"), list):
            kept["targets"] = [
                {}
                if "*" in (bad := self.in_targets.get(index, frozenset()))
                else {k: v for k, v in target.items() if str(k) not in bad}
                for index, target in enumerate(raw["targets"])
            ]
        return kept


def check_settings(settings: Settings, *, demo: bool) -> list[tuple[str, str]]:
    """Rules across settings, as (setting, message) pairs; empty when all hold."""
    several = settings.targets is not None  # each target has its own rules: targets.py
    problems = auth_problems(settings, demo=demo, shared=several)
    if settings.insecure_skip_verify and settings.ca_bundle is not None:
        problems.append(("ca_bundle", "has no effect with insecure_skip_verify; set one of them"))
    problems += _check_sharing(settings)
    if demo or several:
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


def _targets_outside_the_file(
    flags: Mapping[str, Any], env_values: Mapping[str, Any]
) -> list[Problem]:
    """Refuse `targets` from a flag or the environment: a list of mappings is YAML's to say."""
    message = (
        "set only in the YAML file given by --config: a list of targets has no flag "
        "or environment variable form"
    )
    given = [
        (values, source)
        for values, source in (
            (env_values, f"environment variable {env_name('targets')}"),
            (flags, "flag --targets"),
        )
        if "targets" in values
    ]
    return [Problem("targets", source, message) for _, source in given]


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
    problems += _targets_outside_the_file(flags, env_values)
    flags = {name: value for name, value in flags.items() if name != "targets"}
    env_values = {name: value for name, value in env_values.items() if name != "targets"}
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
    if "targets" in raw:  # one way to say a thing: what a target says is said in the targets
        if raw["targets"] is None:  # `targets:` with every entry commented out
            raw["targets"] = ()
        problems += [Problem(n, sources.source_of(n), refusal(n)) for n in PER_TARGET if n in raw]
        raw = {name: value for name, value in raw.items() if name not in PER_TARGET}
    settings: Settings | None
    refused = _Refused.of(None)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        refused = _Refused.of(exc)
        problems += _validation_problems(exc, sources, raw.get("targets"))
        # Check the rules across settings on what did validate, so that one run
        # reports every problem.
        try:
            settings = Settings.model_validate(refused.left(raw))
        except ValidationError:
            settings = None
    if settings is not None:
        reported = {problem.setting for problem in problems}
        if reported & AUTH_SETTINGS:
            # A credential given but refused is not a missing one: the rules of
            # the ways of authenticating would judge what is left, and mislead.
            reported |= AUTH_SETTINGS
        if "region" in reported:
            reported |= {"endpoint", "iam_endpoint"}  # nor is a refused region a missing one
        problems += [
            Problem(name, sources.source_of(name), message)
            for name, message in check_settings(settings, demo=demo)
            if name not in reported
        ]
        problems += [
            Problem(name, sources.source_of("targets"), message)
            for name, message in target_problems(
                settings,
                demo=demo,
                reported=refused.in_targets,
                top_auth_refused=bool(refused.names & AUTH_SETTINGS),
            )
            if name not in reported
        ]
    # No settings of ours, but the requests depend on them as much (see cce.proxy).
    problems += [Problem(name, "environment", text) for name, text in proxy_problems(os.environ)]
    if problems:
        raise ConfigError(problems)
    assert settings is not None  # noqa: S101 - no problems means it validated
    return settings
