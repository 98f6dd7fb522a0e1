"""The API's documentation as INSA_API_DOCS exposes it: Swagger UI (/api/v1/docs), ReDoc
(/api/v1/redoc) and the schema (/api/v1/openapi.json).

The pages are FastAPI's own HTML, pointed at Swagger UI and ReDoc as vendored in
services/api/static/vendor/ and served by this process (services/api/static_files.py):
oil fields are often air-gapped, so the pages load nothing from the internet, not even
fonts (ReDoc's Google Fonts are off), a favicon or ReDoc's logo (the vendor README says
how its bundle was changed for that). Their Content-Security-Policy says so:
'self' only, plus the hash of Swagger UI's one inline script, inline styles (ReDoc injects
its own) and a blob: worker (ReDoc's search), instead of the API's `default-src 'none'`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from services.api.deps import Caller
from services.api.settings import DocsExposure
from services.api.static_files import REDOC, SWAGGER_UI, vendor_url

_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def page_policy(*pages: bytes) -> str:
    """Scripts, styles and images from this origin only (images also as data: URLs, which
    Swagger UI's stylesheet uses for its icons); the schema and "try it out" from this
    origin. Inline: Swagger UI's one script by its hash, ReDoc's injected styles. Still
    never framed."""
    hashes = sorted({"'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode()
                     + "'" for page in pages for script in _INLINE_SCRIPT.findall(page)})
    return "; ".join((
        "default-src 'none'", " ".join(("script-src 'self'", *hashes)),
        "style-src 'self' 'unsafe-inline'", "img-src 'self' data:",
        "connect-src 'self'", "worker-src blob:",
        "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'"))


def swagger_page(title: str, schema_url: str) -> bytes:
    return bytes(get_swagger_ui_html(
        openapi_url=schema_url, title=f"{title} - Swagger UI",
        swagger_js_url=vendor_url(SWAGGER_UI, "swagger-ui-bundle.js"),
        swagger_css_url=vendor_url(SWAGGER_UI, "swagger-ui.css"),
        swagger_favicon_url=vendor_url(SWAGGER_UI, "favicon-32x32.png"),
        # No online validator: Swagger UI would send the schema's URL to swagger.io.
        swagger_ui_parameters={"validatorUrl": None}).body)


def redoc_page(title: str, schema_url: str) -> bytes:
    return bytes(get_redoc_html(
        openapi_url=schema_url, title=f"{title} - ReDoc",
        redoc_js_url=vendor_url(REDOC, "redoc.standalone.offline.js"),
        redoc_favicon_url=vendor_url(SWAGGER_UI, "favicon-32x32.png"),
        with_google_fonts=False).body)


def install_docs(app: FastAPI, exposure: DocsExposure, prefix: str) -> None:
    """Off: none of the three exists (404). Authenticated: the schema, for any valid
    credential (tooling: code generators, schemathesis); no pages. Public: all three."""
    schema_url = f"{prefix}/openapi.json"
    if exposure == "off":
        return
    if exposure == "authenticated":
        async def authenticated_schema(_: Caller) -> JSONResponse:
            return JSONResponse(app.openapi())

        app.add_api_route(schema_url, authenticated_schema, include_in_schema=False)
        return

    async def schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    swagger, redoc = swagger_page(app.title, schema_url), redoc_page(app.title, schema_url)
    headers = {"Content-Security-Policy": page_policy(swagger, redoc)}

    def page(html: bytes) -> Callable[[], Awaitable[HTMLResponse]]:
        async def serve() -> HTMLResponse:
            return HTMLResponse(html, headers=headers)
        return serve

    app.add_api_route(schema_url, schema, include_in_schema=False)
    app.add_api_route(f"{prefix}/docs", page(swagger), include_in_schema=False)
    app.add_api_route(f"{prefix}/redoc", page(redoc), include_in_schema=False)
