"""A real headless Chromium for tests (fixture ``chromium``), driven by Selenium.

Chromium and its driver come from Debian (``apt-get install chromium chromium-driver``; ``make
test`` installs them via scripts/test-deps.sh); without them the tests that use it fail, never
skip. The browser logs its console and its network requests (:func:`requests`).
"""

from __future__ import annotations

import json
import shutil

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver"


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium (Selenium), logging console messages and network requests."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: install them with `{INSTALL}` (make test does)", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield browser
    finally:
        browser.quit()


def requests(browser) -> list[tuple[str, str]]:
    """(method, url) of every request the page made since the last call."""
    made = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            made.append((message["params"]["request"]["method"], message["params"]["request"]["url"]))
    return made


def is_local(url: str) -> bool:
    return url.split("/")[2].startswith("127.0.0.1:")


