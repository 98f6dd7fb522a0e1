"""The console's devices page against the real API, PostgreSQL, Redis and broker: a device
registered through the form with credentials that connect (shown once), rotated (the old
password refused, the new one accepted), revoked, deleted after a confirmation; the edit
form with the API's refusals at their inputs; and who may do any of it."""

from __future__ import annotations

import json

from tests.console.admin_pages import connects, field_error, shown_secret, submit
from tests.fixtures.api import ADMIN_PASSWORD, Api
from tests.utils.console import console_client
from tests.utils.db import fetch, fetchrow
from tests.utils.mqtt_client import Clients

REGISTER = "/console/devices/register"


async def audit_actions(db_url: str, subject: str) -> list[tuple[str, str]]:
    rows = await fetch(db_url, "SELECT actor, action FROM audit_log WHERE subject = $1 "
                               "AND action LIKE 'device.%' ORDER BY id", subject)
    return [(r["actor"], r["action"]) for r in rows]


async def test_register_and_provision_through_the_form(api: Api, clients: Clients,
                                                       db_url: str) -> None:
    await api.user("engineer", "eng")
    client = await console_client(api, "eng")
    answer = await submit(client, REGISTER, {
        "device_id": "W-11", "name": "Well 11, pad 3", "device_type": "esp",
        "tags": "field=north, pad-3", "metadata": '{"site": "North"}',
        "attributes.motor_rated_current": "42.5", "attributes.vsd_max_hz": "60",
        "provision": "on"}, REGISTER)
    assert answer.status_code == 201, answer.text
    assert answer.headers["cache-control"] == "no-store"
    password = shown_secret(answer.text)
    assert "shown this once" in answer.text and len(password) >= 24
    assert connects(clients, "W-11", password), "the shown credentials connect"

    row = await fetchrow(db_url, "SELECT name, device_type, metadata FROM devices "
                                 "WHERE device_id = 'W-11'")
    assert row is not None and row["name"] == "Well 11, pad 3"
    assert json.loads(row["metadata"]) == {
        "site": "North", "tags": ["field=north", "pad-3"],
        "attributes": {"motor_rated_current": 42.5, "vsd_max_hz": 60.0}}
    assert await audit_actions(db_url, "W-11") == [
        ("user:eng", "device.create"), ("user:eng", "device.credentials.provision")]

    # The password is on no later page.
    page = await client.get("/console/devices/W-11/edit")
    assert page.status_code == 200 and password not in page.text
    assert 'name="attributes.motor_rated_current" type="number" step="any" ' \
           'inputmode="decimal" value="42.5"' in page.text
    listed = await client.get("/console/devices", params={"q": "W-1"})
    assert "/console/devices/W-11/edit" in listed.text and password not in listed.text
    assert "W-11" not in (await client.get("/console/devices", params={"q": "X"})).text


async def test_rotate_then_revoke_with_confirmation(api: Api, clients: Clients,
                                                    db_url: str) -> None:
    client = await console_client(api, "admin", ADMIN_PASSWORD)
    first = shown_secret((await submit(client, REGISTER, {
        "device_id": "W-12", "provision": "on"}, REGISTER)).text)
    assert connects(clients, "W-12", first)

    confirm = await client.get("/console/devices/W-12/credentials")
    assert confirm.status_code == 200 and "stops working at once" in confirm.text
    rotated = await submit(client, "/console/devices/W-12/credentials", {},
                           "/console/devices/W-12/credentials")
    assert rotated.status_code == 200 and rotated.headers["cache-control"] == "no-store"
    second = shown_secret(rotated.text)
    assert second != first
    assert not connects(clients, "W-12", first), "the old password is refused"
    assert connects(clients, "W-12", second), "the new one works"

    assert "Revoke credentials" in (await client.get("/console/devices/W-12/revoke")).text
    revoked = await submit(client, "/console/devices/W-12/revoke", {},
                           "/console/devices/W-12/revoke")
    assert revoked.status_code == 303
    assert revoked.headers["location"] == "/console/devices/W-12/edit"
    assert "Credentials revoked" in (await client.get(revoked.headers["location"])).text
    assert not connects(clients, "W-12", second), "revoked: no connection at all"
    assert [a for _, a in await audit_actions(db_url, "W-12")] == [
        "device.create", "device.credentials.provision", "device.credentials.rotate",
        "device.credentials.revoke"]


async def test_delete_after_confirmation(api: Api, clients: Clients, db_url: str) -> None:
    client = await console_client(api, "admin", ADMIN_PASSWORD)
    password = shown_secret((await submit(client, REGISTER, {
        "device_id": "W-13", "provision": "on"}, REGISTER)).text)
    confirm = await client.get("/console/devices/W-13/delete")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.text
    assert await fetchrow(db_url, "SELECT 1 FROM devices WHERE device_id = 'W-13'")

    deleted = await submit(client, "/console/devices/W-13/delete", {},
                           "/console/devices/W-13/delete")
    assert deleted.status_code == 303
    assert deleted.headers["location"] == "/console/devices"
    assert "Device W-13 deleted" in (await client.get(deleted.headers["location"])).text
    assert await fetchrow(db_url, "SELECT 1 FROM devices WHERE device_id = 'W-13'") is None
    assert not connects(clients, "W-13", password)
    assert ("user:admin", "device.delete") in await audit_actions(db_url, "W-13")
    gone = await client.get("/console/devices/W-13/edit")
    assert gone.status_code == 404 and "W-13 does not exist" in gone.text


async def test_the_apis_refusals_are_shown_at_their_inputs(api: Api, db_url: str) -> None:
    client = await console_client(api, "admin", ADMIN_PASSWORD)
    registered = await submit(client, REGISTER, {"device_id": "W-14", "name": "Fourteen"},
                              REGISTER)
    assert registered.status_code == 303, registered.text
    assert registered.headers["location"] == "/console/devices/W-14/edit"
    edit = "/console/devices/W-14/edit"

    async def refused(data: dict[str, str], status: int = 422) -> str:
        answer = await submit(client, edit, {"name": "Changed", **data}, edit)
        assert answer.status_code == status, answer.text
        return answer.text

    page = await refused({"attributes.motor_rated_current": "lots"})
    assert "valid number" in (field_error(page, "attributes.motor_rated_current") or "")
    assert 'value="lots"' in page, "what was typed is shown again"
    page = await refused({"attributes.motor_max_temp": "900"})
    assert "less than or equal to 400" in (field_error(page, "attributes.motor_max_temp")
                                           or "")
    page = await refused({"attributes.vsd_min_hz": "60", "attributes.vsd_max_hz": "50"})
    assert field_error(page, "attributes") == "vsd_min_hz must be below vsd_max_hz"
    both = await refused({"metadata": "{site", "attributes.setting_depth": "-1"})
    assert "not JSON" in (field_error(both, "metadata") or "")
    assert "greater than 0" in (field_error(both, "attributes.setting_depth") or ""), \
        "every mistake of one submission is shown"
    assert "valid dictionary" in (field_error(await refused({"metadata": "[1]"}), "metadata")
                                  or "")
    reserved = field_error(await refused({"metadata": '{"tags": []}'}), "metadata")
    assert reserved and "may not be set here" in reserved
    assert "pattern" in (field_error(await refused({"tags": "ok bad!tag"}), "tags") or "")
    row = await fetchrow(db_url, "SELECT name FROM devices WHERE device_id = 'W-14'")
    assert row is not None and row["name"] == "Fourteen", "nothing refused was stored"

    saved = await submit(client, edit, {"name": "", "device_type": "pcp", "tags": "a=1",
                                        "attributes.pump_min_flow": "100",
                                        "attributes.pump_max_flow": "2000",
                                        "metadata": '{"site": "South"}'}, edit)
    assert saved.status_code == 303 and saved.headers["location"] == edit
    row = await fetchrow(db_url, "SELECT name, device_type, metadata FROM devices "
                                 "WHERE device_id = 'W-14'")
    assert row is not None and row["name"] is None and row["device_type"] == "pcp"
    assert json.loads(row["metadata"]) == {
        "site": "South", "tags": ["a=1"],
        "attributes": {"pump_min_flow": 100.0, "pump_max_flow": 2000.0}}

    async def register(data: dict[str, str], status: int) -> str:
        answer = await submit(client, REGISTER, data, REGISTER)
        assert answer.status_code == status, answer.text
        return answer.text

    taken = field_error(await register({"device_id": "W-14"}, 409), "device_id")
    assert taken == "device W-14 already exists"
    assert "pattern" in (field_error(await register({"device_id": "W 15"}, 422),
                                     "device_id") or "")
    assert "reserved" in (field_error(await register({"device_id": "insa-x"}, 422),
                                      "device_id") or "")
    assert await fetchrow(db_url, "SELECT 1 FROM devices WHERE device_id IN "
                                  "('W 15', 'insa-x')") is None


async def test_only_engineers_and_admins_manage_devices(api: Api, db_url: str) -> None:
    await api.user("engineer", "eng")
    engineer = await console_client(api, "eng")
    fleet = (await engineer.get("/console/")).text
    assert 'href="/console/devices"' in fleet
    for hidden in ("/console/users", "/console/api-keys", "/console/audit"):
        assert f'href="{hidden}"' not in fleet
    assert (await engineer.get("/console/devices")).status_code == 200

    for role in ("viewer", "operator"):
        await api.user(role, role)
        client = await console_client(api, role)
        assert 'href="/console/devices"' not in (await client.get("/console/")).text
        page = await client.get("/console/devices")
        assert page.status_code == 403 and "may not devices:write" in page.text
        assert (await client.get(REGISTER)).status_code == 403
        posted = await submit(client, REGISTER, {"device_id": f"X-{role}", "provision": "on"})
        assert posted.status_code == 403
        assert (await submit(client, "/console/devices/W-1/delete", {})).status_code == 403
    assert await fetchrow(db_url, "SELECT 1 FROM devices") is None, "nothing was created"
    denied = await fetch(db_url, "SELECT actor FROM audit_log WHERE action = "
                                 "'permission.denied' AND detail ->> 'method' = 'POST'")
    assert {r["actor"] for r in denied} == {"user:viewer", "user:operator"}
    missing = await engineer.get("/console/devices/nope/edit")
    assert missing.status_code == 404 and "device nope does not exist" in missing.text
