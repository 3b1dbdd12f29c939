"""The live page in a real browser (Debian's Chromium, headless, driven by Selenium): it shows the alarms of the CSV
and the live counters, and fits a phone's screen. A screenshot of each is kept as a test artefact (path printed).

Chromium comes from the system (`apt-get install chromium chromium-driver`, as `.ci/run` does); without it the test
is skipped on a developer's machine and fails under CI (CI=true), where a skip would hide a missing install step.
"""

import io
import os
import shutil
import time

import pytest

from mambaout.monitor import Monitor, csv_episodes
from mambaout.monitor.watch import watch

BROWSER, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path):
    if not (os.path.exists(BROWSER) and DRIVER):
        message = "Chromium and chromedriver are needed: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    yield driver
    driver.quit()


def wait_until(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("the page did not get there in time")


def test_the_page_shows_the_alarms_of_the_csv_and_the_live_counters(line_run, tmp_path, browser):
    from selenium.webdriver.common.by import By

    video, run, _, _ = line_run
    monitor = Monitor(
        "line1", serve="127.0.0.1:0", evidence=str(tmp_path / "evidence"), clip_seconds=1, out=io.StringIO()
    )
    try:
        watch(str(video), str(run), csv=str(tmp_path / "s.csv"), quiet=True, hook=monitor)
        expected = csv_episodes(tmp_path / "s.csv")
        wait_until(lambda: monitor.evidence.written == len(expected))
        browser.set_window_size(1280, 1280)
        browser.get(f"http://127.0.0.1:{monitor.server.port}/")
        wait_until(lambda: browser.find_element(By.ID, "frames").text == "300")
        rows = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#alarm-rows tr td:nth-child(2)"))
        shown = sorted(
            (
                int(r.find_element(By.XPATH, "..").find_elements(By.TAG_NAME, "td")[1].text),
                int(r.find_element(By.XPATH, "..").find_elements(By.TAG_NAME, "td")[2].text),
            )
            for r in rows
        )
        counters = {k: browser.find_element(By.ID, k).text for k in ("alarms", "dropped", "skipped", "state")}
        frame_loaded = browser.execute_script("const i = document.getElementById('frame'); return i.naturalWidth")
        drawn = browser.execute_script(
            "const c = document.getElementById('timeline'); const d = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
            " for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n"
        )
        plays = browser.execute_script(
            "return document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42E01E\"')"
        )
        clip_links = browser.find_elements(By.CSS_SELECTOR, "#alarm-rows a")
        desktop = tmp_path / "page.png"
        browser.save_screenshot(str(desktop))
        browser.set_window_size(390, 844)  # a phone
        time.sleep(0.5)
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        phone = tmp_path / "page-phone.png"
        browser.save_screenshot(str(phone))
        print(f"screenshots: {desktop} {phone}")
    finally:
        monitor.close()
    assert shown == expected and len(expected) >= 2
    assert counters == dict(alarms=str(len(expected)), dropped="0", skipped="0", state="ended")
    assert frame_loaded >= 192 and drawn > 1000  # the frame is shown and the timeline drawn
    assert len(clip_links) == len(expected) and all(a.get_attribute("href").endswith(".mp4") for a in clip_links)
    assert plays in ("maybe", "probably") or monitor.evidence.ext == "webm"
    assert overflow <= 0  # nothing sticks out sideways on a phone
