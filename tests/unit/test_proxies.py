"""Reading HTTPS_PROXY, HTTP_PROXY and NO_PROXY, and which URL goes through which proxy."""

import pytest
from yarl import URL

from exporter.cce.proxy import Proxies, ProxyError, proxy_problems
from exporter.settings.load import ConfigError, load_settings

CCE = URL("https://cce.cn-north-4.myhuaweicloud.com/api/v3/projects/p/jobs/j")


def _proxy_of(environ: dict[str, str], url: URL = CCE) -> str | None:
    proxy = Proxies.from_environ(environ).for_url(url)
    return None if proxy is None else str(proxy)


def test_each_scheme_has_its_own_variable_either_case_upper_first() -> None:
    """https:// URLs use HTTPS_PROXY, http:// ones HTTP_PROXY; the upper-case name wins."""
    environ = {"HTTPS_PROXY": "http://upper:3128", "https_proxy": "http://lower:3128"}
    assert _proxy_of(environ) == "http://upper:3128"
    assert _proxy_of({"https_proxy": "http://lower:3128"}) == "http://lower:3128"
    assert _proxy_of({"HTTP_PROXY": "http://plain:3128"}) is None
    assert _proxy_of({"HTTP_PROXY": "http://plain:3128"}, URL("http://cce.test/x")) == (
        "http://plain:3128"
    )
    assert _proxy_of({}) is None


def test_a_proxy_without_a_scheme_is_http_and_its_credentials_are_kept_apart() -> None:
    """`host:port` means http://; credentials go to BasicAuth, never into the URL shown."""
    proxy = Proxies.from_environ({"HTTPS_PROXY": "u%40corp:p%3Ass@proxy.corp:8080"}).for_url(CCE)
    assert proxy is not None
    assert str(proxy) == "http://proxy.corp:8080"
    assert proxy.auth is not None
    assert (proxy.auth.login, proxy.auth.password) == ("u@corp", "p:ss")
    described = Proxies.from_environ({"HTTPS_PROXY": "http://u:secret@proxy:1"}).describe()
    assert described == {"https_proxy": "http://proxy:1"}


@pytest.mark.parametrize(
    ("no_proxy", "host", "direct"),
    [
        ("*", "cce.test", True),
        ("cce.test", "cce.test", True),
        ("cce.test", "api.cce.test", True),
        (".cce.test", "cce.test", True),
        ("*.cce.test", "a.b.cce.test", True),
        ("cce.test", "xcce.test", False),
        ("CCE.Test.", "cce.test", True),
        ("cce.test:443", "cce.test", True),
        ("cce.test:8443", "cce.test", False),
        ("10.1.2.3", "10.1.2.3", True),
        ("10.0.0.0/8", "10.200.0.1", True),
        ("10.0.0.0/8", "11.0.0.1", False),
        ("10.0.0.0/8", "cce.test", False),
        ("[2001:db8::1]:443", "[2001:db8::1]", True),
        ("2001:db8::/32", "[2001:db8::5]", True),
        (" a.test , ,cce.test ", "cce.test", True),
        # Loopback is never proxied, whatever NO_PROXY says.
        ("", "127.0.0.1", True),
        ("", "localhost", True),
        ("", "[::1]", True),
    ],
)
def test_no_proxy_entries(no_proxy: str, host: str, direct: bool) -> None:
    """NO_PROXY: *, domains with subdomains, IPs, CIDR blocks, ports; loopback always direct."""
    environ = {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": no_proxy}
    url = URL(f"https://{host}/x")
    assert (_proxy_of(environ, url) is None) is direct


@pytest.mark.parametrize(
    ("environ", "problems"),
    [
        (
            {"HTTPS_PROXY": "socks5://proxy:1080"},
            [("HTTPS_PROXY", "proxy scheme 'socks5' is not supported: use http:// or https://")],
        ),
        ({"http_proxy": "http://"}, [("http_proxy", "the proxy URL has no host")]),
        (
            {"HTTPS_PROXY": "http://proxy:3128/path"},
            [("HTTPS_PROXY", "a proxy URL is scheme, host and port only")],
        ),
        (
            {"NO_PROXY": "10.0.0.0/33,cce.test:99999"},
            [
                ("NO_PROXY", "'10.0.0.0/33' is not a CIDR block"),
                ("NO_PROXY", "'cce.test:99999' has no valid port"),
            ],
        ),
        ({"HTTPS_PROXY": "https://proxy:443", "NO_PROXY": "a.test,.b.test"}, []),
    ],
)
def test_each_unusable_variable_is_one_problem(
    environ: dict[str, str], problems: list[tuple[str, str]]
) -> None:
    """Each unusable value is one problem naming its variable; usable ones are none."""
    assert proxy_problems(environ) == problems
    if problems:
        with pytest.raises(ProxyError):
            Proxies.from_environ(environ)


def test_an_unusable_proxy_is_a_configuration_error(clean_env: pytest.MonkeyPatch) -> None:
    """An unusable HTTPS_PROXY stops start-up (and --check-config) with one message naming it."""
    clean_env.setenv("HTTPS_PROXY", "socks5://proxy:1080")
    flags = {"endpoint": "https://cce.test", "project_id": "p1", "auth_token": "t", "job_ids": "j"}
    with pytest.raises(ConfigError) as caught:
        load_settings(flags)
    assert [str(problem) for problem in caught.value.problems] == [
        "HTTPS_PROXY (environment): proxy scheme 'socks5' is not supported: use http:// or https://"
    ]
