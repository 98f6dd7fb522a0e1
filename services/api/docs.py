"""The API's documentation as INSA_API_DOCS exposes it: Swagger UI (/api/v1/docs), ReDoc
(/api/v1/redoc) and the schema (/api/v1/openapi.json).

The pages are FastAPI's own HTML, which loads Swagger UI and ReDoc from cdn.jsdelivr.net
(ReDoc its fonts from Google Fonts); nothing is served from this process but the HTML and
the schema. So the pages get a Content-Security-Policy of their own, naming those origins
and the hash of Swagger UI's one inline script, instead of the API's `default-src 'none'`.
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

CDN = "https://cdn.jsdelivr.net"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def page_policy(*pages: bytes) -> str:
    """What the pages load: the CDN's scripts and styles (ReDoc injects its styles inline,
    and runs its search in a blob: worker), Google's fonts, FastAPI's favicon; the schema
    and "try it out" from this origin. Still never framed."""
    hashes = sorted({"'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode()
                     + "'" for page in pages for script in _INLINE_SCRIPT.findall(page)})
    return "; ".join((
        "default-src 'none'", f"script-src {CDN} {' '.join(hashes)}".rstrip(),
        f"style-src {CDN} https://fonts.googleapis.com 'unsafe-inline'",
        "font-src https://fonts.gstatic.com data:",
        "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly",
        "connect-src 'self'", "worker-src blob:",
        "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'"))


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

    swagger = bytes(get_swagger_ui_html(openapi_url=schema_url,
                                        title=f"{app.title} - Swagger UI").body)
    redoc = bytes(get_redoc_html(openapi_url=schema_url, title=f"{app.title} - ReDoc").body)
    headers = {"Content-Security-Policy": page_policy(swagger, redoc)}

    def page(html: bytes) -> Callable[[], Awaitable[HTMLResponse]]:
        async def serve() -> HTMLResponse:
            return HTMLResponse(html, headers=headers)
        return serve

    app.add_api_route(schema_url, schema, include_in_schema=False)
    app.add_api_route(f"{prefix}/docs", page(swagger), include_in_schema=False)
    app.add_api_route(f"{prefix}/redoc", page(redoc), include_in_schema=False)
