"""Fixtures the system tests share."""

from __future__ import annotations

import pytest

from tests.support.browser import RECORD_CSP_VIOLATIONS, chromium, require_browser


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    """Debian's headless Chromium, one per test module, recording every CSP violation of the pages it opens."""
    require_browser()
    with chromium(tmp_path_factory.mktemp("chromium")) as browser:
        browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_CSP_VIOLATIONS})
        yield browser
