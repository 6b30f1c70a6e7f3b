"""The exploration page: ``GET /`` and its static files under ``/static/``, with the headers that keep it safe.

The page is plain HTML, CSS and ES modules from ``service/api/static/`` (no build step, nothing fetched from elsewhere).
It is public, like ``/healthz``: it holds no data. Its API calls carry the API key the user types into it, so
they follow the API's auth rules (docs/page.md).

Every page and static response carries a Content-Security-Policy that allows scripts, styles and fetches from
this origin only, no inline script or ``eval``, audio from ``blob:`` (the picked file plays from an object URL)
and no framing: an injected ``<script>`` or ``onclick=`` does nothing, and the key typed into the page can only
go back to this service. With TAGGRAM_CATALOG_AUDIO_URL set, ``media-src`` (and nothing else) also allows that
template's origin: the catalog map plays catalog audio from there (docs/catalog.md); the API key never goes there
(``connect-src`` stays this service alone, and a media request carries no Authorization header).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from service.config import audio_origin

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/static"
PAGE_PATH = "/"

MEDIA_SOURCES = "'self' blob:"  # the picked file plays from an object URL


def content_security_policy(media_origin: str | None = None) -> str:
    """The page's policy; ``media_origin`` (the catalog audio template's, ``config.audio_origin``) is added to
    ``media-src`` alone."""
    media = MEDIA_SOURCES if media_origin is None else f"{MEDIA_SOURCES} {media_origin}"
    return "; ".join(
        (
            "default-src 'none'",  # anything not listed below is refused (fonts, frames, workers, manifests)
            "script-src 'self'",  # no inline script, no eval
            "style-src 'self'",  # no <style> blocks or style="" attributes (CSSOM property writes stay allowed)
            "img-src 'self' data:",  # data: for the empty favicon that stops a /favicon.ico request
            f"media-src {media}",
            "connect-src 'self'",  # fetch() only to this service: the API key cannot be sent elsewhere
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",  # the page submits no form, so a key field can never end up in a URL
            "frame-ancestors 'none'",
        )
    )


CONTENT_SECURITY_POLICY = content_security_policy()  # without catalog audio; also the API description pages'
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",  # frame-ancestors for browsers that predate it
    "cross-origin-opener-policy": "same-origin",
    # Revalidate every load (the ETag makes that a 304): a new service version never runs with an old script.
    "cache-control": "no-cache",
}
SECURITY_HEADERS_BYTES = {name.encode() for name in SECURITY_HEADERS}

# Module scripts are refused unless served with a JavaScript type, and nosniff forbids guessing: do not depend on
# the host's /etc/mime.types for the two types the page needs.
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/css", ".css")


def is_page_path(path: str) -> bool:
    return path == PAGE_PATH or path.startswith(STATIC_PREFIX + "/")


def page_security_headers(catalog_audio_url: str | None) -> dict[str, str]:
    """``SECURITY_HEADERS``, with the catalog audio template's origin in ``media-src`` when one is configured."""
    if catalog_audio_url is None:
        return SECURITY_HEADERS
    return {**SECURITY_HEADERS, "content-security-policy": content_security_policy(audio_origin(catalog_audio_url))}


class PageHeadersMiddleware:
    """Adds the page's security headers to the page's and static files' responses, errors included (pure ASGI)."""

    def __init__(self, app, headers: dict[str, str] = SECURITY_HEADERS) -> None:
        self.app = app
        self.headers = [(name.encode(), value.encode()) for name, value in headers.items()]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not is_page_path(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in SECURITY_HEADERS_BYTES]
                message = {**message, "headers": [*kept, *self.headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_page(app: FastAPI, catalog_audio_url: str | None = None) -> None:
    """Serve the page at ``/`` and its files at ``/static/``; both public, both with the page's security headers
    (``page_security_headers``: TAGGRAM_CATALOG_AUDIO_URL's origin allowed as media when set)."""

    @app.get(PAGE_PATH, include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")

    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(PageHeadersMiddleware, headers=page_security_headers(catalog_audio_url))
