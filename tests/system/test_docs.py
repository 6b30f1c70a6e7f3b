"""/docs (Swagger UI) and /redoc (ReDoc) work offline: every asset from the service, under the page's strict CSP.

service/api/docs.py serves them from a pinned package (fastapi-offline) instead of a CDN; a real Chromium loads
both pages, they render the API, request nothing from another origin, and break no CSP rule.
"""

from __future__ import annotations

import httpx
import pytest

from service.api.docs import ASSETS, ASSETS_PREFIX, REDOC_STYLE_HASHES, with_style_nonce
from service.api.page import CONTENT_SECURITY_POLICY
from tests.support.browser import csp_violations
from tests.support.live_server import live_server, server_settings

RENDER_TIMEOUT_SECONDS = 30
API_KEY = "docs-test-key"
# What each page shows once it has fetched /openapi.json and rendered it.
RENDERED = {
    "/docs": "return document.querySelectorAll('.opblock').length",
    "/redoc": "return document.querySelectorAll('[data-section-id^=\"operation\"]').length",
}
ENDPOINTS = 3  # at least the audio endpoints: /taggram, /embed, /suggest-subgenres


@pytest.fixture(scope="module")
def server(models_dir):
    with live_server(server_settings(models_dir, api_key=API_KEY)) as live:
        yield live


def test_a_style_nonce_is_added_to_style_src_only():
    policy = with_style_nonce(CONTENT_SECURITY_POLICY, "abc")
    assert f"style-src 'self' 'nonce-abc' {' '.join(REDOC_STYLE_HASHES)};" in policy
    assert policy.replace(" 'nonce-abc' " + " ".join(REDOC_STYLE_HASHES), "") == CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_are_public_and_as_strict_as_the_page(server, page):
    response = httpx.get(server.url + page)  # no API key: public, like /openapi.json
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    if page == "/redoc":  # ReDoc's <style> elements: one fresh nonce per response, nothing else added
        nonce = policy.split("'nonce-", 1)[1].split("'", 1)[0]
        assert policy == with_style_nonce(CONTENT_SECURITY_POLICY, nonce) and f'data-nonce="{nonce}"' in response.text
        assert nonce not in httpx.get(server.url + page).headers["content-security-policy"]
    else:
        assert policy == CONTENT_SECURITY_POLICY
    assert "cdn" not in response.text.lower() and "https://" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"


def test_only_the_listed_assets_are_served(server):
    for name in ASSETS:
        assert httpx.get(f"{server.url}{ASSETS_PREFIX}/{name}").status_code == 200, name
    for name in ("core.py", "..%2Fdocs.py", "__init__.py"):
        assert httpx.get(f"{server.url}{ASSETS_PREFIX}/{name}").status_code == 404, name


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_render_the_api_in_a_browser_with_nothing_from_elsewhere_and_no_csp_violation(driver, server, page):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(server.url + page)
    WebDriverWait(driver, RENDER_TIMEOUT_SECONDS).until(lambda d: d.execute_script(RENDERED[page]) >= ENDPOINTS)
    requested = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert requested and all(url.startswith(server.url) for url in requested), requested
    violations = csp_violations(driver)
    assert violations == [], "\n".join(violations)
