import tempfile
from pathlib import Path

import pytest
import trustme

from exporter.cli import build_parser
from exporter.config import SECRET_FIELDS, ConfigError, Settings, load_settings

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
