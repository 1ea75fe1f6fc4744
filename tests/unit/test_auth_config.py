import tempfile
from pathlib import Path

import aiohttp
import pytest
import trustme
import yaml
from yarl import URL

from exporter.app import make_auth
from exporter.cce.auth.base import OutgoingRequest
from exporter.cli import build_parser
from exporter.metrics.cce_exporter import Instruments
from exporter.settings.load import ConfigError, load_settings
from exporter.settings.model import SECRET_FIELDS, Settings
from exporter.settings.secrets import has_control_character

# A real CA certificate, for the settings that need one (a ca_bundle is checked).
CA_FILE = str(Path(tempfile.mkdtemp()) / "ca.pem")
trustme.CA().cert_pem.write_to_path(CA_FILE)

BASE = {"project_id": "p", "endpoint": "http://127.0.0.1:1"}


def _problems(caught: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [str(problem) for problem in caught.value.problems]


def test_aksk_settings_load(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Access key and secret key (the latter from a file) make AK/SK signing."""
    secret = tmp_path / "sk"
    secret.write_text("sk-from-file\n")
    clean_env.setenv("CCE_EXPORTER_ACCESS_KEY", "AKEXAMPLE")
    clean_env.setenv("CCE_EXPORTER_SECRET_KEY_FILE", str(secret))
    settings = load_settings(BASE)
    assert settings.auth_method == "aksk"
    secret_key = settings.secret("secret_key")
    assert secret_key is not None
    assert secret_key.get_secret_value() == "sk-from-file"


def test_iam_settings_derive_the_endpoint(clean_env: pytest.MonkeyPatch) -> None:
    """IAM settings with a region derive the IAM endpoint from it."""
    clean_env.setenv("CCE_EXPORTER_IAM_PASSWORD", "pw")
    settings = load_settings(
        {"project_id": "p", "region": "cn-north-4", "iam_domain": "d", "iam_username": "u"}
    )
    assert settings.auth_method == "iam"
    assert settings.iam_token_endpoint == "https://iam.cn-north-4.myhuaweicloud.com"


@pytest.mark.parametrize(
    ("env", "flags", "message"),
    [
        (
            {"AUTH_TOKEN": "t", "ACCESS_KEY": "a", "SECRET_KEY": "s"},
            {},
            "configure exactly one way of authenticating, not several: found token (auth_token)"
            " and AK/SK (access_key, secret_key)",
        ),
        ({"ACCESS_KEY": "a", "IAM_PASSWORD": "p"}, {}, "exactly one way"),
        ({}, {}, "no authentication configured"),
        ({"ACCESS_KEY": "a"}, {}, "secret_key (default): AK/SK signing needs secret_key"),
        ({"SECRET_KEY": "s", "SECURITY_TOKEN": "t"}, {}, "AK/SK signing needs access_key"),
        ({"IAM_PASSWORD": "p"}, {"iam_domain": "d"}, "IAM authentication needs iam_username"),
        (
            {"IAM_PASSWORD": "p"},
            {"iam_domain": "d", "iam_username": "u"},
            "iam_endpoint (default): set iam_endpoint, or region",
        ),
        ({"AUTH_TOKEN": "t"}, {"iam_endpoint": "https://iam.example.com"}, "exactly one way"),
        ({"IAM_PASSWORD": "p"}, {"iam_endpoint": "http://iam.example.com"}, "plain http://"),
        ({"AUTH_TOKEN": "t"}, {"iam_endpoint": "http://u:p@127.0.0.1"}, "takes no user"),
        ({"AUTH_TOKEN": "t"}, {"insecure_skip_verify": "true", "ca_bundle": CA_FILE}, "no effect"),
    ],
)
def test_authentication_rules(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], flags: dict[str, str], message: str
) -> None:
    """Exactly one complete way of authenticating is required; anything else says why."""
    for name, value in env.items():
        clean_env.setenv(f"CCE_EXPORTER_{name}", value)
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, **flags})
    assert any(message in problem for problem in _problems(caught)), _problems(caught)


def test_two_methods_are_an_error_even_in_demo(clean_env: pytest.MonkeyPatch) -> None:
    """The demo needs no credentials, but two ways configured are still an error."""
    assert load_settings({}, demo=True).auth_method is None
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    clean_env.setenv("CCE_EXPORTER_ACCESS_KEY", "a")
    with pytest.raises(ConfigError):
        load_settings({}, demo=True)


@pytest.mark.parametrize("name", ["access_key", "secret_key", "security_token", "iam_password"])
def test_every_secret_has_a_file_form_and_not_both(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    """Each secret can come from a file; giving it twice is an error naming the _file form."""
    secret = tmp_path / name
    secret.write_text("from-file")
    clean_env.setenv(f"CCE_EXPORTER_{name.upper()}", "direct")
    clean_env.setenv(f"CCE_EXPORTER_{name.upper()}_FILE", str(secret))
    with pytest.raises(ConfigError) as caught:
        load_settings(BASE)
    assert f"{name}_file (environment variable CCE_EXPORTER_{name.upper()}_FILE): set {name}" in (
        "\n".join(_problems(caught))
    )


def test_secrets_have_no_flags() -> None:
    """No secret can be given on the command line (it shows in ps); its file's path can."""
    flags = {option for action in build_parser()._actions for option in action.option_strings}
    assert {"secret_key", "security_token", "iam_password", "auth_token"} <= SECRET_FIELDS
    for name in SECRET_FIELDS:
        flag = "--" + name.replace("_", "-")
        if name.endswith("_file"):
            assert flag in flags
        else:
            assert flag not in flags
    assert "--iam-username" in flags


def test_settings_repr_hides_every_secret(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Repr and str of the settings show no secret value."""
    secret = tmp_path / "pw"
    secret.write_text("PW-SECRET-VALUE")
    settings = Settings(
        access_key="AK-SECRET-VALUE",
        secret_key="SK-SECRET-VALUE",
        security_token="ST-SECRET-VALUE",
        iam_password_file=str(secret),
    )
    for text in (repr(settings), str(settings), str(settings.model_dump())):
        assert "SECRET-VALUE" not in text


def test_bad_web_config_is_a_configuration_error(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A web config file that cannot be used is reported against web_config_file."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "t")
    config = tmp_path / "web.yml"
    config.write_text("basic_auth_users:\n  prometheus: not-a-hash\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, "web_config_file": str(config)})
    assert _problems(caught) == [
        "web_config_file (flag --web-config-file): "
        "basic_auth_users.prometheus: the value is not a bcrypt hash ($2a$, $2b$ or $2y$)"
    ]


# For each secret given directly, the other settings that make it usable.
COMPLETE: dict[str, dict[str, str]] = {
    "auth_token": {},
    "access_key": {"secret_key": "sk"},
    "secret_key": {"access_key": "ak"},
    "security_token": {"access_key": "ak", "secret_key": "sk"},
    "iam_password": {
        "iam_endpoint": "https://iam.example.com",
        "iam_domain": "d",
        "iam_username": "u",
    },
    "admin_token": {"auth_token": "t"},
}
SOURCES = ["environment", "config file", "secret file"]


def test_every_secret_is_covered_below() -> None:
    """The tests of secret cleaning cover every secret setting there is."""
    assert set(COMPLETE) == {name for name in SECRET_FIELDS if not name.endswith("_file")}


def _give(
    env: pytest.MonkeyPatch, tmp_path: Path, source: str, name: str, value: str
) -> tuple[dict[str, str], Path | None]:
    """Give the secret `name` by `source`; return the flags and config file to load with."""
    if source == "environment":
        env.setenv(f"CCE_EXPORTER_{name.upper()}", value)
        return {}, None
    if source == "config file":
        config = tmp_path / "exporter.yml"
        config.write_text(yaml.safe_dump({name: value}))
        return {}, config
    secret = tmp_path / name
    secret.write_bytes(value.encode())
    return {f"{name}_file": str(secret)}, None


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("name", sorted(COMPLETE))
def test_surrounding_whitespace_is_stripped_from_every_secret(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, name: str, source: str
) -> None:
    """A secret with a trailing newline or spaces loads as the bare secret, from any source."""
    flags, config = _give(clean_env, tmp_path, source, name, "  the-secret\r\n")
    settings = load_settings({**BASE, **COMPLETE[name], **flags}, config)
    secret = settings.secret(name)
    assert secret is not None
    assert secret.get_secret_value() == "the-secret"


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("name", sorted(COMPLETE))
def test_a_control_character_inside_any_secret_is_refused(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, name: str, source: str
) -> None:
    """A line break inside a secret is one problem naming the setting, not the secret."""
    flags, config = _give(clean_env, tmp_path, source, name, "SEKRIT\nPART\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, **COMPLETE[name], **flags}, config)
    problems = _problems(caught)
    assert len(problems) == 1, problems
    setting = name if source != "secret file" else f"{name}_file"
    assert problems[0].startswith(f"{setting} (")
    assert "holds a control character (such as a line break) inside the secret" in problems[0]
    assert "SEKRIT" not in problems[0]
    assert "PART" not in problems[0]


@pytest.mark.parametrize("char", ["\r", "\x00", "\t", "\x7f", "\x85"])
def test_every_control_character_is_refused(clean_env: pytest.MonkeyPatch, char: str) -> None:
    """CR, NUL, tab, DEL and C1 controls inside a secret are refused as a line feed is."""
    config = {**BASE, "auth_token": f"abc{char}def"}
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert len(_problems(caught)) == 1
    assert "holds a control character" in _problems(caught)[0]


@pytest.mark.parametrize("source", ["environment", "config file"])
@pytest.mark.parametrize("name", sorted(COMPLETE))
@pytest.mark.parametrize("value", ["", "  \n"])
def test_an_empty_secret_is_an_error_not_an_unset_one(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, name: str, source: str, value: str
) -> None:
    """An empty secret (after stripping) is reported as empty, and as nothing else."""
    flags, config = _give(clean_env, tmp_path, source, name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, **COMPLETE[name], **flags}, config)
    problems = _problems(caught)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{name} (")
    assert problems[0].endswith("): the value is empty")


def test_an_empty_token_is_not_taken_for_no_authentication(clean_env: pytest.MonkeyPatch) -> None:
    """`CCE_EXPORTER_AUTH_TOKEN=` says the token is empty, not that none is configured."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", "")
    with pytest.raises(ConfigError) as caught:
        load_settings(BASE)
    assert _problems(caught) == [
        "auth_token (environment variable CCE_EXPORTER_AUTH_TOKEN): the value is empty"
    ]


def test_an_empty_secret_file_path_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    """An empty `*_file` setting is reported as such, not as an unreadable directory."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN_FILE", "")
    with pytest.raises(ConfigError) as caught:
        load_settings(BASE)
    assert _problems(caught) == [
        "auth_token_file (environment variable CCE_EXPORTER_AUTH_TOKEN_FILE): "
        "is empty: give the path of the file that holds the secret"
    ]


@pytest.mark.parametrize("name", sorted(set(COMPLETE) - {"admin_token"}))
async def test_settings_that_pass_make_an_authenticator(
    clean_env: pytest.MonkeyPatch, name: str
) -> None:
    """Whatever passes the checks builds its authenticator, whose headers are single lines."""
    clean_env.setenv(f"CCE_EXPORTER_{name.upper()}", " padded-secret\n")
    settings = load_settings({**BASE, **COMPLETE[name]})
    async with aiohttp.ClientSession() as session:
        auth = make_auth(settings, session, Instruments())
        if name == "iam_password":
            return  # its headers come from IAM; the password goes into a JSON body
        request = OutgoingRequest("GET", URL("https://cce.example.com/api"), {})
        headers = await auth.authenticate(request)
    assert not any(has_control_character(value) for value in headers.values())
    if name in ("auth_token", "security_token"):
        assert "padded-secret" in headers.values()


def test_the_admin_token_is_stripped(clean_env: pytest.MonkeyPatch) -> None:
    """The admin API's token is cleaned like the others, so a Bearer header can match it."""
    clean_env.setenv("CCE_EXPORTER_ADMIN_TOKEN", "admin-secret\n")
    admin = load_settings({**BASE, "auth_token": "t"}).admin_secret
    assert admin is not None
    assert admin.get_secret_value() == "admin-secret"


@pytest.mark.parametrize("name", ["iam_domain", "iam_username"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is empty"),
        ("name\n", "holds a control character"),
        ("na\x7fme", "holds a control character"),
    ],
)
def test_iam_names_are_single_lines(
    clean_env: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    """An IAM domain or user name that is empty or holds a control character is refused."""
    flags = {**BASE, **COMPLETE["iam_password"], "iam_password": "pw", name: value}
    with pytest.raises(ConfigError) as caught:
        load_settings(flags)
    problems = _problems(caught)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{name} (flag --{name.replace('_', '-')}): {message}")
