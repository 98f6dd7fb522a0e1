"""Alert rules through the API: CRUD validated by the engine's own schema, the audit
trail, filters and pages, device scoping, and backtests over stored telemetry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from devtools.stack.servers import RunningBroker
from devtools.stack.service_process import ServiceProcess
from shared import db
from shared.alerting.defaults import DEFAULT_RULES, load_defaults
from shared.mqtt import telemetry_topic
from tests.fixtures.api import Api
from tests.utils.db import execute, fetch, fetchval
from tests.utils.devices import connect_device
from tests.utils.waiting import wait_until

HOT = {"type": "threshold", "name": "motor hot", "metric": "motor_temp", "op": ">",
       "value": 100, "severity": "critical", "for_seconds": 120}


async def audit_rows(db_url: str, prefix: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    rows = await fetch(db_url, "SELECT actor, action, subject, detail FROM audit_log "
                               "WHERE action LIKE $1 ORDER BY id", prefix + "%")
    return [(r["actor"], r["action"], r["subject"], orjson.loads(r["detail"])) for r in rows]


async def test_rule_crud_with_its_audit_trail(api: Api, db_url: str) -> None:
    erin = await api.user("engineer", "erin")
    created = await erin.post("/rules", json=HOT)
    assert created.status_code == 201, created.text
    rule = created.json()
    rule_id = rule["id"]
    assert (rule["name"], rule["type"], rule["enabled"], rule["builtin"], rule["problem"]) == \
        ("motor hot", "threshold", True, False, None)
    assert rule["definition"]["op"] == ">" and "name" not in rule["definition"]
    assert (await erin.get(f"/rules/{rule_id}")).json() == rule
    [stored] = await fetch(db_url, "SELECT name, enabled, definition FROM rules")
    assert stored["name"] == "motor hot" and stored["enabled"]
    duplicate = await erin.post("/rules", json={**HOT, "value": 90})
    assert duplicate.status_code == 409 and "motor hot" in duplicate.json()["error"]["message"]

    disabled = await erin.patch(f"/rules/{rule_id}", json={"enabled": False})
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    replaced = await erin.put(f"/rules/{rule_id}", json={**HOT, "value": 110,
                                                         "name": "motor very hot"})
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["definition"]["value"], replaced.json()["name"],
            replaced.json()["enabled"]) == (110, "motor very hot", False), \
        "enabled left out of a replacement stays as it was"
    other = (await erin.post("/rules", json={**HOT, "name": "other"})).json()
    clash = await erin.put(f"/rules/{other['id']}", json={**HOT, "name": "motor very hot"})
    assert clash.status_code == 409
    bad = await erin.put(f"/rules/{rule_id}", json={**HOT, "op": "=>"})
    assert bad.status_code == 422 and bad.json()["error"]["message"].startswith("op: ")
    assert (await erin.patch(f"/rules/{rule_id}", json={})).status_code == 422

    assert (await erin.delete(f"/rules/{rule_id}")).status_code == 204
    assert (await erin.get(f"/rules/{rule_id}")).status_code == 404
    for method in ("put", "patch", "delete"):
        body = {"json": HOT if method == "put" else {"enabled": True}} \
            if method != "delete" else {}
        gone = await getattr(erin, method)(f"/rules/{rule_id}", **body)
        assert gone.status_code == 404, method

    assert await audit_rows(db_url, "rule.") == [
        ("user:erin", "rule.create", str(rule_id),
         {"name": "motor hot", "type": "threshold", "enabled": True}),
        ("user:erin", "rule.disable", str(rule_id), {"name": "motor hot"}),
        ("user:erin", "rule.update", str(rule_id),
         {"name": "motor very hot", "changed": ["name", "value"]}),
        ("user:erin", "rule.create", str(other["id"]),
         {"name": "other", "type": "threshold", "enabled": True}),
        ("user:erin", "rule.delete", str(rule_id),
         {"name": "motor very hot", "builtin": False, "alerts_deleted": 0})]

    viewer = await api.user("viewer")
    assert (await viewer.get(f"/rules/{other['id']}")).status_code == 200
    assert (await viewer.post("/rules", json={**HOT, "name": "x"})).status_code == 403
    assert (await viewer.patch(f"/rules/{other['id']}", json={"enabled": False})
            ).status_code == 403


@pytest.mark.parametrize(("rule", "message"), [
    ({**HOT, "op": "=>"}, "op: Input should be '>', '>=', '<', '<=', '==' or '!='"),
    ({**HOT, "scope": {"device_id": "W 1"}}, "scope.device_id: String should match pattern"),
    ({**HOT, "type": "bogus"}, "type: Input tag 'bogus'"),
    ({k: v for k, v in HOT.items() if k != "metric"}, "metric: Field required"),
    ({**HOT, "severity": "urgent"}, "severity: Input should be 'info', 'warning' or"),
    ({**HOT, "for_seconds": -1}, "for_seconds: Input should be greater than or equal to 0"),
    ({**HOT, "colour": "red"}, "colour: Extra inputs are not permitted"),
    ({**HOT, "actions": [{"kind": "webhook", "url": "ftp://x"}]},
     "actions.0.webhook.url: String should match pattern"),
    ({"type": "range", "name": "pip", "metric": "pip", "low": 900, "high": 600},
     "rule: low must be below high"),
    ({**HOT, "message": "{rule} is {colour}"}, "rule: message names unknown fields ['colour']"),
])
async def test_a_bad_rule_is_refused_naming_its_field(api: Api, db_url: str,
                                                       rule: dict[str, Any],
                                                       message: str) -> None:
    response = await api.admin.post("/rules", json=rule)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_rule" and error["message"].startswith(message), error
    assert error["details"]["field"] == message.split(":")[0]
    assert await fetchval(db_url, "SELECT count(*) FROM rules") == 0
    assert await audit_rows(db_url, "rule.") == []


@pytest.mark.parametrize(("number", "field"), [("NaN", "value"), ("Infinity", "value"),
                                               ("-Infinity", "offset")])
async def test_a_rule_with_a_non_finite_number_is_refused(api: Api, db_url: str,
                                                         number: str, field: str) -> None:
    """JSON as Python's json module writes it (NaN, Infinity), which the body parser
    reads: stored, such a number would be null, and the rule skipped by the engine."""
    body = ('{"type": "threshold", "name": "hot", "metric": "motor_temp", "op": ">", '
            f'"value": {number}}}' if field == "value" else
            '{"type": "compare", "name": "no head", "metric": "discharge_pressure", '
            f'"op": "<", "other_metric": "pip", "offset": {number}}}')
    response = await api.admin.post("/rules", content=body,
                                    headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_rule" and error["details"]["field"].startswith(field)
    assert "Input should be a finite number" in error["message"], error
    assert await fetchval(db_url, "SELECT count(*) FROM rules") == 0


async def test_a_webhook_the_engine_would_refuse_is_refused_when_written(
        api: Api, db_url: str) -> None:
    """Literal internal addresses, internal names and keys outside the webhook secrets:
    422 naming the field, unless the operator allowed the target (INSA_ALERTS_WEBHOOK_ALLOW).
    Names are resolved, and each address checked, by the engine when it sends."""
    def with_webhook(name: str = "hooked", **webhook: Any) -> dict[str, Any]:
        return {**HOT, "name": name, "actions": [{"kind": "mqtt", "topic": "insa/notify/ops"},
                                                 {"kind": "webhook", **webhook}]}

    async def refused(response: Any, field: str, message: str) -> None:
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert (error["code"], error["details"]["field"], error["message"]) == \
            ("invalid_rule", field, f"{field}: {message}")

    internal = {
        "http://127.0.0.1:8080/hook": "127.0.0.1 is a loopback address",
        "http://169.254.169.254/latest/meta-data/": "169.254.169.254 is a link-local address",
        "http://10.20.0.7/hook": "10.20.0.7 is a private address",
        "https://[fd00::5]/hook": "fd00::5 is a private address",
        "http://0.0.0.0:8004/": "0.0.0.0 is an unspecified address",
        "http://localhost:9000/": "localhost is an internal host name",
        "http://timescaledb:5432/": "timescaledb is an internal host name",
    }
    for url, problem in internal.items():
        await refused(await api.admin.post("/rules", json=with_webhook(url=url)),
                      "actions.1.webhook.url", f"{problem}, not in INSA_ALERTS_WEBHOOK_ALLOW")
    public = "https://hooks.example.com/insa"
    for variable in ("INSA_DATABASE_URL", "INSA_ALERTS_MQTT_PASSWORD", "PATH"):
        await refused(await api.admin.post("/rules", json=with_webhook(
            url=public, secret_env=variable)), "actions.1.webhook.secret_env",
            "must name a webhook secret (INSA_WEBHOOK_SECRET_<NAME>), not another variable "
            "of the alerts service; use `secret: <name>` instead")
    created = await api.admin.post("/rules", json=with_webhook(url=public, secret="scada"))
    assert created.status_code == 201, created.text
    rule_id = created.json()["id"]
    await refused(await api.admin.put(f"/rules/{rule_id}", json=with_webhook(
        url="http://127.0.0.1/")), "actions.1.webhook.url",
        "127.0.0.1 is a loopback address, not in INSA_ALERTS_WEBHOOK_ALLOW")
    assert await fetchval(db_url, "SELECT count(*) FROM rules") == 1

    # What the operator allows, as the alerts service would send it.
    api.settings.webhook_allow = "10.20.0.0/16, timescaledb"  # the app's own settings object
    for n, webhook in enumerate([{"url": "http://10.20.0.7/hook"},
                                 {"url": "http://timescaledb:5432/"},
                                 {"url": public, "secret_env": "INSA_WEBHOOK_SECRET_SCADA"}]):
        response = await api.admin.post("/rules", json=with_webhook(f"allowed {n}", **webhook))
        assert response.status_code == 201, response.text


async def test_list_filters_pages_and_device_scoping(api: Api, db_url: str) -> None:
    conn = await db.connect(db_url)
    try:
        await load_defaults(conn)
    finally:
        await conn.close()
    await execute(db_url, "INSERT INTO devices (device_id) VALUES ('W-1'), ('W-2')")
    admin = api.admin
    mine = [(await admin.post("/rules", json=rule)).json() for rule in (
        {**HOT, "name": "W-1 hot", "scope": {"device_id": "W-1"}},
        {**HOT, "name": "W-2 hot", "scope": {"device_id": "W-2"}, "enabled": False})]

    async def names(client: Any = admin, **params: Any) -> list[str]:
        items, cursor = [], None
        while True:
            page = (await client.get("/rules", params={**params, "limit": 4,
                                                       **({"cursor": cursor} if cursor else {})}
                                     )).json()
            items += [r["name"] for r in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                return items

    everything = await names()
    assert everything == [r["name"] for r in DEFAULT_RULES] + ["W-1 hot", "W-2 hot"]
    assert await names(builtin="false") == ["W-1 hot", "W-2 hot"]
    assert await names(enabled="false") == ["W-2 hot"]
    assert await names(type="range") == [r["name"] for r in DEFAULT_RULES
                                          if r["type"] == "range"]
    assert await names(type="threshold", builtin="true") == [
        r["name"] for r in DEFAULT_RULES if r["type"] == "threshold"]
    refused = await admin.get("/rules", params={"type": "bogus"})
    assert refused.status_code == 422 and "type" in refused.json()["error"]["message"]
    # A key scoped to W-1 sees fleet-wide rules and W-1's, never another device's.
    scoped = api.client(key=await api.key("viewer", device_id="W-1"))
    assert await names(scoped) == [r["name"] for r in DEFAULT_RULES] + ["W-1 hot"]
    assert (await scoped.get(f"/rules/{mine[1]['id']}")).status_code == 404
    # A stored rule that stops validating is listed with the reason the engine skips it.
    await execute(db_url, "UPDATE rules SET definition = definition || '{\"op\": \"~\"}' "
                          "WHERE id = $1", mine[0]["id"])
    broken = (await admin.get(f"/rules/{mine[0]['id']}")).json()
    assert broken["problem"].startswith("op: ")
    assert (await admin.post(f"/rules/{mine[0]['id']}/test", json={})).status_code == 409


T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


async def store_motor_temps(db_url: str, device_id: str, temps: list[float]) -> None:
    """One reading a minute from T0, as the ingestor stores them."""
    await execute(db_url, "INSERT INTO devices (device_id) VALUES ($1)", device_id)
    await execute(db_url, "INSERT INTO metrics (name, unit) VALUES ('motor_temp', 'degC') "
                          "ON CONFLICT DO NOTHING")
    await execute(db_url, """
        INSERT INTO telemetry (time, device, metric, value)
        SELECT $2::timestamptz + make_interval(mins => (n - 1)::int), d.id, m.id, v
        FROM unnest($3::float8[]) WITH ORDINALITY AS t(v, n),
             devices d, metrics m WHERE d.device_id = $1 AND m.name = 'motor_temp'
        """, device_id, T0, temps)


async def test_backtest_returns_the_alert_with_its_times(api: Api, db_url: str) -> None:
    # W-1 runs hot from minute 10 to 14 and is back at 15; W-2 is hot for one minute only.
    await store_motor_temps(db_url, "W-1", [90.0] * 10 + [105.0] * 5 + [95.0] * 5)
    await store_motor_temps(db_url, "W-2", [90.0] * 10 + [105.0] + [90.0] * 9)
    erin = await api.user("engineer", "erin")
    rule_id = (await erin.post("/rules", json=HOT)).json()["id"]
    window = {"start": iso(T0), "end": iso(T0 + timedelta(minutes=30))}
    response = await erin.post(f"/rules/{rule_id}/test", json=window)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["rule"], result["start"], result["end"]) == \
        ("motor hot", window["start"], window["end"])
    [alert] = result["alerts"]  # W-2's minute never lasted the rule's two
    assert alert == {
        "device_id": "W-1", "severity": "critical",
        "active_since": iso(T0 + timedelta(minutes=10)),
        "fired_at": iso(T0 + timedelta(minutes=12)),
        "resolved_at": iso(T0 + timedelta(minutes=15)), "value": 95.0,
        "message": alert["message"]}
    # The same rule unsaved (an editor's draft), and with a shorter `for`, both wells.
    draft = await erin.post("/rules/test", json={**window, "rule": {**HOT, "for_seconds": 0}})
    assert draft.status_code == 200, draft.text
    assert sorted((a["device_id"], a["active_since"]) for a in draft.json()["alerts"]) == [
        ("W-1", iso(T0 + timedelta(minutes=10))), ("W-2", iso(T0 + timedelta(minutes=10)))]
    # A key scoped to W-2 may not backtest (rules:write is fleet-wide): a draft comparing
    # with another device would read that device's values.
    scoped = api.client(key=await api.key("engineer", device_id="W-2"))
    assert (await scoped.post("/rules/test", json={
        **window, "rule": {**HOT, "for_seconds": 0}})).status_code == 403
    # Nothing was written by a backtest.
    assert await fetchval(db_url, "SELECT count(*) FROM alerts") == 0
    assert (await erin.post(f"/rules/{rule_id}/test")).status_code == 200, "default window"

    for body, message in (
            ({"start": window["end"], "end": window["start"]}, "end: must be after start"),
            ({"start": iso(T0 - timedelta(days=8)), "end": iso(T0)},
             "end: a backtest spans at most 7 days"),
            ({"start": "2026-01-01T00:00:00"}, "body.start: Input should have timezone info")):
        refused = await erin.post(f"/rules/{rule_id}/test", json=body)
        assert refused.status_code == 422 and \
            refused.json()["error"]["message"].startswith(message), refused.text
    draft_bad = await erin.post("/rules/test", json={**window, "rule": {**HOT, "op": "=>"}})
    assert draft_bad.status_code == 422
    assert draft_bad.json()["error"]["message"].startswith("rule.op: ")
    assert (await erin.post("/rules/99999/test", json=window)).status_code == 404
    viewer = await api.user("viewer")
    assert (await viewer.post(f"/rules/{rule_id}/test", json=window)).status_code == 403


async def test_a_rule_from_each_wells_nameplate_through_the_pipeline(
        api: Api, broker: RunningBroker, ingestor: ServiceProcess,
        alerts_factory: Callable[..., ServiceProcess], db_url: str) -> None:
    """Devices with their motors' rated current set through the API, a rule at 115 % of
    it: the same 50 A overloads one motor and not another, and the device without a
    nameplate is skipped and listed in the rule's status."""
    for device_id, rated in (("W-40", 40), ("W-80", 80), ("W-none", None)):
        attributes = {} if rated is None else {"motor_rated_current": rated}
        created = await api.admin.post("/devices", json={"device_id": device_id,
                                                          "attributes": attributes})
        assert created.status_code == 201, created.text
    made = await api.admin.post("/rules", json={
        "type": "threshold", "name": "overload", "metric": "motor_current", "op": ">",
        "value": {"attribute": "motor_rated_current", "factor": 1.15},
        "severity": "critical"})
    assert made.status_code == 201, made.text
    assert made.json()["skipped"] == {"attributes": ["motor_rated_current"], "devices": 1,
                                      "examples": ["W-none"]}
    alerts_factory(INSA_ALERTS_TICK_SECONDS="0.2")
    for device_id in ("W-40", "W-80", "W-none"):
        device = connect_device(broker, device_id)
        device.publish(telemetry_topic(device_id), b'{"motor_current": 50}')
        device.close()
    rows = await wait_until(
        lambda: fetch(db_url, "SELECT device_id, message FROM alerts"), lambda r: len(r) >= 1,
        what="the overload alert")
    await asyncio.sleep(1)  # any other alert would have come by now
    rows = await fetch(db_url, "SELECT device_id, threshold FROM alerts")
    assert [(r["device_id"], r["threshold"]) for r in rows] == [
        ("W-40", "> 1.15 * motor_rated_current")]
    listed = (await api.admin.get("/rules")).json()["items"]
    assert [r["skipped"]["devices"] for r in listed if r["name"] == "overload"] == [1]


async def test_loading_the_defaults_disables_built_in_rules_of_an_earlier_set(
        db_url: str) -> None:
    await execute(db_url, "INSERT INTO rules (name, definition, builtin) VALUES "
                          "('ESP motor current out of range', $1, true), "
                          "('my own band', $1, false)",
                  '{"type": "range", "metric": "motor_current", "low": 30, "high": 70}')
    conn = await db.connect(db_url)
    try:
        written, kept = await load_defaults(conn)
        assert (written, kept) == (len(DEFAULT_RULES), 0)
        assert await load_defaults(conn) == (0, len(DEFAULT_RULES))  # again: nothing new
    finally:
        await conn.close()
    rows = await fetch(db_url, "SELECT name, enabled FROM rules WHERE name IN "
                               "('ESP motor current out of range', 'my own band')")
    assert {r["name"]: r["enabled"] for r in rows} == {
        "ESP motor current out of range": False, "my own band": True}
