"""The status page in a real browser: headless Chromium driven by Selenium.

The real exporter polls the stand-in CCE API; Chromium loads its /jobs page
as a desktop and as a phone, and a page of a few hundred jobs served by the
real app. Screenshots are kept in test-artifacts/; the one of a few hundred
jobs (status-page-many.png) is the docs' picture, copied to
docs/status-page.png by hand when the page changes: a test run never
writes into the repository.
"""

import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from exporter.jobs.state import JobState, JobStore
from exporter.jobs.tree import flatten
from exporter.metrics.exposition import Renderer
from exporter.server.endpoints import WebContext, create_app
from exporter.server.statuspage import PAGE_SIZE
from tests.standins import scenario
from tests.standins.jobs import job_object
from tests.standins.processes import require_program, running_exporter, serving_in_thread

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
ARTIFACTS = ROOT / "test-artifacts"
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
    driver.get(url if "/jobs" in url else f"{url}/jobs")
    assert driver.title == "CCE jobs"


def test_status_page_renders_every_job_tree(browser: Any, exporter_url: str) -> None:
    """Chromium shows a section per watched job, the trees, phase colours and progress bars."""
    _load(browser, exporter_url, *DESKTOP)
    cards = browser.find_elements(By.CSS_SELECTOR, "article.job")
    assert {card.get_attribute("data-job-id") for card in cards} == set(scenario.SCENARIO_JOBS)
    # Problems first: the failed job, then the stuck one.
    assert [card.get_attribute("data-job-id") for card in cards][:2] == [
        scenario.FAILED_JOB,
        scenario.STUCK_JOB,
    ]
    failed = browser.find_element(By.ID, f"job-{scenario.FAILED_JOB}")
    assert scenario.FAILURE_REASON in failed.text
    assert "Failed step: InstallMaster." in failed.text
    badge = failed.find_element(By.CSS_SELECTOR, "h3 .phase")
    assert badge.text == "Failed"
    assert badge.value_of_css_property("background-color") == RED
    nodes = failed.find_elements(By.CSS_SELECTOR, "li.node")
    # The root is the card: its sub-jobs are the rows, shown (the tree is open).
    assert [node.find_element(By.CSS_SELECTOR, ".type").text for node in nodes] == [
        "CreatePSMCert",
        "InstallMaster",
    ]
    assert all(node.is_displayed() for node in nodes)
    running = browser.find_element(By.ID, f"job-{scenario.RUNNING_JOB}")
    assert (
        running.find_element(By.CSS_SELECTOR, "h3 .phase").value_of_css_property("background-color")
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
    for section in browser.find_elements(By.CSS_SELECTOR, "article.job"):
        assert section.size["width"] <= PHONE[0]
    size = browser.execute_script(
        "return parseFloat(getComputedStyle(document.querySelector('.facts')).fontSize)"
    )
    assert size >= 12
    _screenshot(browser, PHONE[0], "status-page-phone.png", mobile=True)


def _many_jobs(count: int, now: float) -> JobStore:
    """A few hundred jobs of a busy project: some failed, some stuck, most running or done."""
    rng = random.Random(14)  # noqa: S311 - test data
    store = JobStore()
    for n in range(count):
        job_id = f"{rng.getrandbits(32):08x}-{n:04d}-11f0-be88-0255ac10003f"
        # Of every 20: one failed, one stuck, three running, the rest done.
        kind = (
            ["Failed", "stuck", "Running", "Running", "Running"][n % 20]
            if n % 20 < 5
            else "Success"
        )
        job_type = "UpgradeCluster" if kind == "stuck" else rng.choice(["CreateNode", "DeleteNode"])
        created = now - (5 * 3600 if kind == "stuck" else rng.uniform(60, 1500))
        phases = {
            "Failed": ["Success", "Failed", "Initializing"],
            "stuck": ["Success", "Running", "Initializing"],
            "Running": ["Success", "Running", "Initializing"],
            "Success": ["Success", "Success", "Success"],
        }[kind]
        subs = [
            job_object(
                f"{job_id[:13]}-s{step}",
                phase,
                job_type=name,
                created=created + step,
                updated=created + 40 * (step + 1),
                reason="ECS quota exceeded for flavor c7.large" if phase == "Failed" else None,
            )
            for step, (phase, name) in enumerate(
                zip(phases, ["CreateServer", "InstallNode", "ConfigureNode"], strict=True)
            )
        ]
        job = job_object(
            job_id,
            "Running" if kind == "stuck" else kind,
            subs,
            job_type=job_type,
            cluster=f"c{n % 3}-4d1ecb2c-229a-11e8-9c75-0255ac100ceb",
            created=created,
            updated=created + 120,
            resource_name=f"prod-node-{n:03d}",
            reason="Something bad happened at server, recycle resource"
            if kind == "Failed"
            else None,
        )
        store.put(JobState(job_id).succeeded(flatten(job, job_id), now - 5))
    return store


@pytest.fixture(scope="module")
def many_jobs_url() -> Iterator[str]:
    """The real app serving 300 jobs."""
    store = _many_jobs(300, time.time())
    context = WebContext(store, Renderer(CollectorRegistry()), lambda: True)
    with serving_in_thread(create_app(context)) as (url,):
        yield url


def test_status_page_of_hundreds_of_jobs_puts_problems_first(
    browser: Any, many_jobs_url: str
) -> None:
    """At 300 jobs: groups in order, problem trees open, others one click away; one page of jobs."""
    _load(browser, many_jobs_url, 1280, 1000)
    groups = browser.find_elements(By.CSS_SELECTOR, "section.group")
    assert [group.get_attribute("id") for group in groups] == [
        "failed",
        "stuck",
        "running",
        "success",
    ]
    cards = browser.find_elements(By.CSS_SELECTOR, "article.job")
    assert len(cards) == PAGE_SIZE
    assert "300 watched job(s)" in browser.find_element(By.CSS_SELECTOR, ".summary").text
    failed = browser.find_element(By.CSS_SELECTOR, "article.job.failed")
    assert failed.find_element(By.CSS_SELECTOR, "details.tree").get_attribute("open") is not None
    assert failed.find_element(By.CSS_SELECTOR, "li.node").is_displayed()
    stuck = browser.find_element(By.CSS_SELECTOR, "article.job.stuck")
    assert stuck.find_element(By.CSS_SELECTOR, ".stuckmark").is_displayed()
    waiting = stuck.find_elements(By.CSS_SELECTOR, "li.node .muted")[-1]
    assert waiting.text == "waiting"
    running = browser.find_element(By.CSS_SELECTOR, "article.job.running")
    row = running.find_element(By.CSS_SELECTOR, "li.node")
    assert not row.is_displayed()
    running.find_element(By.CSS_SELECTOR, "details.tree summary").click()
    assert row.is_displayed()
    # The next page keeps a filter given.
    _load(browser, many_jobs_url + "/jobs?q=prod-node&x=", 1280, 1000)
    nxt = browser.find_element(By.CSS_SELECTOR, 'a[rel="next"]')
    assert nxt.get_attribute("href").endswith("/jobs?q=prod-node&page=2")
    _load(browser, many_jobs_url, 1280, 1000)
    _screenshot_top(browser, "status-page-many.png")


def _screenshot_top(driver: Any, name: str) -> Path:
    """Keep a screenshot of the top of the page, where the problems are."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    return path
