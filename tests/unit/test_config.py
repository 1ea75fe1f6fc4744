from pathlib import Path

import pytest

from exporter.settings.load import ConfigError, env_name, is_service_link, load_settings
from exporter.settings.model import LogFormat, Settings

pytestmark = pytest.mark.usefixtures("clean_env")

MINIMAL = {"project_id": "proj", "region": "cn-north-4"}


def _problems(excinfo: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [str(problem) for problem in excinfo.value.problems]


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    """Unset settings take the spec's defaults."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    settings = load_settings(MINIMAL)
    assert settings.poll_interval == 30
    assert settings.poll_concurrency == 16
    assert settings.request_timeout == 10
    assert settings.finished_retention == 3600
    assert settings.listen_address == "0.0.0.0:9849"
    assert settings.log_level == "info"
    assert settings.log_format is LogFormat.TEXT
    assert settings.job_ids == ()
    assert settings.cce_endpoint == "https://cce.cn-north-4.myhuaweicloud.com"


def test_sources_in_order(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Flags beat the environment, which beats the YAML file, which beats defaults."""
    config = tmp_path / "exporter.yml"
    config.write_text(
        "project_id: from-file\nregion: cn-north-4\npoll_interval: 5\n"
        "poll_concurrency: 4\njob_ids: [a, b]\nauth_token: file-token\n"
    )
    clean_env.setenv("CCE_EXPORTER_POLL_INTERVAL", "7")
    clean_env.setenv("CCE_EXPORTER_POLL_CONCURRENCY", "8")
    settings = load_settings({"poll_concurrency": "9"}, config)
    assert settings.project_id == "from-file"
    assert settings.poll_interval == 7
    assert settings.poll_concurrency == 9
    assert settings.job_ids == ("a", "b")
    assert settings.token is not None
    assert settings.token.get_secret_value() == "file-token"


def test_job_ids_comma_separated_and_deduplicated(clean_env: pytest.MonkeyPatch) -> None:
    """Job IDs from the environment are comma-separated; repeats are watched once."""
    clean_env.setenv("CCE_EXPORTER_JOB_IDS", " a, b,,a ,c")
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    assert load_settings(MINIMAL).job_ids == ("a", "b", "c")
    assert load_settings({**MINIMAL, "job_ids": "x,y"}).job_ids == ("x", "y")


def test_secret_from_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """auth_token_file reads the token from a file, without its trailing newline."""
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-token\n")
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN_FILE", str(secret))
    settings = load_settings(MINIMAL)
    assert settings.token is not None
    assert settings.token.get_secret_value() == "s3cr3t-token"
    assert "s3cr3t" not in repr(settings)
    assert "s3cr3t" not in str(settings.model_dump())


def test_every_problem_is_reported_with_its_source(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One load reports each problem once, naming the setting and where it came from."""
    config = tmp_path / "exporter.yml"
    config.write_text("poll_interval: -1\nbogus_key: 1\nproject_id: ok\n")
    clean_env.setenv("CCE_EXPORTER_JOB_IDS", "good,../etc")
    clean_env.setenv("CCE_EXPORTER_POLL_INTERVALL", "3")
    with pytest.raises(ConfigError) as caught:
        load_settings({"request_timeout": "soon", "log_level": "loud"}, config)
    problems = _problems(caught)
    expected_starts = [
        "poll_intervall (environment variable CCE_EXPORTER_POLL_INTERVALL): unknown setting",
        "job_ids (environment variable CCE_EXPORTER_JOB_IDS): '../etc' is not a valid ID",
        f"poll_interval (config file {config}): Input should be greater than 0",
        "request_timeout (flag --request-timeout): Input should be a valid number",
        "log_level (flag --log-level): Input should be 'debug', 'info', 'warning' or 'error'",
        f"bogus_key (config file {config}): unknown setting",
        "auth_token (default): no authentication configured",
        "endpoint (default): set endpoint, or region",
    ]
    assert len(problems) == len(expected_starts)
    for problem, start in zip(problems, expected_starts, strict=True):
        assert problem.startswith(start), problem


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"endpoint": "http://cce.example.com"}, "plain http:// is refused"),
        ({"endpoint": "ftp://x"}, "is not an http(s) URL"),
        ({"endpoint": "https://cce.example.com:99999"}, "has a bad port"),
        ({"endpoint": "https://cce.example.com:abc"}, "has a bad port"),
        ({"endpoint": "https://cce.example.com:0"}, "has a bad port"),
        ({"endpoint": "https://cce.example.com:+443"}, "has a bad port"),
        ({"iam_endpoint": "https://iam.example.com:65536"}, "has a bad port"),
        ({"endpoint": "https://cce.example .com"}, "holds a space or a control character"),
        ({"endpoint": "https://cce.exa\nmple.com"}, "holds a space or a control character"),
        ({"endpoint": "https://cce.ex\xadample.com"}, "is not a URL the HTTP client can use"),
        ({"region": "cn_north_4"}, "is not a region name"),
        ({"project_id": "a b"}, "is not a valid ID"),
        ({"listen_address": "9849"}, "is not host:port"),
        ({"listen_address": "0.0.0.0:99999"}, "is not host:port"),
        ({"ca_bundle": "/nonexistent/ca.pem"}, "is not a readable file"),
        ({"poll_concurrency": "0"}, "greater than or equal to 1"),
    ],
)
def test_bad_values_are_refused(
    clean_env: pytest.MonkeyPatch, flags: dict[str, str], message: str
) -> None:
    """Each malformed setting is refused with a message saying what is expected."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    with pytest.raises(ConfigError) as caught:
        load_settings({**MINIMAL, **flags})
    assert any(message in problem for problem in _problems(caught)), _problems(caught)


@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:8080"]
)
def test_plain_http_allowed_on_loopback(clean_env: pytest.MonkeyPatch, endpoint: str) -> None:
    """Plain http:// is accepted for loopback hosts (local stand-ins, the demo)."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    settings = load_settings({"project_id": "p", "endpoint": endpoint + "/"})
    assert settings.cce_endpoint == endpoint


def test_good_ports_and_surrounding_whitespace_are_accepted(clean_env: pytest.MonkeyPatch) -> None:
    """Ports 1 to 65535 pass, and a trailing newline around the URL is dropped."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    for port in ("1", "443", "65535"):
        endpoint = f"https://cce.example.com:{port}"
        assert load_settings({"project_id": "p", "endpoint": endpoint}).cce_endpoint == endpoint
    settings = load_settings({"project_id": "p", "endpoint": " https://cce.example.com/\n"})
    assert settings.cce_endpoint == "https://cce.example.com"


def test_a_password_in_a_bad_url_is_not_echoed(clean_env: pytest.MonkeyPatch) -> None:
    """A URL with credentials and a wrong scheme is refused without showing the password."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    with pytest.raises(ConfigError) as caught:
        load_settings({"project_id": "p", "endpoint": "ftp://user:PASSWORD@cce.example.com"})
    assert _problems(caught) == [
        "endpoint (flag --endpoint): the URL takes no user or password; "
        "credentials have settings of their own"
    ]


@pytest.mark.parametrize("region", ["eu-de", "eu-nl", "cn-north-4", "ap-southeast-1", "x1"])
def test_any_dns_label_is_a_region_with_an_explicit_endpoint(
    clean_env: pytest.MonkeyPatch, region: str
) -> None:
    """Regions of other clouds (Open Telekom Cloud's eu-de, eu-nl) pass with an endpoint."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    endpoint = f"https://cce.{region}.otc.t-systems.com"
    settings = load_settings({"project_id": "p", "region": region, "endpoint": endpoint})
    assert settings.region == region
    assert settings.cce_endpoint == endpoint


@pytest.mark.parametrize(
    ("region", "derived"),
    [
        ("me-east-1", "https://cce.me-east-1.myhuaweicloud.com"),
        ("eu-de", "https://cce.eu-de.myhuaweicloud.com"),
        ("eu-west-0", "https://cce.eu-west-0.myhuaweicloud.com"),
        ("eu-west-101", "https://cce.eu-west-101.myhuaweicloud.eu"),
    ],
)
def test_a_region_without_endpoint_derives_it(
    clean_env: pytest.MonkeyPatch, region: str, derived: str
) -> None:
    """With no endpoint, any accepted region derives one by the documented rule."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    assert load_settings({"project_id": "p", "region": region}).cce_endpoint == derived


@pytest.mark.parametrize(
    "region", ["CN-North-4", "cn_north_4", "-eu-de", "eu-de-", "eu.de", "eu de", "a" * 64, ""]
)
@pytest.mark.parametrize("endpoint", [None, "https://cce.example.com"])
def test_a_region_that_is_no_dns_label_is_refused(
    clean_env: pytest.MonkeyPatch, region: str, endpoint: str | None
) -> None:
    """A region that cannot be a host name's label is refused, endpoint given or not."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    flags = {"project_id": "p", "region": region}
    if endpoint is not None:
        flags["endpoint"] = endpoint
    with pytest.raises(ConfigError) as caught:
        load_settings(flags)
    assert _problems(caught) == [
        f"region (flag --region): {region!r} is not a region name: lowercase letters, digits "
        "and hyphens, like 'cn-north-4'"
    ]


def test_a_refused_region_is_not_also_a_missing_one(clean_env: pytest.MonkeyPatch) -> None:
    """IAM settings with a malformed region get one problem, not 'set iam_endpoint' as well."""
    clean_env.setenv("CCE_EXPORTER_IAM_PASSWORD", "pw")
    flags = {"project_id": "p", "region": "EU-DE", "iam_domain": "d", "iam_username": "u"}
    with pytest.raises(ConfigError) as caught:
        load_settings(flags)
    assert [problem.split(":")[0] for problem in _problems(caught)] == ["region (flag --region)"]


def test_dublin_has_its_own_domain_for_cce_and_iam(clean_env: pytest.MonkeyPatch) -> None:
    """eu-west-101 (Dublin) derives both endpoints on the .eu domain; Paris stays on .com."""
    clean_env.setenv("CCE_EXPORTER_IAM_PASSWORD", "pw")
    iam = {"project_id": "p", "iam_domain": "d", "iam_username": "u"}
    dublin = load_settings({**iam, "region": "eu-west-101"})
    assert dublin.cce_endpoint == "https://cce.eu-west-101.myhuaweicloud.eu"
    assert dublin.iam_token_endpoint == "https://iam.eu-west-101.myhuaweicloud.eu"
    paris = load_settings({**iam, "region": "eu-west-0"})
    assert paris.iam_token_endpoint == "https://iam.eu-west-0.myhuaweicloud.com"


FLOAT_SETTINGS = sorted(
    name for name, field in Settings.model_fields.items() if field.annotation is float
)


def test_the_float_settings_are_found() -> None:
    """The list of float settings checked below holds the timeouts and intervals."""
    assert {"request_timeout", "poll_interval", "rate_limit", "finished_retention"} <= set(
        FLOAT_SETTINGS
    )


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity", "1e400"])
@pytest.mark.parametrize("name", FLOAT_SETTINGS)
def test_no_float_setting_takes_inf_or_nan(
    clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """Every float setting refuses inf, nan, and numbers that overflow to inf."""
    clean_env.setenv(f"CCE_EXPORTER_{name.upper()}", value)
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    with pytest.raises(ConfigError) as caught:
        load_settings(MINIMAL)
    assert _problems(caught) == [
        f"{name} (environment variable CCE_EXPORTER_{name.upper()}): "
        "must be a finite number, not inf or nan"
    ]


@pytest.mark.parametrize("value", [".inf", ".nan"])
def test_yaml_infinity_is_refused(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    """YAML's own .inf and .nan are refused as the strings are."""
    config = tmp_path / "exporter.yml"
    config.write_text(f"request_timeout: {value}\nauth_token: t\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(MINIMAL, config)
    assert _problems(caught) == [
        f"request_timeout (config file {config}): must be a finite number, not inf or nan"
    ]


# What Kubernetes injects for a Service `cce-exporter` with ports `metrics`
# (9849/TCP), `debug-port` (8080/UDP) and 3868/SCTP.
SERVICE_LINKS = {
    "CCE_EXPORTER_SERVICE_HOST": "10.0.0.11",
    "CCE_EXPORTER_SERVICE_PORT": "9849",
    "CCE_EXPORTER_SERVICE_PORT_METRICS": "9849",
    "CCE_EXPORTER_SERVICE_PORT_DEBUG_PORT": "8080",
    "CCE_EXPORTER_PORT": "tcp://10.0.0.11:9849",
    "CCE_EXPORTER_PORT_9849_TCP": "tcp://10.0.0.11:9849",
    "CCE_EXPORTER_PORT_9849_TCP_PROTO": "tcp",
    "CCE_EXPORTER_PORT_9849_TCP_PORT": "9849",
    "CCE_EXPORTER_PORT_9849_TCP_ADDR": "10.0.0.11",
    "CCE_EXPORTER_PORT_8080_UDP": "udp://10.0.0.11:8080",
    "CCE_EXPORTER_PORT_8080_UDP_PROTO": "udp",
    "CCE_EXPORTER_PORT_8080_UDP_PORT": "8080",
    "CCE_EXPORTER_PORT_8080_UDP_ADDR": "10.0.0.11",
    "CCE_EXPORTER_PORT_3868_SCTP": "sctp://10.0.0.11:3868",
}


def test_kubernetes_service_links_are_ignored(clean_env: pytest.MonkeyPatch) -> None:
    """The variables of a Service named cce-exporter do not stop the exporter."""
    for key, value in SERVICE_LINKS.items():
        clean_env.setenv(key, value)
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    settings = load_settings(MINIMAL)
    assert settings.listen_address == "0.0.0.0:9849"


@pytest.mark.parametrize(
    "key",
    [
        "CCE_EXPORTER_SERVICE_HOSTS",
        "CCE_EXPORTER_SERVICE_NAME",
        "CCE_EXPORTER_SERVICE_PORT_",
        "CCE_EXPORTER_PORTS",
        "CCE_EXPORTER_PORT_9849",
        "CCE_EXPORTER_PORT_9849_HTTP",
        "CCE_EXPORTER_PORT_9849_TCP_HOST",
        "CCE_EXPORTER_PORT_X_TCP",
        "cce_exporter_service_host",
    ],
)
def test_other_unknown_variables_are_still_errors(clean_env: pytest.MonkeyPatch, key: str) -> None:
    """Only the exact shapes of service links are ignored; near misses are unknown settings."""
    clean_env.setenv(key, "1")
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    with pytest.raises(ConfigError) as caught:
        load_settings(MINIMAL)
    name = key[len("CCE_EXPORTER_") :].lower()
    assert _problems(caught) == [f"{name} (environment variable {key}): unknown setting"]


def test_no_setting_looks_like_a_service_link() -> None:
    """No setting's variable has a service-link shape, so none could be ignored."""
    assert all(is_service_link(key) for key in SERVICE_LINKS)
    for name in Settings.model_fields:
        assert not is_service_link(env_name(name)), name


def test_token_and_token_file_together_is_an_error(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Giving a secret and its _file form at once is a configuration error."""
    secret = tmp_path / "token"
    secret.write_text("x")
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN_FILE", str(secret))
    with pytest.raises(ConfigError) as caught:
        load_settings(MINIMAL)
    assert any("not both" in problem for problem in _problems(caught))


def test_unreadable_secret_file_names_the_file_setting(clean_env: pytest.MonkeyPatch) -> None:
    """A missing secret file is reported against the _file setting."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN_FILE", "/nonexistent/token")
    with pytest.raises(ConfigError) as caught:
        load_settings(MINIMAL)
    assert _problems(caught)[0].startswith(
        "auth_token_file (environment variable CCE_EXPORTER_AUTH_TOKEN_FILE): cannot read"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [("- a\n- b\n", "must hold a mapping"), ("a: [\n", "is not valid YAML")],
)
def test_bad_config_file(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, content: str, message: str
) -> None:
    """A config file that is not a YAML mapping is one clear problem."""
    config = tmp_path / "bad.yml"
    config.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_settings({}, config)
    assert message in _problems(caught)[0]


def test_demo_needs_no_project_or_credentials(clean_env: pytest.MonkeyPatch) -> None:
    """In demo mode the project, endpoint and credentials come from the demo."""
    assert isinstance(load_settings({}, demo=True), Settings)
