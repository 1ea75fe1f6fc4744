import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.settings.load import ConfigError, load_settings
from exporter.settings.model import Settings
from exporter.settings.resolved import (
    AkSkCredentials,
    IamCredentials,
    Target,
    TokenCredentials,
    resolve_targets,
)
from exporter.settings.targets import PER_TARGET

pytestmark = pytest.mark.usefixtures("clean_env")

ROOT = Path(__file__).parents[2]
TOKEN = "TOKEN-SECRET-VALUE"


def _load(tmp_path: Path, data: dict[str, Any], *, demo: bool = False) -> Settings:
    """Load settings from a YAML file holding `data`."""
    config = tmp_path / "exporter.yml"
    config.write_text(yaml.safe_dump(data))
    return load_settings({}, config, demo=demo)


def _problems(tmp_path: Path, data: dict[str, Any], **flags: str) -> list[str]:
    """The problems a YAML file holding `data` (and flags) has, as printed."""
    config = tmp_path / "exporter.yml"
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        load_settings(flags, config)
    return [str(problem) for problem in caught.value.problems]


def _secret(tmp_path: Path, name: str, value: str) -> str:
    """Write a secret file; return its path."""
    path = tmp_path / name
    path.write_text(value + "\n")
    return str(path)


def _target(name: str, project: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "region": "cn-north-4", "project_id": project, **more}


def _load_example(text: str, tmp_path: Path) -> Settings:
    """Load an example settings text, its /run/secrets/ files made up for the test."""
    for path in sorted(set(re.findall(r"/run/secrets/[a-z-]+", text))):
        text = text.replace(path, _secret(tmp_path, path.rsplit("/", 1)[1], f"example-{path}"))
    config = tmp_path / "exporter.yml"
    config.write_text(text)
    return load_settings({}, config)


def _check_example(settings: Settings) -> None:
    """The three targets of the documented example, resolved."""
    eu, cn, ap = resolve_targets(settings)
    assert [t.name for t in (eu, cn, ap)] == ["eu-west", "cn-north", "ap-southeast"]
    assert eu.endpoint == "https://cce.eu-west-101.myhuaweicloud.eu"
    assert eu.job_ids == ("354331b2c-229a-11e8-9c75-0255ac100ceb",)
    assert eu.discover
    assert eu.discover_job_types is not None
    assert re.fullmatch(eu.discover_job_types, "CreateNode")
    assert not re.fullmatch(eu.discover_job_types, "CreateNodePool")
    assert eu.discover_clusters == ("prod-eu",)
    assert isinstance(eu.credentials, AkSkCredentials)
    assert isinstance(ap.credentials, AkSkCredentials)
    assert eu.credentials == ap.credentials
    assert isinstance(cn.credentials, TokenCredentials)
    assert cn.auth_method == "token"
    assert cn.endpoint == "https://cce.cn-north-4.myhuaweicloud.com"
    assert cn.region is None
    assert (eu.rate_limit, cn.rate_limit, ap.rate_limit) == (20, 20, 5)
    assert not cn.discover


def test_the_example_file_is_valid(tmp_path: Path) -> None:
    """config/targets.example.yml loads (given its secret files) into its three targets."""
    settings = _load_example((ROOT / "config" / "targets.example.yml").read_text(), tmp_path)
    _check_example(settings)
    assert resolve_targets(settings)[2].request_timeout == 20


def test_the_documented_example_is_valid(tmp_path: Path) -> None:
    """The example of docs/configuration.md's "Many targets" loads into its three targets."""
    guide = (ROOT / "docs" / "configuration.md").read_text()
    section = guide[guide.index("\n## Many targets\n") :]
    opening = section.index("```yaml\n") + len("```yaml\n")
    settings = _load_example(section[opening : section.index("```", opening)], tmp_path)
    _check_example(settings)


def test_without_targets_the_top_level_is_one_target(clean_env: pytest.MonkeyPatch) -> None:
    """Without targets, flags and environment make one target named default, as before."""
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", TOKEN)
    clean_env.setenv("CCE_EXPORTER_JOB_IDS", "a,b")
    clean_env.setenv("CCE_EXPORTER_DISCOVER", "true")
    settings = load_settings(
        {"region": "eu-west-101", "project_id": "p1", "rate_limit": "7", "request_timeout": "3"}
    )
    assert settings.targets is None
    token = settings.token
    assert token is not None
    (target,) = resolve_targets(settings)
    assert target == Target(
        name="default",
        project_id="p1",
        endpoint=settings.cce_endpoint,
        region="eu-west-101",
        job_ids=("a", "b"),
        discover=True,
        discover_interval=60,
        discover_max_age=86400,
        discover_job_types=None,
        discover_clusters=(),
        credentials=TokenCredentials(token),
        rate_limit=7,
        request_timeout=3,
    )


@pytest.mark.parametrize(
    ("env", "method"),
    [
        ({"AUTH_TOKEN": TOKEN}, "token"),
        ({"ACCESS_KEY": "ak", "SECRET_KEY": "sk", "SECURITY_TOKEN": "st"}, "aksk"),
        ({"IAM_DOMAIN": "d", "IAM_USERNAME": "u", "IAM_PASSWORD": "pw"}, "iam"),
    ],
)
def test_the_implicit_target_has_the_top_level_credentials(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], method: str
) -> None:
    """Each way of authenticating at the top level is the implicit target's, values intact."""
    for name, value in env.items():
        clean_env.setenv(f"CCE_EXPORTER_{name}", value)
    settings = load_settings({"region": "cn-north-4", "project_id": "p"})
    (target,) = resolve_targets(settings)
    assert target.auth_method == method == settings.auth_method
    credentials = target.credentials
    if isinstance(credentials, AkSkCredentials):
        assert credentials.access_key.get_secret_value() == "ak"
        assert credentials.secret_key.get_secret_value() == "sk"
        assert credentials.security_token is not None
        assert credentials.security_token.get_secret_value() == "st"
    elif isinstance(credentials, IamCredentials):
        assert credentials.endpoint == settings.iam_token_endpoint
        assert credentials.endpoint == "https://iam.cn-north-4.myhuaweicloud.com"
        assert (credentials.domain, credentials.username) == ("d", "u")
        assert credentials.password.get_secret_value() == "pw"
    else:
        assert isinstance(credentials, TokenCredentials)
        assert credentials.token.get_secret_value() == TOKEN


def test_the_demo_needs_no_credentials_nor_place(clean_env: pytest.MonkeyPatch) -> None:
    """Under --demo the implicit target may lack credentials, project and endpoint."""
    (target,) = resolve_targets(load_settings({}, demo=True))
    assert (target.name, target.project_id, target.endpoint) == ("default", "", "")
    assert target.credentials is None
    assert target.auth_method is None


def test_a_target_without_credentials_inherits_the_top_level_ones(tmp_path: Path) -> None:
    """A target that brings no authentication uses the top level's; one that does, only its own."""
    settings = _load(
        tmp_path,
        {
            "access_key": "top-ak",
            "secret_key_file": _secret(tmp_path, "sk", "top-sk"),
            "targets": [
                _target("inherits", "p1"),
                _target("own-token", "p2", auth_token=TOKEN),
                _target("own-aksk", "p3", access_key="ak3", secret_key="sk3"),
            ],
        },
    )
    inherits, own_token, own_aksk = resolve_targets(settings)
    assert isinstance(inherits.credentials, AkSkCredentials)
    assert inherits.credentials.access_key.get_secret_value() == "top-ak"
    assert inherits.credentials.secret_key.get_secret_value() == "top-sk"
    assert isinstance(own_token.credentials, TokenCredentials)
    assert own_token.credentials.token.get_secret_value() == TOKEN
    assert isinstance(own_aksk.credentials, AkSkCredentials)
    assert own_aksk.credentials.access_key.get_secret_value() == "ak3"
    assert own_aksk.credentials.secret_key.get_secret_value() == "sk3"


def test_inherited_iam_takes_its_endpoint_from_each_target(tmp_path: Path) -> None:
    """Top-level IAM without iam_endpoint gives each target the IAM endpoint of its region."""
    iam = {"iam_domain": "d", "iam_username": "u", "iam_password": "pw"}
    targets = [_target("north", "p1"), {**_target("dublin", "p2"), "region": "eu-west-101"}]
    north, dublin = resolve_targets(_load(tmp_path, {**iam, "targets": targets}))
    assert isinstance(north.credentials, IamCredentials)
    assert north.credentials.endpoint == "https://iam.cn-north-4.myhuaweicloud.com"
    assert isinstance(dublin.credentials, IamCredentials)
    assert dublin.credentials.endpoint == "https://iam.eu-west-101.myhuaweicloud.eu"
    # A global IAM endpoint at the top level serves every target; it needs no region.
    only_endpoint = [{"name": "x", "project_id": "p", "endpoint": "https://cce.example.com"}]
    data = {**iam, "iam_endpoint": "https://iam.example.com", "targets": only_endpoint}
    (target,) = resolve_targets(_load(tmp_path, data))
    assert isinstance(target.credentials, IamCredentials)
    assert target.credentials.endpoint == "https://iam.example.com"
    assert target.endpoint == "https://cce.example.com"


def test_a_target_with_its_own_iam_derives_from_its_own_region(tmp_path: Path) -> None:
    """A target's own IAM settings, IAM endpoint derived from its region, ignore the top level's."""
    own = {"iam_domain": "d2", "iam_username": "u2", "iam_password": "pw2"}
    data = {
        "auth_token": TOKEN,
        "targets": [{**_target("t", "p"), "region": "ap-southeast-1", **own}],
    }
    (target,) = resolve_targets(_load(tmp_path, data))
    assert isinstance(target.credentials, IamCredentials)
    assert target.credentials.endpoint == "https://iam.ap-southeast-1.myhuaweicloud.com"
    assert (target.credentials.domain, target.credentials.username) == ("d2", "u2")


def test_rate_limit_and_timeout_are_the_top_levels_unless_a_target_sets_its_own(
    tmp_path: Path,
) -> None:
    """rate_limit and request_timeout default to the top-level values, target by target."""
    data = {
        "auth_token": TOKEN,
        "rate_limit": 12,
        "request_timeout": 4,
        "targets": [_target("a", "p1"), _target("b", "p2", rate_limit=2.5, request_timeout=30)],
    }
    a, b = resolve_targets(_load(tmp_path, data))
    assert (a.rate_limit, a.request_timeout) == (12, 4)
    assert (b.rate_limit, b.request_timeout) == (2.5, 30)


def test_discovery_settings_are_per_target(tmp_path: Path) -> None:
    """Each target has its own discovery settings; unset ones take the top-level defaults."""
    data = {
        "auth_token": TOKEN,
        "targets": [
            _target(
                "a",
                "p1",
                discover=True,
                discover_interval=15,
                discover_max_age=600,
                discover_job_types="Create.*",
                discover_clusters=["prod-eu", "4d1ecb2c-229a-11e8-9c75-0255ac100ceb", "prod-eu"],
            ),
            _target("b", "p2"),
        ],
    }
    a, b = resolve_targets(_load(tmp_path, data))
    assert (a.discover, a.discover_interval, a.discover_max_age) == (True, 15, 600)
    assert a.discover_job_types == "Create.*"
    assert a.discover_clusters == ("prod-eu", "4d1ecb2c-229a-11e8-9c75-0255ac100ceb")
    defaults = Settings.model_fields
    assert (b.discover, b.discover_interval, b.discover_max_age) == (
        defaults["discover"].default,
        defaults["discover_interval"].default,
        defaults["discover_max_age"].default,
    )
    assert (b.discover_job_types, b.discover_clusters) == (None, ())


def test_a_list_of_job_types_matches_exactly_those_types(tmp_path: Path) -> None:
    """discover_job_types as a list matches each listed type whole, taken literally."""
    targets = [_target("a", "p", discover_job_types=["CreateNode", "Upgrade.Cluster"])]
    (target,) = resolve_targets(_load(tmp_path, {"auth_token": TOKEN, "targets": targets}))
    assert target.discover_job_types is not None
    pattern = re.compile(target.discover_job_types)
    assert pattern.fullmatch("CreateNode")
    assert pattern.fullmatch("Upgrade.Cluster")
    assert not pattern.fullmatch("UpgradeXCluster")
    assert not pattern.fullmatch("CreateNodePool")


@pytest.mark.parametrize("name", PER_TARGET)
@pytest.mark.parametrize("where", ["file", "env", "flag"])
def test_with_targets_the_top_level_per_target_settings_are_refused(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, name: str, where: str
) -> None:
    """Each top-level setting that a target says is refused with targets, from any source."""
    values = {
        "endpoint": "https://cce.example.com",
        "region": "cn-north-4",
        "discover": "true",
        "discover_interval": "5",
        "discover_max_age": "5",
    }
    value = values.get(name, "x1")  # valid for the others: an ID, a list of one, a pattern
    data: dict[str, Any] = {"auth_token": TOKEN, "targets": [_target("a", "p1")]}
    flags = {}
    if where == "file":
        data[name] = value
    elif where == "env":
        clean_env.setenv(f"CCE_EXPORTER_{name.upper()}", value)
    else:
        flags[name] = value
    problems = _problems(tmp_path, data, **flags)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{name} (")
    assert "not a top-level setting when targets is given" in problems[0]


def test_each_refusal_has_its_own_message(tmp_path: Path) -> None:
    """The refusals of the top-level settings are one message each, none alike."""
    data: dict[str, Any] = {
        "auth_token": TOKEN,
        "endpoint": "https://cce.example.com",
        "region": "cn-north-4",
        "project_id": "p",
        "job_ids": ["j"],
        "discover": True,
        "discover_interval": 5,
        "discover_max_age": 5,
        "discover_job_types": "x",
        "discover_clusters": ["prod"],
        "targets": [_target("a", "p1")],
    }
    problems = _problems(tmp_path, data)
    assert sorted(p.split(" (", 1)[0] for p in problems) == sorted(PER_TARGET)
    messages = [p.split("): ", 1)[1] for p in problems]
    assert len(set(messages)) == len(messages)


@pytest.mark.parametrize("where", ["env", "flag"])
def test_targets_only_in_the_file(clean_env: pytest.MonkeyPatch, where: str) -> None:
    """A targets variable or flag is refused with a message saying so, even when not JSON."""
    flags = {"region": "cn-north-4", "project_id": "p"}
    clean_env.setenv("CCE_EXPORTER_AUTH_TOKEN", TOKEN)
    if where == "env":
        clean_env.setenv("CCE_EXPORTER_TARGETS", "[{not json")
    else:
        flags["targets"] = '[{"name": "a"}]'
    with pytest.raises(ConfigError) as caught:
        load_settings(flags)
    (problem,) = [str(p) for p in caught.value.problems]
    source = "environment variable CCE_EXPORTER_TARGETS" if where == "env" else "flag --targets"
    assert problem == (
        f"targets ({source}): set only in the YAML file given by --config: "
        "a list of targets has no flag or environment variable form"
    )


def test_every_problem_names_the_target_and_the_setting(tmp_path: Path) -> None:
    """One load reports each problem of each target once, as targets[i] (name).setting."""
    config = tmp_path / "exporter.yml"
    data = {
        "targets": [
            {"name": "eu-west", "region": "eu_west", "project_id": "p1", "poll_interval": 5},
            {"name": "cn-north", "project_id": "p1", "auth_token": TOKEN},
            {"name": "eu-west", "endpoint": "https://x.example.com", "project_id": "p2"},
            {"name": "Bad_Name", "region": "cn-east-3", "auth_token": TOKEN, "bogus": 1},
            42,
            {"name": "ok", "region": "cn-south-1", "project_id": "p3", "access_key": "AK"},
            {"region": "cn-south-1", "project_id": "p4", "rate_limit": -1, "auth_token": TOKEN},
        ]
    }
    problems = _problems(tmp_path, data)
    src = f"(config file {config})"
    assert problems == [
        f"targets[0] (eu-west).region {src}: 'eu_west' is not a region name: lowercase "
        "letters, digits and hyphens, like 'cn-north-4'",
        f"targets[0] (eu-west).poll_interval {src}: not a setting of a target: set it at "
        "the top level, for every target",
        f"targets[3].name {src}: 'Bad_Name' is not a target name: 1 to 32 lowercase "
        "letters, digits and hyphens, starting with a letter or digit, like 'cn-north'",
        f"targets[3].bogus {src}: unknown setting",
        f"targets[4] {src}: must be a mapping of setting: value",
        f"targets[6].rate_limit {src}: Input should be greater than 0",
        f"targets[0] (eu-west).auth_token {src}: no authentication: give the target its own "
        "(a token, AK/SK or IAM), or set one at the top level for every target",
        f"targets[1] (cn-north).project_id {src}: 'p1' is already the project of "
        "targets[0] (eu-west)",
        f"targets[1] (cn-north).endpoint {src}: set endpoint, or region to derive it from",
        f"targets[2] (eu-west).name {src}: 'eu-west' is already the name of targets[0] (eu-west)",
        f"targets[2] (eu-west).auth_token {src}: no authentication: give the target its own "
        "(a token, AK/SK or IAM), or set one at the top level for every target",
        f"targets[3].project_id {src}: required: the project whose jobs are watched",
        f"targets[5] (ok).secret_key {src}: AK/SK signing needs secret_key (or secret_key_file)",
        f"targets[6].name {src}: required: a name for the target, like 'cn-north'",
    ]
    assert not any(TOKEN in problem for problem in problems)


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ([], "targets (config file {config}): is empty: list at least one target, or leave "
         "targets out"),
        (None, "targets (config file {config}): is empty: list at least one target, or leave "
         "targets out"),
        ("cn-north", "targets (config file {config}): must be a list of targets, each a mapping "
         "of setting: value"),
        ({"name": "a"}, "targets (config file {config}): must be a list of targets, each a "
         "mapping of setting: value"),
    ],
)  # fmt: skip
def test_targets_that_are_no_list_of_targets(tmp_path: Path, targets: object, message: str) -> None:
    """An empty, null or non-list targets is one problem, and no implicit target instead."""
    problems = _problems(tmp_path, {"auth_token": TOKEN, "targets": targets})
    assert problems == [message.format(config=tmp_path / "exporter.yml")]


def test_a_refused_value_is_not_also_a_missing_one(tmp_path: Path) -> None:
    """A target's refused credential or region is one problem, not also a missing setting."""
    data = {
        "targets": [
            _target("a", "p1", auth_token_file="/nonexistent/token"),
            _target("b", "p2", region="No Region", iam_domain="d", iam_username="u",
                    iam_password="pw"),
            _target("c", "p3", access_key="ak", secret_key_file="/nonexistent/sk"),
        ],
    }  # fmt: skip
    problems = _problems(tmp_path, data)
    assert [p.split(" (config", 1)[0] for p in problems] == [
        "targets[0] (a).auth_token_file",
        "targets[1] (b).region",
        "targets[2] (c).secret_key_file",
    ]
    assert "cannot read /nonexistent/token" in problems[0]


def test_a_refused_top_level_credential_is_not_a_missing_one_for_the_targets(
    tmp_path: Path,
) -> None:
    """A refused top-level credential does not make every inheriting target lack one."""
    data = {"auth_token_file": "/nonexistent/token", "targets": [_target("a", "p1")]}
    problems = _problems(tmp_path, data)
    assert len(problems) == 1
    assert problems[0].startswith("auth_token_file (")


@pytest.mark.parametrize(
    ("own", "setting", "message"),
    [
        ({"auth_token": TOKEN, "access_key": "ak"}, "auth_token",
         "configure exactly one way of authenticating, not several"),
        ({"auth_token": TOKEN, "auth_token_file": "TOKENFILE"}, "auth_token_file",
         "set auth_token or auth_token_file, not both"),
        ({"security_token": TOKEN, "secret_key": "sk"}, "access_key",
         "AK/SK signing needs access_key"),
        ({"iam_password": TOKEN, "iam_username": "u"}, "iam_domain",
         "IAM authentication needs iam_domain"),
        ({"auth_token": "two\nlines"}, "auth_token", "holds a control character"),
    ],
)  # fmt: skip
def test_a_targets_own_authentication_follows_the_top_level_rules(
    tmp_path: Path, own: dict[str, str], setting: str, message: str
) -> None:
    """A target's own authentication is judged as the top level's is, whatever the top level has."""
    own = {k: _secret(tmp_path, "t", TOKEN) if v == "TOKENFILE" else v for k, v in own.items()}
    data = {"auth_token": "top-level-token", "targets": [_target("a", "p1", **own)]}
    problems = _problems(tmp_path, data)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"targets[0] (a).{setting} (config file ")
    assert message in problems[0]
    assert TOKEN not in problems[0]
    assert "two" not in problems[0]


def test_a_target_with_its_own_iam_needs_a_region_or_iam_endpoint(tmp_path: Path) -> None:
    """Own IAM on a target with an endpoint and no region asks for the target's iam_endpoint."""
    own = {"iam_domain": "d", "iam_username": "u", "iam_password": "pw"}
    target = {"name": "a", "project_id": "p", "endpoint": "https://cce.example.com", **own}
    problems = _problems(tmp_path, {"targets": [target]})
    assert len(problems) == 1
    assert problems[0].startswith("targets[0] (a).iam_endpoint (config file ")
    assert problems[0].endswith("set iam_endpoint, or region to derive it from")


def test_inherited_iam_needs_the_targets_region(tmp_path: Path) -> None:
    """Top-level IAM without iam_endpoint asks a target without region for one."""
    iam = {"iam_domain": "d", "iam_username": "u", "iam_password": "pw"}
    target = {"name": "a", "project_id": "p", "endpoint": "https://cce.example.com"}
    problems = _problems(tmp_path, {**iam, "targets": [target]})
    assert len(problems) == 1
    assert problems[0].startswith("targets[0] (a).region (config file ")
    assert "set region, or iam_endpoint at the top level" in problems[0]


def test_top_level_credentials_are_optional_when_every_target_has_its_own(
    tmp_path: Path,
) -> None:
    """Top-level authentication may be absent when each target brings its own, not incomplete."""
    targets = [_target("a", "p1", auth_token=TOKEN), _target("b", "p2", auth_token=TOKEN)]
    assert len(resolve_targets(_load(tmp_path, {"targets": targets}))) == 2
    problems = _problems(tmp_path, {"access_key": "ak", "targets": targets})
    assert len(problems) == 1
    assert problems[0].startswith("secret_key (default): AK/SK signing needs secret_key")


def test_target_values_are_checked_as_the_top_level_ones(tmp_path: Path) -> None:
    """Endpoints, IDs, job types and IAM names in a target get the top-level messages."""
    bad = {
        "endpoint": "http://cce.example.com",
        "project_id": "a/b",
        "job_ids": ["ok", "../etc"],
        "discover_job_types": "(",
        "iam_endpoint": "https://user:pw@iam.example.com",
        "discover_interval": float("inf"),
    }
    top = {"auth_token": TOKEN}
    for name, value in bad.items():
        with pytest.raises(ConfigError) as top_level:
            load_settings({**top, "region": "cn-north-4", "project_id": "p", name: value})
        expected = str(top_level.value.problems[0]).split("): ", 1)[1]
        target = {"name": "a", "region": "cn-north-4", "project_id": "p", name: value}
        problems = _problems(tmp_path, {**top, "targets": [target]})
        assert f"targets[0] (a).{name} (config file" in problems[0]
        assert problems[0].endswith(f"): {expected}"), (problems, expected)
        assert "pw@" not in problems[0]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("discover_job_types", [], "is empty: list at least one job type"),
        ("discover_job_types", ["Create", ""], "'' is not a job type"),
        ("discover_clusters", ["prod eu"], "'prod eu' is not a cluster name or ID"),
        ("name", "x" * 33, "is not a target name"),
        ("name", "-lead", "is not a target name"),
    ],
)
def test_new_target_values_are_checked(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    """Names, job type lists and cluster lists that cannot work are refused."""
    target = {**_target("a", "p"), field: value}
    problems = _problems(tmp_path, {"auth_token": TOKEN, "targets": [target]})
    assert len(problems) == 1, problems  # a refused name is not also a missing one
    assert f".{field} (config file" in problems[0]
    assert message in problems[0]


def test_the_demo_asks_targets_for_name_and_project_only(tmp_path: Path) -> None:
    """Under --demo a target needs no credentials or endpoint, still a name and a project."""
    settings = _load(tmp_path, {"targets": [{"name": "a", "project_id": "p"}]}, demo=True)
    (target,) = resolve_targets(settings)
    assert (target.endpoint, target.credentials) == ("", None)
    config = tmp_path / "exporter.yml"
    config.write_text(yaml.safe_dump({"targets": [{"region": "cn-north-4"}]}))
    with pytest.raises(ConfigError) as caught:
        load_settings({}, config, demo=True)
    assert [p.setting for p in caught.value.problems] == [
        "targets[0].name",
        "targets[0].project_id",
    ]


def test_no_secret_shows_in_the_targets_or_their_problems(tmp_path: Path) -> None:
    """Settings, resolved targets and problems show no secret, however they are given."""
    secrets = {
        "auth_token": "TOK-SECRET-VALUE",
        "access_key": "AK-SECRET-VALUE",
        "secret_key_file": _secret(tmp_path, "sk", "SK-SECRET-VALUE"),
        "security_token": "ST-SECRET-VALUE",
    }
    targets = [
        _target("a", "p1", auth_token=secrets["auth_token"]),
        _target("b", "p2", **{k: v for k, v in secrets.items() if k != "auth_token"}),
        _target("c", "p3", iam_domain="d", iam_username="u", iam_password="PW-SECRET-VALUE"),
    ]
    settings = _load(tmp_path, {"targets": targets})
    resolved = resolve_targets(settings)
    for text in (repr(settings), str(settings.model_dump()), repr(resolved)):
        assert "SECRET-VALUE" not in text
    # Two ways in one target, and an unknown key that holds a secret: refused, not echoed.
    targets[0] = _target("a", "p1", auth_token="TOK-SECRET-VALUE", access_key="AK-SECRET-VALUE")
    targets[1] = {**_target("b", "p2", auth_token="x"), "auth_tokn": "TOK-SECRET-VALUE"}
    problems = _problems(tmp_path, {"targets": targets})
    assert len(problems) == 2
    assert not any("SECRET-VALUE" in problem for problem in problems)
