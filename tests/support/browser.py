"""Test helper: the system's headless Chromium driven by Selenium through the system chromedriver.

Nothing is downloaded: the browser and driver come from Debian's ``chromium`` and ``chromium-driver`` packages
(`.ci/run` installs them), and naming both paths keeps selenium-manager from fetching a browser of its own. When
they are missing the tests skip locally and FAIL under ``CI=true``, so CI cannot go green without a browser.

    with chromium(tmp_path) as driver:
        driver.get(url)
        console_errors(driver)  # the browser's console, errors and CSP violations included
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1200, 1000)  # CSS pixels; the screenshots in docs/ use the same width
# No background traffic, no first-run UI, no GPU in a container; a fresh profile every time.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--force-device-scale-factor=1",
    "--autoplay-policy=no-user-gesture-required",
)


def require_browser() -> None:
    """Skip locally, fail in CI (``CI=true``), when Chromium, its driver or Selenium is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    try:
        import selenium  # noqa: F401 - imported only to learn whether it is installed
    except ImportError:
        missing.append("the selenium package (test extra)")
    if not missing:
        return
    reason = f"browser tests need {', '.join(missing)}: apt-get install -y chromium chromium-driver"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: browser tests must not be skipped)")
    pytest.skip(reason)


@contextlib.contextmanager
def chromium(profile_dir: Path, window: tuple[int, int] = WINDOW) -> Iterator:
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={window[0]},{window[1]}")
    profile_dir.mkdir(parents=True, exist_ok=True)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile_dir, ignore_errors=True)


# Injected before any page script (Page.addScriptToEvaluateOnNewDocument): every CSP violation the page causes.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__cspViolations.push(e.effectiveDirective + ' ' + (e.blockedURI || 'inline')));
"""


def csp_violations(driver) -> list[str]:
    """Violations recorded by RECORD_CSP_VIOLATIONS plus those the console reported."""
    recorded = driver.execute_script("return window.__cspViolations || []")
    logged = [e["message"] for e in console_entries(driver) if "Content Security Policy" in e["message"]]
    return recorded + logged


def console_entries(driver) -> list[dict]:
    """The console messages since the last call (Chromium hands each one out once)."""
    return driver.get_log("browser")


def console_errors(driver) -> list[str]:
    return [entry["message"] for entry in console_entries(driver) if entry["level"] == "SEVERE"]
