"""The audit report in a real headless Chromium (selenium + the system chromedriver).

The page a run wrote (tests/report_fixture.py: real job, hostile captions) is opened from disk
with every network request logged: each section must be there, every <img> must have loaded,
the browser console must hold no SEVERE entry, no script may have run (no alert, no <script>
or event-handler element in the DOM), and no request may leave file:// / data:. A full-page
screenshot is saved to the test's tmp dir (its path is printed and recorded as the
`screenshot` property; with TEST_ARTIFACTS_DIR set it is copied there too: not a SHARDGUARD_*
name, which pipelines.config would read as a config key).

The browser comes from infra/install_browser.sh (Debian chromium + chromium-driver; `make test`
runs it). The test skips, saying why, only when the browser is missing and cannot be installed.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from audit.report.run_report import SECTIONS
from tests.conftest import REPO
from tests.report_fixture import XSS_CAPTION, audited_output

pytestmark = pytest.mark.beam  # runs Beam jobs (tests/conftest.py)

INSTALL = REPO / "infra" / "install_browser.sh"
MAX_SCREENSHOT_HEIGHT = 20000


def browser_paths() -> tuple[str, str]:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        proc = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=900)
        if not (shutil.which("chromium") and shutil.which("chromedriver")):
            pytest.skip(f"headless Chromium is not installed and {INSTALL.name} could not install it "
                        f"(needs root and apt-get): {proc.stderr.strip()[-300:]}")
    return shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver  # the test extra; a missing one is an error, not a skip
    from selenium.webdriver.chrome.service import Service
    chromium, chromedriver = browser_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--host-resolver-rules=MAP * ~NOTFOUND"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def opened(browser, demo_sample, tmp_path_factory):
    out, summary = audited_output(tmp_path_factory)
    browser.get(Path(summary.report).as_uri())
    return browser


def assert_inert_and_local(driver) -> None:
    """No script ran or can run (no alert, no script-like element, no on* attribute), the console
    holds no SEVERE entry, and every request stayed on file:// or data:."""
    from selenium.common.exceptions import NoAlertPresentException
    assert driver.execute_script("return document.querySelectorAll('script, iframe, object, embed').length;") == 0
    handlers = driver.execute_script(
        "return Array.from(document.querySelectorAll('*')).flatMap(e => Array.from(e.attributes))"
        ".filter(a => a.name.startsWith('on')).map(a => a.name);")
    assert handlers == []
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    requested = [json.loads(e["message"])["message"]["params"]["request"]["url"]
                 for e in driver.get_log("performance")
                 if json.loads(e["message"])["message"]["method"] == "Network.requestWillBeSent"]
    assert requested and all(u.startswith(("file:", "data:")) for u in requested), \
        [u for u in requested if not u.startswith(("file:", "data:"))][:5]


def test_report_renders_in_chromium_without_errors(opened, tmp_path, record_property):
    from selenium.webdriver.common.by import By
    driver = opened
    for sid, _ in SECTIONS:
        section = driver.find_element(By.ID, sid)
        assert section.tag_name == "section" and section.find_element(By.TAG_NAME, "h2").is_displayed(), sid
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]);")
    assert len(images) > 10
    assert all(done and w > 0 and h > 0 for done, w, h in images), [i for i in images if not i[1]][:5]
    # the hostile caption is text on the page, and nothing of it became active content
    assert XSS_CAPTION in driver.find_element(By.ID, "duplicates").text
    assert_inert_and_local(driver)
    height = driver.execute_script("return document.documentElement.scrollHeight;")
    driver.set_window_size(1280, min(height + 100, MAX_SCREENSHOT_HEIGHT))
    shot = tmp_path / "report.png"
    assert driver.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"report screenshot: {shot}")
    record_property("screenshot", str(shot))
    artifacts = os.environ.get("TEST_ARTIFACTS_DIR")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "report_browser.png")


def test_attribution_page_renders_in_chromium_without_errors(browser, demo_sample, tmp_path_factory, tmp_path):
    """`shardguard attribution` against the report fixture's audit (a copy: the fixture stays as
    the report tests expect it), with hostile prompts and file names: every query and its top-k
    training images load, the hostile strings are text, nothing is active or remote."""
    import io

    from PIL import Image
    from selenium.webdriver.common.by import By

    from pipelines.cli import main
    from tests.demo_images import demo_images
    out, _ = audited_output(tmp_path_factory)
    against = tmp_path / "audit"
    shutil.copytree(out, against)
    gen = tmp_path / "gen"
    gen.mkdir()
    hostile_name = '"><img src=x onerror=alert(3)>'
    for i, (_, data, _, _) in enumerate(demo_images(3)):
        Image.open(io.BytesIO(data)).convert("RGB").resize((64, 64)).save(gen / f"{hostile_name}{i}.png")
        (gen / f"{hostile_name}{i}.txt").write_text(XSS_CAPTION)
    (gen / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    assert main(["attribution", "--generated", str(gen), "--against", str(against), "--top-k", "4"]) == 0
    browser.get((against / "reports" / "attribution.html").as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]);")
    assert len(images) == 3 * (1 + 4)  # each query and its 4 training images; the broken one has none
    assert all(done and w > 0 and h > 0 for done, w, h in images), images
    body = browser.find_element(By.TAG_NAME, "body").text
    assert XSS_CAPTION in body and f"{hostile_name}0.png" in body and "broken.png" in body
    assert_inert_and_local(browser)
    shot = tmp_path / "attribution.png"
    assert browser.save_screenshot(str(shot))
    print(f"attribution page screenshot: {shot}")
