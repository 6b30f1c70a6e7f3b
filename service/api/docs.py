"""The API description pages, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served from this service alone.

FastAPI's own pages load Swagger UI and ReDoc from a CDN and start them with an inline script: they do not work
offline or behind an egress filter, and they cannot run under the page's Content-Security-Policy. Here the assets
come from a pinned PyPI package (``fastapi-offline``, which carries ``swagger-ui-bundle.js``, ``swagger-ui.css`` and
``redoc.standalone.js``), are served under ``ASSETS_PREFIX``, and each page is started by a script file of ours
(``docs_static/``), under the page's CSP (service/api/page.py): scripts, styles and fetches from this origin only.
ReDoc alone inserts ``<style>`` elements (styled-components): its page adds a fresh per-response nonce to
``style-src`` and hands it to ReDoc's ``nonce`` option, plus the hashes of two fixed styles it inserts before that
option applies; no other source is added. ReDoc's search runs in a worker made from a ``blob:`` URL, which the
policy forbids: it is turned off (Swagger UI's filter and the browser's find remain).

Public like the page and ``/openapi.json`` (the description holds no data); "Try it out" sends the key the user
enters with Swagger UI's Authorize button.
"""

from __future__ import annotations

import functools
import html
import secrets
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response

from service.api.page import SECURITY_HEADERS

SWAGGER_PATH = "/docs"
REDOC_PATH = "/redoc"
ASSETS_PREFIX = "/docs-assets"
VENDOR_DIR = Path(str(files("fastapi_offline") / "static"))  # fastapi-offline's copies of the vendor bundles
OWN_DIR = Path(__file__).parent / "docs_static"
# Every file the pages may load, by the name it is served under: nothing else of either folder is reachable.
ASSETS = {
    "swagger-ui-bundle.js": VENDOR_DIR / "swagger-ui-bundle.js",
    "swagger-ui.css": VENDOR_DIR / "swagger-ui.css",
    "redoc.standalone.js": VENDOR_DIR / "redoc.standalone.js",
    "favicon.png": VENDOR_DIR / "favicon.png",
    "swagger-init.js": OWN_DIR / "swagger-init.js",
    "redoc-init.js": OWN_DIR / "redoc-init.js",
    "docs.css": OWN_DIR / "docs.css",
}
NONCE_BYTES = 16  # 128 bits, CSP's recommendation for a nonce
# ReDoc's sidebar footer shows its vendor's logo from a CDN, and no option turns that off: the bundle is served with
# that one URL pointing at an empty inline SVG instead (img-src allows data:), so the page requests nothing elsewhere.
REWRITES = {
    "redoc.standalone.js": (
        "https://cdn.redoc.ly/redoc/logo-mini.svg",
        "data:image/svg+xml,%3Csvg xmlns=%22http://www.w3.org/2000/svg%22/%3E",
    )
}


# Two <style> elements the ReDoc bundle inserts as it loads, before its nonce option applies (one empty, one with
# its scrollbar rules): allowed by the hash of their exact text. A new ReDoc release with other styles shows up as a
# CSP violation in tests/system/test_docs.py, which prints the hashes the browser computed.
REDOC_STYLE_HASHES = (
    "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='",
    "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc='",
)


def with_style_nonce(policy: str, nonce: str) -> str:
    """``policy`` with ``'nonce-<nonce>'`` and ``REDOC_STYLE_HASHES`` added to its ``style-src`` directive, every
    other directive unchanged."""
    directives = []
    for directive in policy.split("; "):
        if directive.split(" ", 1)[0] == "style-src":
            directive = " ".join((directive, f"'nonce-{nonce}'", *REDOC_STYLE_HASHES))
        directives.append(directive)
    return "; ".join(directives)


@functools.cache
def rewritten(name: str) -> bytes:
    """The asset ``name`` with its ``REWRITES`` applied; the URL must be there (a new vendor release is noticed)."""
    text = ASSETS[name].read_text(encoding="utf-8")
    old, new = REWRITES[name]
    if old not in text:
        raise RuntimeError(f"{ASSETS[name]} no longer holds {old}: review REWRITES in {__file__}")
    return text.replace(old, new).encode("utf-8")


def page_html(title: str, openapi_url: str, init_script: str, body: str, nonce: str = "") -> str:
    data = f'data-openapi-url="{html.escape(openapi_url)}"' + (f' data-nonce="{nonce}"' if nonce else "")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="icon" type="image/png" href="{ASSETS_PREFIX}/favicon.png">
<link rel="stylesheet" href="{ASSETS_PREFIX}/docs.css">
{body}
<script src="{ASSETS_PREFIX}/{init_script}" {data} defer></script>
</head>
<body><div id="api-docs"></div></body>
</html>
"""


def swagger_page(title: str, openapi_url: str) -> HTMLResponse:
    body = (
        f'<link rel="stylesheet" href="{ASSETS_PREFIX}/swagger-ui.css">\n'
        f'<script src="{ASSETS_PREFIX}/swagger-ui-bundle.js" defer></script>'
    )
    return HTMLResponse(
        page_html(f"{title} - Swagger UI", openapi_url, "swagger-init.js", body), headers=SECURITY_HEADERS
    )


def redoc_page(title: str, openapi_url: str) -> HTMLResponse:
    nonce = secrets.token_urlsafe(NONCE_BYTES)
    body = f'<script src="{ASSETS_PREFIX}/redoc.standalone.js" defer></script>'
    headers = {
        **SECURITY_HEADERS,
        "content-security-policy": with_style_nonce(SECURITY_HEADERS["content-security-policy"], nonce),
    }
    return HTMLResponse(page_html(f"{title} - ReDoc", openapi_url, "redoc-init.js", body, nonce), headers=headers)


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs``, ``/redoc`` and their assets offline, on the app itself (public routes, like the page); the app
    must be created with ``docs_url=None, redoc_url=None``."""
    title, openapi_url = app.title, app.openapi_url or "/openapi.json"

    @app.get(SWAGGER_PATH, include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return swagger_page(title, openapi_url)

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return redoc_page(title, openapi_url)

    @app.get(ASSETS_PREFIX + "/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        path = ASSETS.get(name)
        if path is None:
            raise HTTPException(404, f"no docs asset {name!r}")
        if name in REWRITES:
            return Response(rewritten(name), media_type="text/javascript", headers=SECURITY_HEADERS)
        return FileResponse(path, headers=SECURITY_HEADERS)
