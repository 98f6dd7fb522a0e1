"""What the admin pages' tests share: a write through a page's form (with the CSRF token
the page carries), the message a page shows at one input, the secret a page shows once,
and whether MQTT credentials connect to the test's broker."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx

from tests.utils.console import csrf_token
from tests.utils.mqtt_client import Clients

SECRET = re.compile(r'class="secret-value">([^<]+)<')


async def submit(client: httpx.AsyncClient, action: str, data: dict[str, Any],
                 page: str = "/console/") -> httpx.Response:
    """POST `data` to `action` as the form on `page` does (its CSRF token included)."""
    token = await csrf_token(client, page)
    return await client.post(action, data={**data, "csrf_token": token})


def field_error(page: str, field: str) -> str | None:
    """The message shown at the input `field` (`attributes.vsd_max_hz`), or None."""
    found = re.search(rf'class="field-error" id="{re.escape(field.replace(".", "-"))}-error"'
                      r'[^>]*>([^<]*)<', page)
    return html.unescape(found.group(1)) if found else None


def shown_secret(page: str) -> str:
    found = SECRET.search(page)
    assert found, "no secret on the page"
    return html.unescape(found.group(1))


def connects(clients: Clients, username: str, password: str) -> bool:
    """Whether the test's broker accepts these credentials (a fresh connection)."""
    return not clients.new(username, password).connect().is_failure
