"""Take docs/monitor-page.png: the live page in headless Chromium (Selenium), as an operator sees it mid-stream.

`watch` streams the built-in line's first test video at its own rate (25 frames/s) through a detector with the
patch branch, with the page and evidence clips on; the stream is held for a moment at the local-defect frame where
the patch branch's map is highest (an alarm open, earlier alarms of both branches in the list), the page catches up
with it, and Chromium saves the window.

    mambaout anomaly generate --output line_data
    mambaout anomaly train --data line_data --mixer ssm --output runs/line_ssm
    python docs/monitor_screenshot.py --run runs/line_ssm --data line_data --output docs/monitor-page.png

Needs the `serve` extra, Chromium and chromedriver (`apt-get install chromium chromium-driver`).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from mambaout.anomaly.detector import load_detector
from mambaout.monitor import Monitor
from mambaout.monitor.alarms import episodes
from mambaout.monitor.watch import watch
from mambaout.video import load_dataset, open_video


def held_frame(run: str, data: str) -> tuple[str, int]:
    """(the first test video, the frame to hold): in the first local-defect alarm after alarms of both branches, the
    frame with the highest patch score."""
    detector, config = load_detector(run)
    video = load_dataset(data).test[0]
    raw = detector.branch_scores(list(open_video(video.path, size=config["image_size"])))
    z_t, z_p = detector.standardised(raw["temporal"], raw["patch"])
    threshold = float(detector.alarm_threshold)
    alarm = np.maximum(z_t, z_p) > threshold
    seen = set()
    for start, end in episodes(range(len(alarm)), alarm):
        frames = np.arange(start, end + 1)
        local = frames[(video.kinds[frames] == "local") & (z_p[frames] > threshold)]
        if len(local) and seen >= {"patch", "temporal"}:
            return str(video.path), int(local[np.argmax(z_p[local])])
        seen |= {"patch" if z_p[f] > threshold else "temporal" for f in frames}
    raise SystemExit("no local-defect alarm after alarms of both branches in the first test video")


class Held(Monitor):
    """The monitor, the stream paused after frame `hold` until `release` is set."""

    def __init__(self, hold: int, **kwargs):
        super().__init__(**kwargs)
        self.hold, self.held, self.release = hold, threading.Event(), threading.Event()

    def frame(self, record) -> None:
        super().frame(record)
        if record.frame == self.hold:
            self.held.set()
            self.release.wait()


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}")
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder of a detector with the patch branch")
    parser.add_argument("--data", required=True, help="the built-in line (mambaout anomaly generate)")
    parser.add_argument("--output", default="docs/monitor-page.png")
    parser.add_argument("--width", type=int, default=1200)
    args = parser.parse_args()
    source, hold = held_frame(args.run, args.data)
    evidence = tempfile.mkdtemp(prefix="evidence-")
    monitor = Held(hold, camera="line1", serve="127.0.0.1:0", evidence=evidence, clip_seconds=1, out=io.StringIO())
    stream = threading.Thread(target=watch, args=(source, args.run), kwargs=dict(rate=25, quiet=True, hook=monitor))
    driver = browser()
    try:
        stream.start()
        while monitor.server is None:
            time.sleep(0.05)
        driver.set_window_size(args.width, 1000)
        driver.get(f"http://127.0.0.1:{monitor.server.port}/")
        monitor.held.wait()
        shown = (  # the held frame's number and image, on the page
            "return document.getElementById('frame-no').textContent === arguments[0] && "
            "document.getElementById('frame').src.endsWith('f=' + arguments[0]) && "
            "document.getElementById('frame').complete"
        )
        deadline = time.monotonic() + 10
        while not driver.execute_script(shown, str(hold)):
            if time.monotonic() > deadline:
                raise SystemExit("the page did not show the held frame")
            time.sleep(0.05)
        for _ in range(3):  # the whole page in the window (the window's own chrome takes some of its height)
            short = driver.execute_script("return document.documentElement.scrollHeight - window.innerHeight")
            if short <= 0:
                break
            driver.set_window_size(args.width, driver.get_window_size()["height"] + short)
        time.sleep(0.3)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.output)
        print(f"{args.output}: frame {hold} of {source}")
    finally:
        monitor.release.set()
        stream.join()
        monitor.close()
        driver.quit()


if __name__ == "__main__":
    main()
