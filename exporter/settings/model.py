"""Settings: one pydantic-settings model, read from flags, environment and YAML.

Sources, highest first: command-line flags, `CCE_EXPORTER_<NAME>` environment
variables, the YAML file given by `--config`, defaults. `load_settings` turns
every problem into a `ConfigError` naming the setting and where it came from.
"""

import ipaddress
import os
import re
import socket
import ssl
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from yarl import URL

from exporter.jobs.ids import check_id
from exporter.server.webconfig.live import load_web_config
from exporter.watch.sharding import index_from_hostname

ENV_PREFIX = "CCE_EXPORTER_"
# Regions served from Huawei Cloud's European domain, myhuaweicloud.eu (Dublin);
# every other region, Paris's eu-west-0 among them, is on myhuaweicloud.com.
EU_DOMAIN_REGIONS = frozenset({"eu-west-101"})
DEFAULT_PORT = 9849

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


class LogLevel(StrEnum):
    """How much the exporter logs."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(StrEnum):
    """How log lines are written: for people or for machines."""

    TEXT = "text"
    JSON = "json"


def has_control_character(value: str) -> bool:
    """Tell whether `value` holds a control character (line breaks, NUL, DEL, ...)."""
    return any(unicodedata.category(char) == "Cc" for char in value)


def _checked_secret(text: str, what: str) -> str:
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
    return _checked_secret(value, "the value")


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
    return _checked_secret(content, str(path))


def _readable_file(value: Path | None) -> Path | None:
    """Check that a file setting names a file."""
    if value is not None and not value.is_file():
        msg = f"{value} is not a readable file"
        raise ValueError(msg)
    return value


def _split_list(value: object) -> object:
    """Accept a comma-separated string (env, flags) as well as a YAML list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# A secret and its `*_file` form hold the same cleaned value: surrounding
# whitespace stripped, never empty, no control character. A `*_file` setting is
# validated into the secret it holds, so a bad path is reported against the
# `*_file` setting itself.
Secret = Annotated[SecretStr | None, BeforeValidator(_clean_secret)]
SecretFile = Annotated[SecretStr | None, BeforeValidator(_read_secret_file)]
IdList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_list)]


class Settings(BaseSettings):
    """Every setting of the exporter; see the README for their meaning."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="forbid",
        frozen=True,
        validate_default=True,
        # inf and nan pass `gt=0`, then break timers and timeouts at run time.
        allow_inf_nan=False,
    )

    endpoint: str | None = None
    region: str | None = None
    project_id: str | None = None
    job_ids: IdList = ()

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

    poll_interval: float = Field(default=30.0, gt=0)
    poll_concurrency: int = Field(default=16, ge=1, le=1000)
    request_timeout: float = Field(default=10.0, gt=0)
    rate_limit: float = Field(default=20.0, gt=0)
    finished_retention: float = Field(default=3600.0, ge=0)

    listen_address: str = f"0.0.0.0:{DEFAULT_PORT}"
    web_config_file: Path | None = None
    log_level: LogLevel = LogLevel.INFO
    log_format: LogFormat = LogFormat.TEXT

    ca_bundle: Path | None = None
    insecure_skip_verify: bool = False

    # Finding jobs and sharing the work.
    discover: bool = False
    discover_interval: float = Field(default=60.0, gt=0)
    discover_max_age: float = Field(default=86400.0, gt=0)
    discover_job_types: str | None = None
    job_ids_file: Path | None = None
    admin_token: Secret = None
    admin_token_file: SecretFile = None
    max_jobs: int = Field(default=10000, ge=1)
    shard_count: int = Field(default=1, ge=1, le=10000)
    shard_index: Annotated[int, Field(ge=0)] | Literal["auto"] = 0

    @field_validator("region")
    @classmethod
    def _check_region(cls, value: str | None) -> str | None:
        # It becomes part of a host name when endpoints are derived from it: a
        # DNS label. Nothing more, so other clouds' regions (Open Telekom
        # Cloud's eu-de) pass along with an explicit endpoint.
        if value is not None and not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", value):
            msg = (
                f"{value!r} is not a region name: lowercase letters, digits and hyphens, "
                "like 'cn-north-4'"
            )
            raise ValueError(msg)
        return value

    @field_validator("project_id")
    @classmethod
    def _check_project(cls, value: str | None) -> str | None:
        return None if value is None else check_id(value)

    @field_validator("job_ids")
    @classmethod
    def _check_job_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for job_id in value:
            check_id(job_id)
        return tuple(dict.fromkeys(value))  # one watch per ID, first order kept

    @field_validator("endpoint", "iam_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if any(char.isspace() or has_control_character(char) for char in value):
            msg = "the URL holds a space or a control character"
            raise ValueError(msg)
        parts = urlsplit(value)
        # Before anything that shows the URL: a password must not be echoed.
        if parts.username is not None or parts.password is not None:
            msg = "the URL takes no user or password; credentials have settings of their own"
            raise ValueError(msg)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            msg = f"{value!r} is not an http(s) URL like 'https://cce.cn-north-4.myhuaweicloud.com'"
            raise ValueError(msg)
        try:
            port = parts.port
        except ValueError:  # not a number, or above 65535
            port = 0
        if port == 0:
            msg = f"{value!r} has a bad port: it must be a number from 1 to 65535"
            raise ValueError(msg)
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            msg = "plain http:// is refused for a host that is not a loopback address; use https://"
            raise ValueError(msg)
        if parts.query or parts.fragment:
            msg = "the endpoint takes no query string or fragment"
            raise ValueError(msg)
        try:
            URL(value)  # as the clients will build it
        except ValueError as exc:  # UnicodeError too: a host name IDNA cannot encode
            msg = f"{value!r} is not a URL the HTTP client can use: {exc}"
            raise ValueError(msg) from None
        return value.rstrip("/")

    @field_validator("discover_job_types")
    @classmethod
    def _check_job_types(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                msg = f"{value!r} is not a regular expression: {exc}"
                raise ValueError(msg) from None
        return value

    @field_validator("job_ids_file")
    @classmethod
    def _check_job_ids_file(cls, value: Path | None) -> Path | None:
        return _readable_file(value)

    @field_validator("listen_address")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        split_host_port(value)
        return value

    @field_validator("iam_domain", "iam_username")
    @classmethod
    def _check_iam_name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            msg = "is empty"
            raise ValueError(msg)
        if value is not None and has_control_character(value):
            msg = "holds a control character (such as a line break): a name is one line of text"
            raise ValueError(msg)
        return value

    @field_validator("web_config_file")
    @classmethod
    def _check_web_config(cls, value: Path | None) -> Path | None:
        if value is not None:
            load_web_config(value)  # WebConfigError is a ValueError: reported on this setting
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _check_ca_bundle(cls, value: Path | None) -> Path | None:
        if _readable_file(value) is not None:
            try:
                ssl.create_default_context().load_verify_locations(cafile=str(value))
            except (ssl.SSLError, OSError) as exc:
                msg = f"{value} holds no PEM certificate that can be trusted: {exc}"
                raise ValueError(msg) from None
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Take only the values given: `load_settings` reads and merges the sources."""
        return (init_settings,)

    def secret(self, name: str) -> SecretStr | None:
        """Return a secret setting's value, given directly or by its `*_file` form."""
        value = getattr(self, name)
        if value is None:
            value = getattr(self, f"{name}_file")
        assert value is None or isinstance(value, SecretStr)  # noqa: S101 - a secret's type
        return value

    @property
    def token(self) -> SecretStr | None:
        """The static token, from `auth_token` or `auth_token_file`."""
        return self.secret("auth_token")

    @property
    def auth_method(self) -> str | None:
        """Which way of authenticating is configured: token, aksk, iam (first one set)."""
        for method, names in AUTH_METHODS.items():
            if any(getattr(self, name) is not None for name in names):
                return method
        return None

    @property
    def iam_token_endpoint(self) -> str:
        """The IAM base URL: `iam_endpoint`, or the one derived from `region`."""
        if self.iam_endpoint:
            return self.iam_endpoint
        return self._regional("iam")

    @property
    def admin_secret(self) -> SecretStr | None:
        """The job API's token, from `admin_token` or `admin_token_file`."""
        return self.secret("admin_token")

    @property
    def shard(self) -> int:
        """This instance's shard index, with `auto` taken from the host name."""
        if self.shard_index == "auto":
            return index_from_hostname(socket.gethostname(), self.shard_count)
        return self.shard_index

    @property
    def cce_endpoint(self) -> str:
        """The CCE base URL: `endpoint`, or the one derived from `region`."""
        if self.endpoint:
            return self.endpoint
        return self._regional("cce")

    def _regional(self, service: str) -> str:
        """Return the URL of a service in `region` (Dublin has a domain of its own)."""
        if self.region is None:  # excluded by check_settings
            msg = f"no region to derive the {service} endpoint from"
            raise RuntimeError(msg)
        domain = "myhuaweicloud.eu" if self.region in EU_DOMAIN_REGIONS else "myhuaweicloud.com"
        return f"https://{service}.{self.region}.{domain}"


# The settings of each way of authenticating; exactly one way may be used.
AUTH_METHODS: Mapping[str, tuple[str, ...]] = {
    "token": ("auth_token", "auth_token_file"),
    "aksk": (
        "access_key",
        "access_key_file",
        "secret_key",
        "secret_key_file",
        "security_token",
        "security_token_file",
    ),
    "iam": ("iam_endpoint", "iam_domain", "iam_username", "iam_password", "iam_password_file"),
}
_AUTH_SETTINGS = frozenset(name for names in AUTH_METHODS.values() for name in names)
_METHOD_NAMES = {"token": "token", "aksk": "AK/SK", "iam": "IAM"}

SECRET_FIELDS = frozenset(
    name for name, field in Settings.model_fields.items() if "SecretStr" in repr(field.annotation)
)


def is_loopback(host: str) -> bool:
    """Tell whether `host` is a loopback name or address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_host_port(address: str) -> tuple[str, int]:
    """Split `host:port` (IPv6 hosts in brackets); raise ValueError when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        msg = f"{address!r} is not host:port, like '0.0.0.0:{DEFAULT_PORT}'"
        raise ValueError(msg)
    host = host.strip("[]")
    return host or "0.0.0.0", int(port)


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
    if problems:
        raise ConfigError(problems)
    assert settings is not None  # noqa: S101 - no problems means it validated
    return settings
