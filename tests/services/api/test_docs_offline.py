"""The docs pages work without internet: every script, stylesheet and image they name, and
everything those stylesheets name, is served by the API itself (services/api/static), with
the right content type; the pages' policy allows this origin only. The vendored files are
the ones services/api/static/vendor/README.md lists, byte for byte.
(tests/console/test_docs_pages.py renders the same pages in a real browser.)"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import httpx
import pytest

from services.api.static_files import HTMX, IMMUTABLE, VENDOR_DIR
from tests.fixtures.api import Api
from tests.utils.raw_http import Peer, request

ABSOLUTE_URL = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""")
# What a page loads from its HTML: scripts, stylesheets, icons (not <a> links).
LOADED = re.compile(r"""<(?:script|link|img)\b[^>]*?\b(?:src|href)="([^"]+)\"""")
CSS_REFERENCE = re.compile(r"""url\(\s*['"]?(?!data:)([^'")\s]+)""")  # all but data: URLs
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".png": "image/png"}
README_ROW = re.compile(r"^\| `([^`]+)` \| [^|]+ \| (\d+) \| `([0-9a-f]{64})` \|$", re.MULTILINE)


def directives(policy: str) -> dict[str, list[str]]:
    return {name: values for name, *values in (part.split() for part in policy.split(";"))}


async def test_docs_pages_load_only_what_the_api_serves(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as anonymous:
        for page in ("/api/v1/docs", "/api/v1/redoc"):
            answer = await anonymous.get(page)
            assert answer.status_code == 200
            html = answer.text
            # Nothing named by an address of its own: no other origin can be asked for.
            assert ABSOLUTE_URL.findall(html) == [], page
            loaded = LOADED.findall(html)
            assert len(loaded) >= 2, page  # the bundle, the favicon (and Swagger UI's css)
            for url in loaded:
                assert url.startswith("/static/vendor/"), url
                await assert_served(anonymous, url)
            policy = directives(answer.headers["content-security-policy"])
            assert policy["default-src"] == ["'none'"]
            for name, values in policy.items():
                # 'self', keywords and hashes, data: images and the blob: worker only
                assert all(v.startswith("'") or v in ("data:", "blob:") for v in values), name
            assert policy["script-src"][0] == "'self'"
            assert policy["connect-src"] == ["'self'"]
            assert policy["frame-ancestors"] == ["'none'"]


async def assert_served(client: httpx.AsyncClient, url: str) -> None:
    """`url` answers 200 with its type and a year's cache; a stylesheet's own references
    are data: URLs or files served here too."""
    answer = await client.get(url)
    assert answer.status_code == 200, url
    suffix = url[url.rindex("."):]
    assert answer.headers["content-type"] == MEDIA_TYPES[suffix], url
    assert answer.headers["cache-control"] == IMMUTABLE
    assert answer.headers["x-content-type-options"] == "nosniff"
    if suffix == ".css":
        for reference in CSS_REFERENCE.findall(answer.text):
            assert not ABSOLUTE_URL.match(reference), f"{url} loads {reference}"
            await assert_served(client, httpx.URL(url).join(reference).path)


@pytest.mark.parametrize(("api_env", "api_overrides"), [
    ("production", {"metrics_token": "a-scrape-token"}),
    ("production", {"metrics_token": "a-scrape-token", "docs": "authenticated"}),
], ids=["docs-off", "docs-authenticated"])
async def test_static_files_are_served_whatever_the_docs_exposure(
        api: Api, api_overrides: dict[str, Any]) -> None:
    htmx = f"/static/vendor/{HTMX}/htmx.min.js"
    async with httpx.AsyncClient(base_url=api.url) as anonymous:
        # The pages stay as INSA_API_DOCS says (tests/services/api/test_hardening.py) ...
        assert [(await anonymous.get(f"/api/v1/{page}")).status_code
                for page in ("docs", "redoc")] == [404, 404]
        # ... while the console's libraries are there.
        answer = await anonymous.get(htmx)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/javascript; charset=utf-8"
        assert answer.content == (VENDOR_DIR / HTMX / "htmx.min.js").read_bytes()
        again = await anonymous.get(htmx, headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304 and again.headers["cache-control"] == IMMUTABLE
        # Only files of a kind a page loads, only from the static directory, only read.
        for refused in ("/static/vendor/README.md", "/static/vendor", "/static/nothing.js",
                        "/static/%2e%2e/app.py", "/static/vendor/..%2f..%2fstatic_files.py"):
            answer = await anonymous.get(refused)
            assert answer.status_code == 404, refused
            assert answer.headers["cache-control"] == "no-store"
        assert (await anonymous.post(htmx)).status_code == 405
    peer = await Peer.open(api.url)  # as sent: httpx would resolve the dots itself
    await peer.send(request("GET", "/static/vendor/../../static_files.py"))
    assert (await peer.answer()).status == 404
    peer.close()


def test_the_vendored_files_are_the_ones_the_readme_lists() -> None:
    readme = (VENDOR_DIR / "README.md").read_text()
    listed = {path: (int(size), digest) for path, size, digest in README_ROW.findall(readme)}
    present = {str(file.relative_to(VENDOR_DIR)) for file in VENDOR_DIR.rglob("*")
               if file.is_file() and file.name != "README.md"}
    assert set(listed) == present
    for path, (size, digest) in listed.items():
        data = (VENDOR_DIR / path).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, digest), path
