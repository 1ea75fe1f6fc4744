"""The Settings model: every setting of the exporter, its type, default and checks.

`exporter.settings.load` reads the sources and turns problems into messages;
this module says only what a valid value is.
"""

import ipaddress
import re
import socket
import ssl
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from yarl import URL

from exporter.jobs.ids import check_id
from exporter.server.webconfig.format import load_web_config
from exporter.settings.secrets import Secret, SecretFile, has_control_character
from exporter.watch.sharding import index_from_hostname

if TYPE_CHECKING:  # exporter.settings.targets builds on Settings, and completes its `targets`
    from exporter.settings.targets import TargetSettings

ENV_PREFIX = "CCE_EXPORTER_"
# Regions served from Huawei Cloud's European domain, myhuaweicloud.eu (Dublin);
# every other region, Paris's eu-west-0 among them, is on myhuaweicloud.com.
EU_DOMAIN_REGIONS = frozenset({"eu-west-101"})
DEFAULT_PORT = 9849


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


IdList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_list)]
# Cluster names (lowercase letters, digits, hyphens) and IDs (UUIDs) alike.
CLUSTER_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


class Settings(BaseSettings):
    """Every setting of the exporter; docs/configuration.md tells their meaning."""

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
    # Many targets, in the YAML file only: exporter.settings.targets.
    targets: Annotated[tuple["TargetSettings", ...] | None, NoDecode] = None

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
    # Leave out the zeros of phases, sub-job counts and error kinds (docs/metrics.md).
    sparse_metrics: bool = False

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
    discover_clusters: IdList = ()
    job_ids_file: Path | None = None
    admin_token: Secret = None
    admin_token_file: SecretFile = None
    max_jobs: int = Field(default=10000, ge=1)
    shard_count: int = Field(default=1, ge=1, le=10000)
    shard_index: Annotated[int, Field(ge=0)] | Literal["auto"] = 0
    # The clusters jobs run on (names, phases): read on their own interval.
    cluster_refresh_interval: float = Field(default=300.0, gt=0)

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

    @field_validator("discover_clusters")
    @classmethod
    def _check_clusters(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cluster in value:
            if not CLUSTER_PATTERN.fullmatch(cluster):
                msg = f"{cluster!r} is not a cluster name or ID, like 'prod-eu'"
                raise ValueError(msg)
        return tuple(dict.fromkeys(value))

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
