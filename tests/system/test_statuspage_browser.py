"""The status page in a real browser: headless Chromium driven by Selenium.

The real exporter polls the stand-in CCE API; Chromium loads its /jobs page
as a desktop and as a phone. Screenshots are kept in test-artifacts/.
"""

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.standins import scenario
from tests.standins.processes import require_program, running_exporter

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
PHONE = (390, 844)
DESKTOP = (1280, 900)
# What the phase badges look like: the page's own colours.
RED = "rgba(214, 61, 61, 1)"
BLUE = "rgba(31, 120, 209, 1)"


@pytest.fixture(scope="module")
def exporter_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real exporter, watching the scenario jobs of the stand-in API."""
    log = tmp_path_factory.mktemp("browser") / "exporter.log"
    with (
        scenario.serving() as servers,
        running_exporter(servers.api_url, scenario.SCENARIO_JOBS, log) as url,
    ):
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium with a fresh profile, talking to nothing but loopback."""
    chromium = require_program("chromium")
    chromedriver = require_program("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
        ):
            options.add_argument(arg)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
        try:
            yield driver
        finally:
            driver.quit()


def _emulate(driver: Any, width: int, height: int, *, mobile: bool) -> None:
    """Give the page a screen of that size (a phone's, with `mobile`)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


def _screenshot(driver: Any, width: int, name: str, *, mobile: bool) -> Path:
    """Keep a screenshot of the whole page at `width`."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    _emulate(driver, width, min(int(height), 6000), mobile=mobile)
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    return path


def _load(driver: Any, url: str, width: int, height: int, *, mobile: bool = False) -> None:
    _emulate(driver, width, height, mobile=mobile)
    driver.get(f"{url}/jobs")
    assert driver.title == "CCE jobs"


def test_status_page_renders_every_job_tree(browser: Any, exporter_url: str) -> None:
    """Chromium shows a section per watched job, the trees, phase colours and progress bars."""
    _load(browser, exporter_url, *DESKTOP)
    sections = browser.find_elements(By.CSS_SELECTOR, "section.job")
    assert {s.get_attribute("data-job-id") for s in sections} == set(scenario.SCENARIO_JOBS)
    failed = browser.find_element(By.ID, f"job-{scenario.FAILED_JOB}")
    assert scenario.FAILURE_REASON in failed.text
    badge = failed.find_element(By.CSS_SELECTOR, "h2 .phase")
    assert badge.text == "Failed"
    assert badge.value_of_css_property("background-color") == RED
    nodes = failed.find_elements(By.CSS_SELECTOR, "li.node")
    assert [node.find_element(By.CSS_SELECTOR, ".type").text for node in nodes] == [
        "CreateCluster",
        "CreatePSMCert",
        "InstallMaster",
    ]
    # A sub-job sits further right than its parent: the tree shows.
    assert nodes[1].location["x"] > nodes[0].location["x"]
    running = browser.find_element(By.ID, f"job-{scenario.RUNNING_JOB}")
    assert (
        running.find_element(By.CSS_SELECTOR, "h2 .phase").value_of_css_property("background-color")
        == BLUE
    )
    bar = running.find_element(By.CSS_SELECTOR, ".bar")
    success = bar.find_element(By.CSS_SELECTOR, ".seg.success")
    # One of its two sub-jobs succeeded: half the bar is green.
    assert success.size["width"] == pytest.approx(bar.size["width"] / 2, abs=2)
    unreadable = browser.find_element(By.ID, f"job-{scenario.FAILING_JOB}")
    assert "Last poll failed" in unreadable.text
    assert "server_error" in unreadable.text
    _screenshot(browser, DESKTOP[0], "status-page.png", mobile=False)


def test_status_page_is_readable_on_a_phone(browser: Any, exporter_url: str) -> None:
    """At a phone's width nothing needs sideways scrolling and the text stays legible."""
    _load(browser, exporter_url, *PHONE, mobile=True)
    widths = browser.execute_script(
        "return [window.innerWidth, document.documentElement.scrollWidth]"
    )
    # A page wider than the phone would make the layout viewport grow past it.
    assert widths == [PHONE[0], PHONE[0]]
    for section in browser.find_elements(By.CSS_SELECTOR, "section.job"):
        assert section.size["width"] <= PHONE[0]
    size = browser.execute_script(
        "return parseFloat(getComputedStyle(document.querySelector('.facts')).fontSize)"
    )
    assert size >= 12
    _screenshot(browser, PHONE[0], "status-page-phone.png", mobile=True)
