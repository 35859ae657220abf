"""Headless Chromium driven by Selenium through Debian's chromedriver (no browser download).

Collects what the page logs to the console and every network request it makes, so tests can
assert that a report is offline and error-free.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--allow-file-access-from-files")


def available() -> str | None:
    """Why a browser cannot run here, or None when it can."""
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists():
            return f"{path} missing: apt-get install {pkg} (make test installs it)"
    return None


@contextmanager
def chromium(width: int = 1400, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for a driver online
    profile = tempfile.mkdtemp(prefix="harmonycell-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def requests_made(driver, page_url: str) -> list[str]:
    """URLs the page asked for (DevTools performance log), besides the page itself and data: URLs;
    any http(s)/ws request at all counts too, whoever made it. The browser's own chrome:// UI
    (its new-tab page, loaded before ours) is not the page's."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") != "Network.requestWillBeSent":
            continue
        url, doc = msg["params"]["request"]["url"], msg["params"].get("documentURL", "")
        if url.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp") or (
                doc == page_url and url != page_url and not url.startswith("data:")):
            urls.append(url)
    return urls


def full_page_screenshot(driver, path: Path) -> Path:
    """The whole page, not only the window: resize the window to the document's height."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    driver.set_window_size(max(width, 1200), min(height + 120, 16000))
    driver.save_screenshot(str(path))
    return path
