"""Real Chromium for the web pages' tests: Debian's ``chromium`` and ``chromium-driver`` through selenium.

Every browser is headless, with a profile of its own (two profiles: two people), and is kept on
127.0.0.1: host names resolve to nothing but 127.0.0.1, every other address would go through a proxy
that does not exist, and Chromium's own background traffic (updates, safe browsing, translation,
metrics) is off. The performance log records every request the page made, so a test can prove it.
No Selenium Manager, nothing downloaded: the binaries are the ones apt installed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers.waiting import wait_for as until  # noqa: F401  (the browser tests import it from here)

INSTALL = "apt-get install -y chromium chromium-driver (.ci/run installs them)"
DIALOG_HOOK = """
window.__dialogs = [];
for (const name of ["alert", "confirm", "prompt", "print"]) {
  window[name] = function (message) { window.__dialogs.push(name + ": " + String(message)); return null; };
}
"""


def binaries() -> tuple[str, str]:
    """(chromium, chromedriver), or the test FAILS naming the packages: CI installs them, so missing is a bug."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
    if chromium is None or driver is None:
        pytest.fail(f"The browser tests need Debian's Chromium and its driver, missing here: {INSTALL}", pytrace=False)
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("The browser tests need selenium: pip install -e '.[test]'", pytrace=False)
    return chromium, driver


def launch(profile: Path, *, width: int = 1400, height: int = 1000) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}",
        f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check", "--password-store=basic",
        # the network: 127.0.0.1 and nothing else
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--metrics-recording-only",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,InterestFeedContentSuggestions",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    profile.mkdir(parents=True, exist_ok=True)
    service = Service(executable_path=driver, log_output=str(profile.parent / f"{profile.name}-chromedriver.log"))
    browser = webdriver.Chrome(service=service, options=options)
    browser.set_page_load_timeout(30)
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": DIALOG_HOOK})
    return browser


def requested_urls(browser: Any) -> list[str]:
    """Every URL the browser asked for since the last call (the performance log drains on read)."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def console_errors(browser: Any) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


class Shots:
    """Full-page screenshots, numbered in the order taken, into ``folder`` (a test artifact, never committed)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def __call__(self, browser: Any, name: str) -> Path:
        width = browser.execute_script("return window.innerWidth")
        height = browser.execute_script("return Math.min(document.documentElement.scrollHeight, 4000)")
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": max(height, 600), "deviceScaleFactor": 1, "mobile": False})
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        browser.save_screenshot(str(path))
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        self.taken.append(path)
        return path
