"""The web console at /ui, in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by selenium against live ``runtime serve`` children.

Each test waits on what the page shows, never on a fixed sleep. Screenshots go to the
folder named by ``CONSOLE_SCREENSHOTS`` (``docs/console/`` to refresh the docs'
pictures), else to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RedisServer
from tests.integration.serving import ServeProcesses

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "headless Chromium is not installed: apt-get install -y chromium chromium-driver",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a dev dependency")
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

TOKEN = "console-test-token-" + "t" * 20
KEY = "console-test-signing-key-" + "k" * 20
WAIT_S = 15
TRACE_URL = "http://jaeger.example:16686/trace/{trace_id}"
HANDLERS = """\
    import asyncio

    from runtime import Context, function

    @function(max_attempts=1)
    async def explode(x: int) -> int:
        raise ValueError(f"exploded on {x}")

    @function
    async def later(x: int) -> int:
        return x

    @function(timeout_s=120)
    async def crawl(x: int, ctx: Context) -> int:
        ctx.progress(0.25, "a quarter done")
        await asyncio.sleep(100)
        return x
"""
DEPLOYED = """\
    from runtime import function

    @function
    async def greet(name: str) -> str:
        return {greeting!r} + name
"""

Driver = Any


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Driver]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,860", "--disable-gpu"):  # fmt: skip
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    except WebDriverException as exc:
        pytest.skip(f"chromium did not start: {exc.msg}")
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def local(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServeProcesses, str]]:
    """`runtime serve` of a folder with a failing and a plain function."""
    tmp = tmp_path_factory.mktemp("console")
    (tmp / "functions").mkdir()
    (tmp / "functions" / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    env = {"RUNTIME_HTTP__TOKEN": TOKEN, "RUNTIME_NAMESPACE": "console",
           "RUNTIME_METRICS__REFRESH_S": "0.5", "RUNTIME_TRACING__ENABLED": "true",
           "RUNTIME_TRACING__EXPORTER": "console", "RUNTIME_UI__TRACE_URL": TRACE_URL}  # fmt: skip
    fleet = ServeProcesses(tmp, redis_server.url, env)
    process = fleet.spawn("--functions", "functions")
    try:
        fleet.wait_ready(process)
        yield fleet, f"http://127.0.0.1:{fleet.ports[process.pid]}"
    finally:
        fleet.stop_all()


def api(base: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def sign_in(driver: Driver, base: str, token: str = TOKEN) -> None:
    driver.delete_all_cookies()
    driver.get(base + "/ui")
    assert "/ui/signin" in driver.current_url
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin").click()
    if token == TOKEN:  # the next page is the fleet, once the redirect has landed
        WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(
            lambda d: d.current_url.rstrip("/").endswith("/ui") and "Fleet" in text_of(d, "h1")
        )


def text_of(driver: Driver, css: str) -> str:
    """The element's text; "" while it is absent or being replaced (the fleet table is
    swapped every 2 s, a submitted form's page goes away)."""
    try:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return str(found[0].text) if found else ""
    except StaleElementReferenceException:
        return ""
    except WebDriverException as exc:  # the same, as Chromium 156 sometimes words it
        if "does not belong to the document" in str(exc):
            return ""
        raise


def wait_text(driver: Driver, css: str, expected: str, timeout_s: float = WAIT_S) -> None:
    try:
        WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(
            lambda d: expected in text_of(d, css)
        )
    except TimeoutException:
        page = text_of(driver, "body")[:2000]
        raise AssertionError(
            f"{css!r} never showed {expected!r}; {driver.current_url}:\n{page}"
        ) from None


def test_a_wrong_token_is_refused(browser: Driver, local: tuple[ServeProcesses, str]) -> None:
    _, base = local
    sign_in(browser, base, token="not-the-token")
    wait_text(browser, "#signin-error", "Wrong token")
    assert browser.get_cookie("rt_console") is None
    browser.get(base + "/ui/dlq/explode")  # still not signed in: back to the form
    assert "/ui/signin" in browser.current_url


def test_counts_change_live_after_an_enqueue(
    browser: Driver, local: tuple[ServeProcesses, str], shots: Path
) -> None:
    _, base = local
    sign_in(browser, base)
    wait_text(browser, "h1", "Fleet")
    cookie = browser.get_cookie("rt_console")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    wait_text(browser, "tr[data-function=later] td.delayed", "0")
    api(base, "POST", "/v1/functions/later/jobs?delay_s=3600", 1)
    api(base, "POST", "/v1/functions/later/jobs?delay_s=3600", 2)
    # No reload: the page's script swaps the table in every 2 s.
    wait_text(browser, "tr[data-function=later] td.delayed", "2", timeout_s=6)
    browser.save_screenshot(str(shots / "fleet.png"))


def test_a_failed_job_shows_its_traceback(
    browser: Driver, local: tuple[ServeProcesses, str], shots: Path
) -> None:
    _, base = local
    job_id = api(base, "POST", "/v1/functions/explode/jobs", 41)["job_id"]
    browser.get(base + "/ui/functions/explode")
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda d: d.refresh() or job_id in text_of(d, "main"), message="no failure listed"
    )
    browser.find_element(By.LINK_TEXT, job_id).click()
    wait_text(browser, "#state", "dead")
    assert "ValueError: exploded on 41" in text_of(browser, "#traceback")
    assert 'raise ValueError(f"exploded on {x}")' in text_of(browser, "#traceback")
    assert text_of(browser, "#payload") == "41"
    link = browser.find_element(By.CSS_SELECTOR, "#trace a")  # the enqueue's trace
    assert len(link.text) == 32 and int(link.text, 16)
    assert link.get_attribute("href") == TRACE_URL.format(trace_id=link.text)
    browser.save_screenshot(str(shots / "job.png"))


def test_a_running_job_shows_its_progress_and_is_cancelled(
    browser: Driver, local: tuple[ServeProcesses, str], shots: Path
) -> None:
    _, base = local
    sign_in(browser, base)
    job_id = api(base, "POST", "/v1/functions/crawl/jobs", 7)["job_id"]
    browser.get(base + f"/ui/jobs/{job_id}")
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda d: d.refresh() or "a quarter done" in text_of(d, "main"), message="no progress"
    )
    assert text_of(browser, "#state") == "running"
    browser.save_screenshot(str(shots / "job-running.png"))
    browser.find_element(By.ID, "cancel").click()
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda d: d.refresh() or text_of(d, "#state") == "cancelled", message="not cancelled"
    )
    assert api(base, "GET", f"/v1/jobs/{job_id}")["state"] == "cancelled"
    browser.get(base + "/ui/functions/crawl")  # the run history lists it
    wait_text(browser, "#runs", job_id)


def test_a_dlq_entry_is_requeued(
    browser: Driver, local: tuple[ServeProcesses, str], shots: Path
) -> None:
    _, base = local
    job_id = api(base, "POST", "/v1/functions/explode/jobs", 7)["job_id"]
    browser.get(base + "/ui/dlq/explode")
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda d: d.refresh() or job_id in text_of(d, "#dlq"), message="not dead-lettered"
    )
    browser.find_element(By.CSS_SELECTOR, f"input[value='{job_id}']").click()
    browser.save_screenshot(str(shots / "dlq.png"))
    browser.find_element(By.ID, "requeue-selected").click()
    wait_text(browser, "#report", "1 requeued")
    assert "requeue of 1 selected" in text_of(browser, "#report")
    assert job_id in text_of(browser, "main")  # the report's sample links the job
    browser.save_screenshot(str(shots / "requeue-report.png"))
    # It ran again (attempts reset): it fails again and is dead once more, attempt 1.
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda d: api(base, "GET", f"/v1/jobs/{job_id}")["state"] == "dead"
    )


def test_a_post_without_its_csrf_token_is_refused(
    browser: Driver, local: tuple[ServeProcesses, str]
) -> None:
    _, base = local
    sign_in(browser, base)
    wait_text(browser, "h1", "Fleet")
    browser.get(base + "/ui/dlq/explode")
    before = len(browser.find_elements(By.CSS_SELECTOR, "#dlq input[type=checkbox]"))
    # A form without its token, as a forged request would send it (the browser's cookie
    # goes along: SameSite=Strict keeps it from other sites, the token from this one).
    browser.execute_script("document.querySelector('#dlq-actions input[name=csrf]').remove()")
    browser.find_element(By.ID, "purge-filter").click()
    wait_text(browser, "body", "missing or wrong CSRF token")
    browser.get(base + "/ui/dlq/explode")
    after = len(browser.find_elements(By.CSS_SELECTOR, "#dlq input[type=checkbox]"))
    assert after == before >= 1  # nothing purged


@pytest.fixture
def deploy_fleet(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[ServeProcesses, str]]:
    env = {"RUNTIME_HTTP__TOKEN": TOKEN, "RUNTIME_NAMESPACE": "consoledeploy",
           "RUNTIME_DEPLOY__SIGNING_KEY": KEY}  # fmt: skip
    fleet = ServeProcesses(tmp_path, redis_server.url, env)
    src = tmp_path / "src"
    src.mkdir()
    for greeting in ("hello, ", "hi, "):
        (src / "handlers.py").write_text(textwrap.dedent(DEPLOYED.format(greeting=greeting)))
        proc = subprocess.run(
            [sys.executable, "-m", "runtime.cli.main", "deploy", "src", "--no-wait", "--json",
             "--message", f"says {greeting.strip(', ')}", "--redis", redis_server.url],
            cwd=tmp_path, env=fleet.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    process = fleet.spawn()
    try:
        fleet.wait_ready(process)
        yield fleet, f"http://127.0.0.1:{fleet.ports[process.pid]}"
    finally:
        fleet.stop_all()


def test_a_deployment_is_rolled_back(
    browser: Driver, deploy_fleet: tuple[ServeProcesses, str], shots: Path
) -> None:
    fleet, base = deploy_fleet
    sign_in(browser, base)
    browser.get(base + "/ui/deployments")
    wait_text(browser, "tr[data-version='2']", "active")
    wait_text(browser, "#statuses td.loaded", "2")
    browser.save_screenshot(str(shots / "deployments.png"))
    browser.find_element(By.CSS_SELECTOR, "tr[data-version='1'] button.rollback").click()
    wait_text(browser, "#notice", "version 1 is active again (was 2)")
    assert "active" in text_of(browser, "tr[data-version='1']")
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda d: d.refresh() or text_of(d, "#statuses td.loaded") == "1",
        message=f"the runtime never loaded version 1\n{fleet.logs()}",
    )
    assert api(base, "POST", "/v1/functions/greet/invoke", "Ada") == "hello, Ada"
    browser.save_screenshot(str(shots / "rollback.png"))
