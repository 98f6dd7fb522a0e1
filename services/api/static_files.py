"""The files the API's pages load, served by the API itself at /static: oil fields are often
air-gapped, so no page may load a script, style, font or image from the internet.

services/api/static/vendor/ holds third-party releases, one directory per package and
version (its README says where each file came from). A new version is a new directory, so
a URL under /static/vendor/ names one file for ever and browsers may keep it a year; the
rest of /static is revalidated (ETag) on every use.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
MOUNT = "/static"
VENDOR_URL = f"{MOUNT}/vendor"
# The vendored packages' directories (package-version), for pages to name their files by
# vendor_url(); README.md beside them says where each came from.
SWAGGER_UI = "swagger-ui-dist-5.36.0"
REDOC = "redoc-2.5.4"
HTMX = "htmx.org-2.0.11"
UPLOT = "uplot-1.6.32"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

# Fixed here, not guessed: mimetypes reads the machine's /etc/mime.types, and browsers
# refuse a script or a stylesheet of the wrong type (the API sends nosniff). Text types
# get "; charset=utf-8" from Starlette.
MEDIA_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain",
    "": "text/plain",  # LICENSE, NOTICE: the licences travel with the files they cover
}


def vendor_url(package_dir: str, file: str) -> str:
    """The URL of a vendored file, e.g. vendor_url(HTMX, "htmx.min.js");
    refuses one that is not there, so a page never links a file that would answer 404."""
    if not (VENDOR_DIR / package_dir / file).is_file():
        raise FileNotFoundError(f"{VENDOR_DIR / package_dir / file} is not vendored")
    return f"{VENDOR_URL}/{package_dir}/{file}"


class PlatformStatic(StaticFiles):
    """StaticFiles with a fixed content type per extension (others: 404) and the cache
    policy above. Its answers keep the API's other security headers (nosniff, no framing,
    a CSP of `default-src 'none'`, which a script or a stylesheet does not need)."""

    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result,
                      scope: Scope, status_code: int = 200) -> Response:
        path = Path(full_path)
        media_type = MEDIA_TYPES.get(path.suffix)
        if media_type is None:
            raise HTTPException(status_code=404)  # not a kind of file any page loads
        vendored = path.is_relative_to(VENDOR_DIR.resolve())
        response = FileResponse(path, status_code=status_code, stat_result=stat_result,
                                media_type=media_type,
                                headers={"Cache-Control": IMMUTABLE if vendored else REVALIDATE})
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return NotModifiedResponse(response.headers)
        return response


def install_static(app: FastAPI) -> None:
    """Serves services/api/static/ at /static, whatever INSA_API_DOCS says: the operator
    console loads its libraries from there too. A mount of its own under /static (e.g.
    /static/console) must be added before this one, which answers all of /static."""
    app.mount(MOUNT, PlatformStatic(directory=STATIC_DIR), name="static")
