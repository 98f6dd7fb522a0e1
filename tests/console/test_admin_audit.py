"""The console's audit page against the real API: what was done through the other admin
pages is on it, newest first, with its detail readable; its filters (actor, action
prefix, outcome, time range) and "older" pages; only admins get it."""

from __future__ import annotations

import html
import re

from tests.console.admin_pages import field_error, shown_secret, submit
from tests.fixtures.api import ADMIN_PASSWORD, PASSWORD, Api
from tests.utils.console import console_client
from tests.utils.db import execute, fetchrow

AUDIT = "/console/audit"
ROW = re.compile(r"<tr>\s*<td class=\"nowrap\"[^>]*>([^<]+)</td>\s*<td>([^<]+)</td>\s*"
                 r"<td><code>([^<]+)</code></td>\s*<td>([^<]+)</td>")


def rows(page: str) -> list[tuple[str, str, str, str]]:
    """(when, actor, action, subject) of each entry on the page, in its order."""
    return [tuple(html.unescape(v) for v in found)  # type: ignore[misc]
            for found in ROW.findall(page)]


async def test_the_admin_pages_writes_are_on_the_trail(api: Api, db_url: str) -> None:
    admin = await console_client(api, "admin", ADMIN_PASSWORD)
    await submit(admin, "/console/users", {"username": "dee", "password": PASSWORD,
                                           "role": "viewer"}, "/console/users")
    dee = await fetchrow(db_url, "SELECT id FROM users WHERE username = 'dee'")
    assert dee is not None
    await submit(admin, f"/console/users/{dee['id']}/role", {"role": "operator"},
                 "/console/users")
    key = shown_secret((await submit(admin, "/console/api-keys", {
        "name": "scada", "role": "viewer"}, "/console/api-keys")).text)
    await submit(admin, "/console/devices/register", {"device_id": "W-31"},
                 "/console/devices/register")

    page = await admin.get(AUDIT)
    assert page.status_code == 200
    actions = [(actor, action, subject) for _, actor, action, subject in rows(page.text)]
    prefix = key.split("_")[1]
    assert actions[:4] == [("user:admin", "device.create", "W-31"),
                           ("user:admin", "api_key.create", prefix),
                           ("user:admin", "user.update", "dee"),
                           ("user:admin", "user.create", "dee")], "newest first"
    # The detail as indented JSON: the role change from what to what.
    assert '"role": {\n    "from": "viewer",\n    "to": "operator"\n  }' in \
        html.unescape(page.text)

    only_users = rows((await admin.get(AUDIT, params={"action": "user."})).text)
    assert [a for _, _, a, _ in only_users] == ["user.update", "user.create", "user.create"]
    assert {s for _, _, _, s in only_users} == {"dee", "admin"}
    # What the API answers for the same filter (`action_prefix`), in the same order.
    answer = await api.admin.get("/audit", params={"action_prefix": "user."})
    assert [(e["action"], e["subject"]) for e in answer.json()["items"]] == \
        [(a, s) for _, _, a, s in only_users]
    by_bootstrap = rows((await admin.get(AUDIT, params={"actor": "insa-api"})).text)
    assert [(a, s) for _, _, a, s in by_bootstrap] == [("user.create", "admin")]


async def test_failures_time_range_and_older_pages(api: Api, db_url: str) -> None:
    await api.user("viewer", "vi")
    viewer = await console_client(api, "vi")
    assert (await viewer.get(AUDIT)).status_code == 403
    admin = await console_client(api, "admin", ADMIN_PASSWORD)
    failures = rows((await admin.get(AUDIT, params={"outcome": "failure"})).text)
    assert [(actor, a, s) for _, actor, a, s in failures] == [
        ("user:vi", "permission.denied", "/console/audit")], "the viewer's attempt"

    # 250 old entries, one a minute on 2020-01-01 from 00:00: three pages of 100.
    await execute(db_url, "INSERT INTO audit_log (at, actor, action, subject) "
                          "SELECT timestamptz '2020-01-01 00:00+00' + g * interval '1 minute', "
                          "'user:bulk', 'test.bulk', 'n' || g FROM generate_series(0, 249) g")
    chosen = {"actor": "user:bulk"}
    first = await admin.get(AUDIT, params=chosen)
    seen = [s for _, _, _, s in rows(first.text)]
    older = re.search(r'href="([^"]+)" rel="next">Older', first.text)
    assert older is not None and len(seen) == 100 and seen[0] == "n249"
    second = await admin.get(html.unescape(older.group(1)))
    assert "actor=user%3Abulk" in older.group(1), "an older page keeps the filter"
    more = [s for _, _, _, s in rows(second.text)]
    assert more[0] == "n149" and len(more) == 100 and "← Newest" in second.text

    window = rows((await admin.get(AUDIT, params={
        **chosen, "since": "2020-01-01T01:00", "until": "2020-01-01T01:03"})).text)
    assert [(w, s) for w, _, _, s in window] == [
        ("2020-01-01 01:02:00 UTC", "n62"), ("2020-01-01 01:01:00 UTC", "n61"),
        ("2020-01-01 01:00:00 UTC", "n60")], "times read and shown as UTC, until excluded"


async def test_bad_filters_are_shown_at_their_inputs(api: Api) -> None:
    admin = await console_client(api, "admin", ADMIN_PASSWORD)
    backwards = await admin.get(AUDIT, params={"since": "2024-05-02T00:00",
                                               "until": "2024-05-01T00:00"})
    assert backwards.status_code == 422
    assert field_error(backwards.text, "until") == "must be after “from”"
    nonsense = await admin.get(AUDIT, params={"since": "yesterday", "outcome": "maybe"})
    assert nonsense.status_code == 422
    assert "not a date and time" in (field_error(nonsense.text, "since") or "")
    assert field_error(nonsense.text, "outcome") == "one of success, failure"
    bad_cursor = await admin.get(AUDIT, params={"cursor": "nope"})
    assert bad_cursor.status_code == 422 and "not a cursor" in bad_cursor.text
