"""The resolved view of the targets: what the exporter builds a client from, for each target.

`resolve_targets` turns checked settings into `Target`s: every value resolved,
a target's own authentication, rate limit and request timeout, or else the top
level's; without `targets`, one implicit target named `default` made of the
top-level settings, exactly as a single-project exporter has always read them.
"""

from dataclasses import dataclass

from pydantic import SecretStr

from exporter.settings.auth import AUTH_SETTINGS
from exporter.settings.model import Settings
from exporter.settings.targets import IMPLICIT_TARGET, TargetSettings


@dataclass(frozen=True, slots=True)
class TokenCredentials:
    """A static `X-Auth-Token`."""

    token: SecretStr


@dataclass(frozen=True, slots=True)
class AkSkCredentials:
    """An access key pair for request signing; `security_token` for temporary ones."""

    access_key: SecretStr
    secret_key: SecretStr
    security_token: SecretStr | None


@dataclass(frozen=True, slots=True)
class IamCredentials:
    """An IAM user's password, to obtain tokens scoped to the target's project."""

    endpoint: str
    domain: str
    username: str
    password: SecretStr


Credentials = TokenCredentials | AkSkCredentials | IamCredentials


@dataclass(frozen=True, slots=True)
class Target:
    """One watched project, everything resolved: what the exporter builds a client from.

    `endpoint` is the CCE base URL, given or derived from `region` (empty only
    under `--demo` when neither is set: the demo gives its own). `credentials`
    are the target's own or, when it brings none, the top level's; None only
    when none are configured, which only `--demo` allows. `project_id` is
    empty only under `--demo` without one.
    """

    name: str
    project_id: str
    endpoint: str
    region: str | None
    job_ids: tuple[str, ...]
    discover: bool
    discover_interval: float
    discover_max_age: float
    discover_job_types: str | None
    discover_clusters: tuple[str, ...]
    credentials: Credentials | None
    rate_limit: float
    request_timeout: float

    @property
    def auth_method(self) -> str | None:
        """Which way of authenticating: token, aksk, iam, or None."""
        methods = {TokenCredentials: "token", AkSkCredentials: "aksk", IamCredentials: "iam"}
        return None if self.credentials is None else methods[type(self.credentials)]


# What the implicit target takes from the top level (its authentication, rate
# limit and timeout come from there the way any target's do).
_IMPLICIT_FIELDS = tuple(
    name
    for name in TargetSettings.model_fields
    if name in Settings.model_fields
    and name not in AUTH_SETTINGS
    and name not in ("rate_limit", "request_timeout")
)


def resolve_targets(settings: Settings) -> tuple[Target, ...]:
    """Return every target of checked settings, never none: the implicit one without `targets`."""
    if settings.targets is None:
        fields = {name: getattr(settings, name) for name in _IMPLICIT_FIELDS}
        implicit = TargetSettings.model_construct(name=IMPLICIT_TARGET, **fields)
        return (_resolve(implicit, settings),)
    if not settings.targets:  # refused by load_settings
        msg = "targets is empty"
        raise ValueError(msg)
    return tuple(_resolve(target, settings) for target in settings.targets)


def _resolve(target: TargetSettings, top: Settings) -> Target:
    """Resolve one target against the top-level settings it inherits from."""
    endpoint = ""
    if target.endpoint or target.region:
        # Derived exactly as the top-level endpoint is.
        endpoint = Settings.model_construct(
            endpoint=target.endpoint, region=target.region
        ).cce_endpoint
    return Target(
        name=target.name or IMPLICIT_TARGET,
        project_id=target.project_id or "",
        endpoint=endpoint,
        region=target.region,
        job_ids=target.job_ids,
        discover=target.discover,
        discover_interval=target.discover_interval,
        discover_max_age=target.discover_max_age,
        discover_job_types=target.discover_job_types,
        discover_clusters=target.discover_clusters,
        credentials=_credentials(target, top),
        rate_limit=top.rate_limit if target.rate_limit is None else target.rate_limit,
        request_timeout=(
            top.request_timeout if target.request_timeout is None else target.request_timeout
        ),
    )


def _credentials(target: TargetSettings, top: Settings) -> Credentials | None:
    """Return the target's own authentication, or else the top level's."""
    source: TargetSettings | Settings = target if target.auth_method is not None else top
    method = source.auth_method
    if method == "token":
        token = source.secret("auth_token")
        return None if token is None else TokenCredentials(token)
    if method == "aksk":
        access_key, secret_key = source.secret("access_key"), source.secret("secret_key")
        if access_key is not None and secret_key is not None:
            return AkSkCredentials(access_key, secret_key, source.secret("security_token"))
    elif method == "iam":
        password = source.secret("iam_password")
        if source.iam_domain and source.iam_username and password is not None:
            # The IAM endpoint given, or derived from the target's own region.
            endpoint = Settings.model_construct(
                region=target.region, iam_endpoint=source.iam_endpoint
            ).iam_token_endpoint
            return IamCredentials(endpoint, source.iam_domain, source.iam_username, password)
    return None
