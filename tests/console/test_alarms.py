"""The console's alarms page over real HTTP against the real API and PostgreSQL: the list
(most severe first or newest first, its filters, keyed pages and the refresh of its
rows), acknowledge, resolve, shelve and unshelve through the forms reaching the database
with the actor and the note, the API's refusals at their inputs (409 and 422, nothing
stored), one alert's page with its history, a viewer's limits and 404 pages.

The alerts are seeded as tests/services/api/test_alerts.py seeds them: a1 firing
(critical, W-1, rule hot), a2 resolved (warning, W-1, pip), a3 acknowledged (critical,
W-2, hot), a4 pending (warning, W-2, pip); a1 has a pending and a firing event."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.api.console import alarm_list
from tests.fixtures.api import Api
from tests.services.api.test_alerts import seed
from tests.utils.console import console_client, csrf_token
from tests.utils.db import fetch, fetchrow, fetchval

HTMX = {"HX-Request": "true"}
ROW = re.compile(r'<tr id="alarm-(\d+)"')


def row_ids(page: str) -> list[int]:
    return [int(found) for found in ROW.findall(page)]


def row_of(page: str, alert_id: int) -> str:
    found = re.search(rf'<tr id="alarm-{alert_id}".*?</tr>', page, re.S)
    assert found, f"no row of alert {alert_id}"
    return found.group(0)


def error_at(page: str, alert_id: int, name: str) -> str | None:
    """The message shown at the actions form's input `name` of alert `alert_id`."""
    found = re.search(rf'id="alarm-{alert_id}-{name}-error"[^>]*>([^<]*)<', page)
    return html.unescape(found.group(1)).strip() if found else None


async def post(client: httpx.AsyncClient, action: str, data: dict[str, Any],
               **kwargs: Any) -> httpx.Response:
    """As the page's form posts: its fields and the session's CSRF token."""
    token = await csrf_token(client, "/console/alarms")
    return await client.post(action, data={**data, "csrf_token": token}, **kwargs)


async def alert_row(db_url: str, alert_id: int) -> Any:
    return await fetchrow(db_url, "SELECT state, acknowledged_by, resolved_by, shelved_until, "
                                  "shelved_by FROM alerts WHERE id = $1", alert_id)


async def last_event(db_url: str, alert_id: int) -> Any:
    return await fetchrow(db_url, "SELECT kind, state, actor, note, shelved_until "
                                  "FROM alert_events WHERE alert_id = $1 "
                                  "ORDER BY id DESC LIMIT 1", alert_id)


async def test_the_list_is_open_alarms_most_severe_first_with_filters(
        api: Api, db_url: str) -> None:
    ids = await seed(db_url)
    a1, a2, a3, a4 = ids["a1"], ids["a2"], ids["a3"], ids["a4"]
    ana = await api.user("operator", "ana")
    shelved = await ana.post(f"/alerts/{a1}/shelve", json={"minutes": 120, "note": "swap"})
    assert shelved.status_code == 200, shelved.text
    client = await console_client(api, "ana")

    page = await client.get("/console/alarms")
    assert page.status_code == 200, page.text
    assert 'href="/console/alarms" aria-current="page"' in page.text
    assert row_ids(page.text) == [a3, a1, a4], "open only; critical first, newest first"
    first = row_of(page.text, a1)
    assert f'href="/console/alarms/{a1}"' in first and 'href="/console/wells/W-1"' in first
    assert "sev critical" in first and "hot" in first and "firing" in first
    until = datetime.fromisoformat(shelved.json()["shelved_until"])
    assert f"shelved until {until.strftime('%Y-%m-%d %H:%M:%S UTC')} by user:ana" in first
    assert "acknowledged" in row_of(page.text, a3) and "pending" in row_of(page.text, a4)

    for params, expected in (
            ({"order": "newest"}, [a4, a3, a1]),
            ({"state": "all"}, [a3, a1, a4, a2]),
            ({"state": "all", "order": "newest"}, [a4, a3, a2, a1]),
            ({"state": "resolved"}, [a2]),
            ({"state": "firing"}, [a1]),
            ({"severity": "warning", "state": "all"}, [a4, a2]),
            ({"device": "W-1"}, [a1]),
            ({"device": "W-9"}, []),
            ({"rule": str(ids["rule_pip"]), "state": "all"}, [a4, a2]),
            ({"shelved": "true"}, [a1]),
            ({"shelved": "false"}, [a3, a4]),
            ({"state": "", "severity": "", "device": "", "rule": "", "shelved": "",
              "order": ""}, [a3, a1, a4])):  # a form's empty fields: no filter
        found = await client.get("/console/alarms", params=params)
        assert found.status_code == 200, (params, found.text)
        assert row_ids(found.text) == expected, params
        # The live refresh reads the same rows, as one request for the rows on screen.
        rows = await client.get("/console/alarms/rows", params=params)
        assert rows.text.lstrip().startswith('<tbody id="alarm-rows"'), params
        assert row_ids(rows.text) == expected, params
    assert "No alarm matches." in (await client.get("/console/alarms?device=W-9")).text
    filtered = (await client.get("/console/alarms?state=all&severity=critical")).text
    assert 'hx-get="/console/alarms/rows?state=all&amp;severity=critical"' in filtered

    for params in ({"state": "open-ish"}, {"severity": "bad"}, {"rule": "x"},
                   {"cursor": "nonsense.x"}, {"cursor": "critical.x"}):
        refused = await client.get("/console/alarms", params=params)
        assert refused.status_code == 422, params
        assert refused.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("size", [1, 2, 3, 10])
async def test_keyed_pages_walk_every_alarm_once_in_order(
        api: Api, db_url: str, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    ids = await seed(db_url)
    monkeypatch.setattr(alarm_list, "PAGE_SIZE", size)
    await api.user("viewer", "vic")
    client = await console_client(api, "vic")
    for order, expected in (("severity", ["a3", "a1", "a4", "a2"]),
                            ("newest", ["a4", "a3", "a2", "a1"])):
        seen, url, pages = [], f"/console/alarms?state=all&order={order}", 0
        while url:
            page = await client.get(html.unescape(url))
            assert page.status_code == 200, page.text
            on_page = row_ids(page.text)
            assert 0 < len(on_page) <= size, (order, url)
            seen += on_page
            pages += 1
            refresh = re.search(r'<tbody id="alarm-rows" hx-get="([^"]+)"', page.text)
            assert refresh
            again = await client.get(html.unescape(refresh.group(1)))
            assert row_ids(again.text) == on_page, "the refresh reads the same page"
            found = re.search(r'<a href="([^"]+)" rel="next">', page.text)
            url = found.group(1) if found else ""
            if pages > 1:
                assert "First page" in page.text
        assert seen == [ids[name] for name in expected], (order, size)
        assert pages == -(-4 // size)


async def test_the_forms_act_as_the_user_with_a_note(api: Api, db_url: str) -> None:
    ids = await seed(db_url)
    a1, a4 = ids["a1"], ids["a4"]
    await api.user("operator", "ana")
    client = await console_client(api, "ana")
    detail = await client.get(f"/console/alarms/{a1}")
    for action in ("acknowledge", "shelve", "resolve"):
        assert f'formaction="/console/alarms/{a1}/{action}"' in detail.text, action
    assert f"/console/alarms/{a1}/unshelve" not in detail.text, "not shelved"

    # From the alert's page, without scripts: the change, then back to the page by GET.
    acked = await post(client, f"/console/alarms/{a1}/acknowledge",
                       {"from": "detail", "note": "crew sent", "period": "60", "until": ""})
    assert acked.status_code == 303 and acked.headers["location"] == f"/console/alarms/{a1}"
    row = await alert_row(db_url, a1)
    assert (row["state"], row["acknowledged_by"]) == ("acknowledged", "user:ana")
    event = await last_event(db_url, a1)
    assert (event["kind"], event["actor"], event["note"]) == \
        ("acknowledged", "user:ana", "crew sent")

    # From the list with htmx: the row answers, changed.
    before = datetime.now(UTC)
    shelved = await post(client, f"/console/alarms/{a1}/shelve",
                         {"from": "list", "next": "/console/alarms?state=all",
                          "note": "pump swap", "period": "240", "until": ""}, headers=HTMX)
    assert shelved.status_code == 200, shelved.text
    assert row_ids(shelved.text) == [a1] and "Shelved." in shelved.text
    assert "shelved until" in shelved.text and "by user:ana" in shelved.text
    row = await alert_row(db_url, a1)
    assert row["shelved_by"] == "user:ana"
    assert before + timedelta(hours=4) <= row["shelved_until"] <= \
        datetime.now(UTC) + timedelta(hours=4)
    event = await last_event(db_url, a1)
    assert (event["kind"], event["actor"], event["note"], event["shelved_until"]) == \
        ("shelved", "user:ana", "pump swap", row["shelved_until"])

    # Until a time (UTC, as the page's datetime input gives it); without scripts from
    # the list: back to the list as it was filtered.
    end = (datetime.now(UTC) + timedelta(days=1)).replace(second=0, microsecond=0)
    until = await post(client, f"/console/alarms/{a1}/shelve",
                       {"from": "list", "next": "/console/alarms?state=all", "note": "",
                        "period": "until", "until": end.strftime("%Y-%m-%dT%H:%M")})
    assert until.status_code == 303
    assert until.headers["location"] == "/console/alarms?state=all"
    assert (await alert_row(db_url, a1))["shelved_until"] == end
    assert (await last_event(db_url, a1))["note"] is None, "an empty note is no note"
    listed = await client.get("/console/alarms?shelved=true")
    assert row_ids(listed.text) == [a1]
    assert f'formaction="/console/alarms/{a1}/unshelve"' in listed.text

    unshelved = await post(client, f"/console/alarms/{a1}/unshelve",
                           {"from": "detail", "note": "pump back"}, headers=HTMX)
    assert unshelved.status_code == 200 and "Unshelved." in unshelved.text
    assert (await alert_row(db_url, a1))["shelved_until"] is None
    resolved = await post(client, f"/console/alarms/{a1}/resolve",
                          {"from": "detail", "note": "valve open"}, headers=HTMX)
    assert resolved.status_code == 200 and "Resolved." in resolved.text
    row = await alert_row(db_url, a1)
    assert (row["state"], row["resolved_by"]) == ("resolved", "user:ana")
    # A pending alert: only resolve is offered, and it works.
    pending = (await client.get(f"/console/alarms/{a4}")).text
    assert f'formaction="/console/alarms/{a4}/resolve"' in pending
    assert f'/console/alarms/{a4}/acknowledge"' not in pending
    assert f'/console/alarms/{a4}/shelve"' not in pending

    # The alert's page: its history in order, with who did what and their notes.
    page = (await client.get(f"/console/alarms/{a1}")).text
    events = re.findall(r'<tr class="event (\w+)">\s*<td>[^<]*</td>\s*<td>.*?</td>\s*'
                        r'<td>([^<]*)</td>.*?<td class="note">([^<]*)</td>', page, re.S)
    assert events == [
        ("pending", "engine", ""), ("firing", "engine", ""),
        ("acknowledged", "user:ana", "crew sent"), ("shelved", "user:ana", "pump swap"),
        ("shelved", "user:ana", ""), ("unshelved", "user:ana", "pump back"),
        ("resolved", "user:ana", "valve open")]
    assert f"until {end.strftime('%Y-%m-%d %H:%M:%S UTC')}" in page
    assert f'href="/console/rules/{ids["rule_hot"]}"' in page
    assert 'href="/console/wells/W-1"' in page
    assert "<form" not in page.split("<main>")[1], "resolved: nothing left to do"
    audit = await fetch(db_url, "SELECT actor, action, detail ->> 'note' AS note "
                                "FROM audit_log WHERE action LIKE 'alert.%' ORDER BY id")
    assert [(r["actor"], r["action"], r["note"]) for r in audit] == [
        ("user:ana", "alert.acknowledge", "crew sent"), ("user:ana", "alert.shelve", "pump swap"),
        ("user:ana", "alert.shelve", None), ("user:ana", "alert.unshelve", "pump back"),
        ("user:ana", "alert.resolve", "valve open")]


async def test_refusals_are_shown_at_their_input_and_nothing_is_stored(
        api: Api, db_url: str) -> None:
    ids = await seed(db_url)
    a1, a2 = ids["a1"], ids["a2"]
    ana = await api.user("operator", "ana")
    client = await console_client(api, "ana")
    events = await fetchval(db_url, "SELECT count(*) FROM alert_events")

    # Acknowledging an alert that is already resolved: the API's 409 at the buttons,
    # from the list (the row, its form open) and from the alert's page.
    from_list = await post(client, f"/console/alarms/{a2}/acknowledge",
                           {"from": "list", "next": "/console/alarms", "note": "late"},
                           headers=HTMX)
    assert from_list.status_code == 409
    message = f"alert {a2} is resolved; cannot make it acknowledged"
    assert row_ids(from_list.text) == [a2]
    assert error_at(from_list.text, a2, "action") == message
    on_page = await post(client, f"/console/alarms/{a2}/acknowledge",
                         {"from": "detail", "note": "late"})
    assert on_page.status_code == 409 and error_at(on_page.text, a2, "action") == message

    # A page that went stale: the alert resolved since, the form still offered.
    page = (await client.get("/console/alarms")).text
    assert f'formaction="/console/alarms/{a1}/acknowledge"' in page
    assert (await ana.post(f"/alerts/{a1}/resolve")).status_code == 200
    stale = await post(client, f"/console/alarms/{a1}/acknowledge",
                       {"from": "list", "next": "/console/alarms", "note": "on it"},
                       headers=HTMX)
    assert stale.status_code == 409
    assert error_at(stale.text, a1, "action") == \
        f"alert {a1} is resolved; cannot make it acknowledged"
    assert 'class="alarm-state resolved"' in stale.text, "the row as the alert is now"
    unshelve = await post(client, f"/console/alarms/{ids['a3']}/unshelve", {"from": "detail"})
    assert unshelve.status_code == 409
    assert error_at(unshelve.text, ids["a3"], "action") == f"alert {ids['a3']} is not shelved"

    # The shelf's bounds and the note's length: 422 at the input, what was typed kept.
    a3 = ids["a3"]
    past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    future = (datetime.now(UTC) + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
    for fields, name, text in (
            ({"period": "1"}, "period", "a shelf lasts 5 to 10080 minutes from now"),
            ({"period": "20160"}, "period", "a shelf lasts 5 to 10080 minutes from now"),
            ({"period": "soon"}, "period", "Input should be a valid number"),
            ({"period": "-5"}, "period", "Input should be greater than 0"),
            ({"period": ""}, "period", "give minutes or until, one of them"),
            ({"period": "60", "until": future}, "period", "give minutes or until, one of them"),
            ({"period": "until", "until": past}, "until",
             "a shelf lasts 5 to 10080 minutes from now"),
            ({"period": "until", "until": ""}, "until", "give minutes or until, one of them"),
            ({"period": "until", "until": "tomorrow"}, "until", "Input should be a valid"),
            ({"period": "60", "note": "x" * 2001}, "note", "String should have at most 2000")):
        for source, headers in (("list", HTMX), ("detail", {})):
            refused = await post(client, f"/console/alarms/{a3}/shelve",
                                 {"from": source, "next": "/console/alarms", **fields},
                                 headers=headers)
            assert refused.status_code == 422, (fields, source)
            shown = error_at(refused.text, a3, name)
            assert shown is not None and shown.startswith(text), (fields, source, shown)
            if fields.get("until"):
                assert f'value="{fields["until"]}"' in refused.text, "what was typed"
    too_long = await post(client, f"/console/alarms/{a3}/resolve",
                          {"from": "detail", "note": "y" * 2001})
    assert too_long.status_code == 422
    assert error_at(too_long.text, a3, "note") == \
        "String should have at most 2000 characters"
    assert await fetchval(db_url, "SELECT count(*) FROM alert_events") == events + 1  # ana's
    assert (await alert_row(db_url, a3))["state"] == "acknowledged"
    assert (await alert_row(db_url, a3))["shelved_until"] is None

    missing = await post(client, "/console/alarms/99999/resolve", {"from": "detail"})
    assert missing.status_code == 404 and "alert 99999 does not exist" in missing.text


async def test_a_viewer_sees_no_actions_and_cannot_post_one(api: Api, db_url: str) -> None:
    ids = await seed(db_url)
    await api.user("viewer", "vic")
    client = await console_client(api, "vic")
    page = await client.get("/console/alarms")
    assert page.status_code == 200 and row_ids(page.text) == [ids["a3"], ids["a1"], ids["a4"]]
    detail = await client.get(f"/console/alarms/{ids['a1']}")
    assert detail.status_code == 200
    for text in (page.text, detail.text):
        assert "<details" not in text and "formaction" not in text and "Actions</th>" not in text
        assert "/acknowledge" not in text and "/shelve" not in text
    refused = await post(client, f"/console/alarms/{ids['a1']}/acknowledge",
                         {"from": "detail", "note": "mine"})
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("text/html")
    assert "may not alerts:manage" in refused.text
    assert (await alert_row(db_url, ids["a1"]))["state"] == "firing"
    denied = await fetch(db_url, "SELECT subject, detail ->> 'permission' AS permission "
                                 "FROM audit_log WHERE action = 'permission.denied'")
    assert [(r["subject"], r["permission"]) for r in denied] == [
        (f"/console/alarms/{ids['a1']}/acknowledge", "alerts:manage")]


async def test_unknown_alarms_are_404_pages(api: Api, db_url: str) -> None:
    await seed(db_url)
    client = await console_client(api, "admin", "first-admin-password-for-tests")
    missing = await client.get("/console/alarms/99999")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert "alert 99999 does not exist" in missing.text
    assert (await client.get("/console/alarms/abc")).status_code == 404
