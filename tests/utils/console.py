"""A browser's part in the console's HTTP tests: a cookie jar, the login form, and the
CSRF token the pages carry."""

from __future__ import annotations

import re

import httpx

from tests.fixtures.api import PASSWORD, Api

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def console_client(api: Api, username: str, password: str = PASSWORD) -> httpx.AsyncClient:
    """Logged in to the console through its form, as a browser is."""
    client = httpx.AsyncClient(base_url=api.url, timeout=30)
    api._clients.append(client)
    answer = await client.post("/console/login", data={
        "username": username, "password": password, "next": "/console/"})
    assert answer.status_code == 303, answer.text
    return client


async def csrf_token(client: httpx.AsyncClient, page: str = "/console/") -> str:
    answer = await client.get(page)
    assert answer.status_code == 200, answer.text
    found = CSRF.search(answer.text)
    assert found, "no CSRF token on the page"
    return found.group(1)
