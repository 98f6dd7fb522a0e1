"""The console's rules page over real HTTP against the real API and PostgreSQL: the list
with each rule's status, create and edit through the form (the API's messages at their
inputs, nothing stored on an error), the switch in place, a backtest of an unsaved rule
over seeded telemetry, deletion after a confirmation, a viewer's limits and 404 pages."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from services.api.console.rule_form import body_of, values_of
from shared.alerting.defaults import DEFAULT_RULES
from shared.alerting.rules import parse_rule, stored_form
from tests.fixtures.api import Api
from tests.utils.console import console_client, csrf_token
from tests.utils.db import execute, fetch, fetchrow, fetchval
from tests.utils.telemetry import seed

HOT = {"type": "threshold", "name": "motor hot", "metric": "motor_temp", "op": ">",
       "value": 100, "severity": "critical", "for_seconds": 120}
# The form's inputs for HOT, as a browser posts them (a checkbox after its hidden "false").
HOT_FORM = {"name": "motor hot", "type": "threshold", "severity": "critical",
            "scope.kind": "", "scope": "", "for_seconds": "120", "message": "",
            "description": "", "metric": "motor_temp", "op": ">", "value.kind": "number",
            "value": "100", "while_running": "false", "extra": ""}
HTMX = {"HX-Request": "true"}


def shown_error(page: str, name: str) -> str | None:
    """The message the page shows at input `name` (dots as dashes in its id), or None."""
    found = re.search(rf'id="{re.escape(name.replace(".", "-"))}-error"[^>]*>([^<]*)<', page)
    return html.unescape(found.group(1)).strip() if found else None


async def post(client: httpx.AsyncClient, action: str, data: dict[str, Any],
               page: str = "/console/rules", **kwargs: Any) -> httpx.Response:
    """As the page's form posts: its fields and the session's CSRF token."""
    return await client.post(action, data={**data, "csrf_token": await csrf_token(client, page)},
                             **kwargs)


async def engineer(api: Api) -> httpx.AsyncClient:
    await api.user("engineer", "erin")
    return await console_client(api, "erin")


async def rule_row(db_url: str, name: str) -> Any:  # a dict, or None
    found = await fetchrow(db_url, "SELECT id, name, enabled, definition, updated_at "
                                   "FROM rules WHERE name = $1", name)
    return None if found is None else {**found, "definition": orjson.loads(found["definition"])}


async def test_the_list_shows_every_rule_with_its_status(api: Api, db_url: str) -> None:
    await seed(db_url, "W-none", [], device_type="esp")  # no nameplate: skipped
    for rule in (HOT, {**HOT, "name": "quiet pcp", "type": "no_data", "after_seconds": 600,
                       "severity": "warning", "scope": {"device_type": "pcp"}},
                 {**HOT, "name": "overload", "value": {"attribute": "motor_rated_current",
                                                       "factor": 1.15}}):
        rule = {k: v for k, v in rule.items() if not (rule["type"] == "no_data" and
                                                      k in ("metric", "op", "value"))}
        assert (await api.admin.post("/rules", json=rule)).status_code == 201
    await execute(db_url, "INSERT INTO rules (name, enabled, definition) VALUES "
                          "('broken', false, '{\"type\": \"threshold\", \"metric\": \"x\"}')")
    client = await engineer(api)
    page = await client.get("/console/rules")
    assert page.status_code == 200, page.text
    text = page.text
    rows = {name: re.search(rf'<tr id="rule-\d+">\s*<td><a [^>]*>{name}</a>.*?</tr>', text,
                            re.S) for name in ("motor hot", "quiet pcp", "overload", "broken")}
    assert all(rows.values()), rows
    hot, quiet, overload, broken = (m.group(0) for m in rows.values() if m)
    assert "threshold" in hot and "sev critical" in hot and "all devices" in hot
    assert "motor_temp &gt; 100" in hot and 'class="ok"' in hot
    assert "no_data" in quiet and "type pcp" in quiet and "sev warning" in quiet
    assert "Skips 1 device lacking motor_rated_current" in overload and "W-none" in overload
    assert "Invalid, skipped by the engine" in broken and "disabled" in broken
    assert "op: Field required" in html.unescape(broken)
    assert ">Disable<" in hot and ">Enable<" in broken  # the engineer's switches
    assert 'href="/console/rules/new"' in text and 'aria-current="page">Rules<' in text
    filtered = await client.get("/console/rules?type=no_data&enabled=")
    assert "quiet pcp" in filtered.text and "motor hot" not in filtered.text


async def test_a_rule_made_in_the_form_is_stored_through_the_api(api: Api,
                                                                 db_url: str) -> None:
    client = await engineer(api)
    form = await client.get("/console/rules/new?type=range")
    assert form.status_code == 200 and 'name="low.kind"' in form.text
    answer = await post(client, "/console/rules/new", {
        "name": "flow band", "type": "range", "severity": "warning", "scope.kind": "tag",
        "scope": "field=north", "for_seconds": "300", "message": "", "description": "",
        "enabled": "false", "metric": "flow_rate", "low.kind": "attribute",
        "low.attribute": "pump_min_flow", "low.factor": "", "low.offset": "",
        "high.kind": "number", "high": "2000", "clear_low.kind": "",
        "clear_high.kind": "number", "clear_high": "1900", "while_running": "true",
        "extra": '{"renotify_seconds": 3600, "labels": {"team": "production"}}'},
        page="/console/rules/new")
    assert answer.status_code == 303, answer.text
    stored = await rule_row(db_url, "flow band")
    assert answer.headers["location"] == f"/console/rules/{stored['id']}"
    assert stored["enabled"] is False  # the form's checkbox, unchecked
    through_api = (await api.admin.get(f"/rules/{stored['id']}")).json()
    definition = through_api["definition"]
    assert (definition["scope"]["tag"], definition["low"], definition["high"],
            definition["clear_low"], definition["clear_high"], definition["while_running"],
            definition["renotify_seconds"], definition["labels"]) == (
        "field=north", {"attribute": "pump_min_flow", "factor": 1.0, "offset": 0.0,
                        "otherwise": None}, 2000, None, 1900, True, 3600, {"team": "production"})
    [audit] = await fetch(db_url, "SELECT actor, action FROM audit_log "
                                  "WHERE action = 'rule.create'")
    assert (audit["actor"], audit["action"]) == ("user:erin", "rule.create")
    # Its page shows it in the form, the JSON keeping what the form does not show.
    page = await client.get(answer.headers["location"])
    assert "Saved." in page.text and 'value="field=north"' in page.text
    assert "&#34;team&#34;: &#34;production&#34;" in page.text
    # Through htmx the browser is sent to the rule's page.
    again = await post(client, "/console/rules/new", {**HOT_FORM, "enabled": "true"},
                       headers=HTMX)
    made = await rule_row(db_url, "motor hot")
    assert again.status_code == 200 and made is not None
    assert again.headers["hx-redirect"] == f"/console/rules/{made['id']}"
    assert made["definition"]["value"] == 100 and made["definition"]["for_seconds"] == 120


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"metric": "motor temp"}, "metric", "metric: String should match pattern"),
    ({"value": "hot"}, "value", "value.float: Input should be a valid number"),
    ({"value": "nan"}, "value", "value.float: Input should be a finite number"),
    ({"type": "range", "low.kind": "number", "low": "-inf", "high.kind": "number",
      "high": "600"}, "low", "low.float: Input should be a finite number"),
    ({"value.kind": "attribute", "value.attribute": "motor_max_temp", "value.factor": "0"},
     "value", "value.factor: Input should be greater than 0"),
    ({"scope.kind": "device_id", "scope": "W 1"}, "scope",
     "scope.device_id: String should match pattern"),
    ({"message": "{rule} is {colour}"}, "message",
     "rule: message names unknown fields ['colour']"),
    ({"extra": '{"actions": [{"kind": "webhook", "url": "ftp://x"}]}'}, "extra",
     "actions.0.webhook.url: String should match pattern"),
    ({"extra": '{"metric": "pip"}'}, "extra", "extra: metric set in the form as well"),
    ({"extra": "[1]"}, "extra", "extra: a JSON object"),
    ({"type": "range", "low.kind": "number", "low": "900", "high.kind": "number",
      "high": "600"}, "low", "rule: low must be below high"),
])
async def test_an_invalid_edit_shows_the_apis_message_at_its_field_and_stores_nothing(
        api: Api, db_url: str, change: dict[str, str], field: str, message: str) -> None:
    rule_id = (await api.admin.post("/rules", json=HOT)).json()["id"]
    before = await rule_row(db_url, "motor hot")
    client = await engineer(api)
    page = f"/console/rules/{rule_id}"
    plain = await post(client, page, {**HOT_FORM, **change}, page=page)
    assert plain.status_code == 422, plain.text
    assert (shown_error(plain.text, field) or "").startswith(message), \
        shown_error(plain.text, field) or plain.text
    assert "<html" in plain.text  # a whole page without htmx
    swapped = await post(client, f"{page}", {**HOT_FORM, **change}, page=page, headers=HTMX)
    assert swapped.status_code == 422 and swapped.text.lstrip().startswith('<form id="rule-form"')
    assert (shown_error(swapped.text, field) or "").startswith(message)
    assert await rule_row(db_url, "motor hot") == before
    assert await fetchval(db_url, "SELECT count(*) FROM audit_log "
                                  "WHERE action LIKE 'rule.%' AND actor = 'user:erin'") == 0


async def test_a_name_taken_is_shown_at_the_name_and_an_edit_is_stored(api: Api,
                                                                       db_url: str) -> None:
    rule_id = (await api.admin.post("/rules", json=HOT)).json()["id"]
    await api.admin.post("/rules", json={**HOT, "name": "other"})
    await api.admin.patch(f"/rules/{rule_id}", json={"enabled": False})
    client = await engineer(api)
    page = f"/console/rules/{rule_id}"
    clash = await post(client, page, {**HOT_FORM, "name": "other"}, page=page, headers=HTMX)
    assert clash.status_code == 409
    assert shown_error(clash.text, "name") == "a rule named 'other' already exists"
    saved = await post(client, page, {**HOT_FORM, "value": "110", "name": "motor very hot"},
                       page=page)
    assert saved.status_code == 303, saved.text
    stored = await rule_row(db_url, "motor very hot")
    assert stored["id"] == rule_id and stored["definition"]["value"] == 110
    assert stored["enabled"] is False, "the form leaves enabled as it was"
    [changed] = await fetch(db_url, "SELECT detail FROM audit_log WHERE action = 'rule.update'")
    assert orjson.loads(changed["detail"])["changed"] == ["name", "value"]


async def test_the_switch_enables_and_disables_in_place(api: Api, db_url: str) -> None:
    rule_id = (await api.admin.post("/rules", json=HOT)).json()["id"]
    client = await engineer(api)
    off = await post(client, f"/console/rules/{rule_id}/enabled", {"enabled": "false"},
                     headers=HTMX)
    assert off.status_code == 200, off.text
    assert off.text.lstrip().startswith(f'<tr id="rule-{rule_id}">')
    assert ">disabled<" in off.text and ">Enable<" in off.text
    assert 'name="next" value="/console/rules"' in off.text  # not the switch's own URL
    assert (await api.admin.get(f"/rules/{rule_id}")).json()["enabled"] is False
    on = await post(client, f"/console/rules/{rule_id}/enabled",
                    {"enabled": "true", "next": f"/console/rules/{rule_id}"})
    assert on.status_code == 303 and on.headers["location"] == f"/console/rules/{rule_id}"
    assert (await api.admin.get(f"/rules/{rule_id}")).json()["enabled"] is True
    actions = [r["action"] for r in await fetch(
        db_url, "SELECT action FROM audit_log WHERE action LIKE 'rule.%able' ORDER BY id")]
    assert actions == ["rule.disable", "rule.enable"]


async def test_the_switch_without_script_returns_to_the_list_as_filtered(
        api: Api, db_url: str) -> None:
    rule_id = (await api.admin.post("/rules", json=HOT)).json()["id"]
    client = await engineer(api)
    listed = "/console/rules?type=threshold&enabled=true"
    page = await client.get(listed)
    back = re.search(rf'action="/console/rules/{rule_id}/enabled".*?name="next" '
                     r'value="([^"]*)"', page.text, re.S)
    assert back is not None and html.unescape(back.group(1)) == listed, page.text
    off = await post(client, f"/console/rules/{rule_id}/enabled",
                     {"enabled": "false", "next": html.unescape(back.group(1))}, page=listed)
    assert off.status_code == 303 and off.headers["location"] == listed


async def seed_hot_wells(db_url: str) -> datetime:
    """W-1 hot (over 100 degC) from minute 10 to 14, back at 15; W-2 hot at minute 10 only;
    W-3, a PCP, hot throughout. One reading a minute from two hours ago."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)

    def readings(temps: list[float]) -> list[tuple[datetime, str, float]]:
        return [(start + timedelta(minutes=n), "motor_temp", t) for n, t in enumerate(temps)]

    await seed(db_url, "W-1", readings([90.0] * 10 + [105.0] * 5 + [95.0] * 5))
    await seed(db_url, "W-2", readings([90.0] * 10 + [105.0] + [90.0] * 9))
    await seed(db_url, "W-3", readings([120.0] * 20), device_type="pcp")
    return start


def when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


async def test_a_backtest_shows_what_the_unsaved_rule_would_have_raised(
        api: Api, db_url: str) -> None:
    start = await seed_hot_wells(db_url)
    client = await engineer(api)
    draft = {**HOT_FORM, "scope.kind": "device_type", "scope": "esp", "window": "24h",
             "device": ""}
    answer = await post(client, "/console/rules/new/backtest", draft, headers=HTMX)
    assert answer.status_code == 200, answer.text
    text = answer.text
    assert "1 alert</strong>" in text and "on 1 device," in text
    assert re.search(r"<tr><td>W-1</td><td>1</td><td>0</td>", text)
    transitions = re.findall(r'<tr><td>([^<]+)</td><td>(W-\d)</td><td><span class="transition '
                             r'\w+">(\w+)<', text)
    assert transitions == [
        (when(start + timedelta(minutes=10)), "W-1", "pending"),
        (when(start + timedelta(minutes=12)), "W-1", "firing"),
        (when(start + timedelta(minutes=15)), "W-1", "resolved")]
    assert 'value="motor hot"' in text  # the form comes back as it was
    # At once (no `for`): both ESP wells; with a device chosen, that one only.
    at_once = {**draft, "for_seconds": "0"}
    both = await post(client, "/console/rules/new/backtest", at_once, headers=HTMX)
    assert "2 alerts</strong>" in both.text and "<td>W-2</td>" in both.text
    one = await post(client, "/console/rules/new/backtest", {**at_once, "device": "W-2"},
                     headers=HTMX)
    assert "1 alert</strong>" in one.text and "(device W-2 only)" in one.text
    assert "<td>W-1</td>" not in one.text
    week = await post(client, "/console/rules/new/backtest", {**at_once, "window": "7d"})
    assert week.status_code == 200 and "2 alerts</strong>" in week.text
    assert "<html" in week.text  # without htmx, the whole page
    # Nothing was saved or raised.
    assert await fetchval(db_url, "SELECT count(*) FROM rules") == 0
    assert await fetchval(db_url, "SELECT count(*) FROM alerts") == 0

    for change, field, message in (
            ({"device": "W-3"}, "device", "device: W-3 is not in the rule's scope"),
            ({"device": "W-9"}, "device", "device: no device W-9"),
            ({"window": "30d"}, "window", "window: one of 24h, 7d"),
            ({"op": "=>"}, "op", "rule.op: Input should be")):
        refused = await post(client, "/console/rules/new/backtest", {**at_once, **change},
                             headers=HTMX)
        assert refused.status_code == 422, (change, refused.text)
        assert (shown_error(refused.text, field) or "").startswith(message), \
            (change, shown_error(refused.text, field))
        assert "backtest-result" not in refused.text


async def test_a_saved_rules_form_backtests_its_edits(api: Api, db_url: str) -> None:
    await seed_hot_wells(db_url)
    rule_id = (await api.admin.post("/rules", json=HOT)).json()["id"]
    client = await engineer(api)
    page = f"/console/rules/{rule_id}"
    answer = await post(client, f"{page}/backtest", {**HOT_FORM, "for_seconds": "0",
                                                     "window": "24h"}, page=page, headers=HTMX)
    assert answer.status_code == 200, answer.text
    assert "3 alerts</strong>" in answer.text  # every well: this rule has no scope
    assert f'action="{page}"' in answer.text
    assert (await rule_row(db_url, "motor hot"))["definition"]["for_seconds"] == 120


async def test_a_rule_is_deleted_after_a_confirmation(api: Api, db_url: str) -> None:
    rule_id = (await api.admin.post("/rules", json=HOT)).json()["id"]
    client = await engineer(api)
    confirm = await client.get(f"/console/rules/{rule_id}/delete")
    assert confirm.status_code == 200
    assert "Delete the rule “motor hot”?" in confirm.text and "Its 0 alerts" in confirm.text
    assert await rule_row(db_url, "motor hot") is not None  # asking deletes nothing
    gone = await post(client, f"/console/rules/{rule_id}/delete", {},
                      page=f"/console/rules/{rule_id}/delete")
    assert gone.status_code == 303
    assert gone.headers["location"] == "/console/rules"
    assert (await api.admin.get(f"/rules/{rule_id}")).status_code == 404
    listed = await client.get(gone.headers["location"])
    assert "Deleted the rule “motor hot”." in listed.text
    again = await client.get("/console/rules")
    assert "Deleted the rule" not in again.text, "the notice is said once"
    # The address carries no notice: a crafted link cannot make the page announce one.
    crafted = await client.get("/console/rules?deleted=Shutdown%20now%3A%20call%20555")
    assert crafted.status_code == 200 and "Shutdown now" not in crafted.text


async def test_a_viewer_reads_rules_and_changes_nothing(api: Api, db_url: str) -> None:
    await seed_hot_wells(db_url)
    rule_id = (await api.admin.post("/rules", json=HOT)).json()["id"]
    await api.user("viewer", "vera")
    client = await console_client(api, "vera")
    listed = await client.get("/console/rules")
    assert listed.status_code == 200 and "motor hot" in listed.text
    assert ">Disable<" not in listed.text and "/console/rules/new" not in listed.text
    page = await client.get(f"/console/rules/{rule_id}")
    assert page.status_code == 200 and "&#34;metric&#34;: &#34;motor_temp&#34;" in page.text
    assert 'id="rule-form"' not in page.text and "/delete" not in page.text
    assert (await client.get("/console/rules/new")).status_code == 403
    assert (await client.get(f"/console/rules/{rule_id}/delete")).status_code == 403
    token = await csrf_token(client, "/console/rules")  # a good token: the role refuses
    for action, data in (("/console/rules/new", HOT_FORM),
                         (f"/console/rules/{rule_id}", {**HOT_FORM, "value": "1"}),
                         (f"/console/rules/{rule_id}/enabled", {"enabled": "false"}),
                         (f"/console/rules/{rule_id}/delete", {}),
                         ("/console/rules/new/backtest", {**HOT_FORM, "window": "24h"})):
        refused = await client.post(action, data={**data, "csrf_token": token})
        assert refused.status_code == 403, action
        assert "may not rules:write" in refused.text and "<html" in refused.text, action
    stored = await rule_row(db_url, "motor hot")
    assert stored["enabled"] and stored["definition"]["value"] == 100
    assert await fetchval(db_url, "SELECT count(*) FROM audit_log WHERE action = "
                                  "'permission.denied' AND actor = 'user:vera'") == 7


async def test_an_unknown_rule_is_a_404_page(api: Api) -> None:
    client = await engineer(api)
    for path in ("/console/rules/99999", "/console/rules/99999/delete",
                 "/console/rules/not-a-number"):
        missing = await client.get(path)
        assert missing.status_code == 404, path
        assert "Not found" in missing.text and missing.headers["content-type"].startswith(
            "text/html")
    assert "rule 99999 does not exist" in (await client.get("/console/rules/99999")).text
    for action in ("/console/rules/99999", "/console/rules/99999/enabled",
                   "/console/rules/99999/backtest"):
        answer = await post(client, action, {**HOT_FORM, "enabled": "true"})
        assert answer.status_code == 404, action


@pytest.mark.parametrize("rule", DEFAULT_RULES, ids=lambda r: r["name"])
def test_every_built_in_rule_comes_back_whole_from_its_form(rule: dict[str, Any]) -> None:
    """What the form shows of a stored rule, posted back unchanged, is the same rule: no
    field lost or changed (those the form does not show go through `extra`)."""
    parsed = parse_rule(rule)
    values = values_of(parsed.name, stored_form(parsed))
    assert parse_rule(body_of(values)) == parsed
