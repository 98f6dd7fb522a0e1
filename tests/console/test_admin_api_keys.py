"""The console's API keys page against the real API: a key made through the form is shown
once and authenticates against the API, until it is revoked through the page; the API's
rules at their inputs; only admins get the page."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.console.admin_pages import field_error, shown_secret, submit
from tests.fixtures.api import ADMIN_PASSWORD, Api
from tests.utils.console import console_client
from tests.utils.db import execute, fetch, fetchrow

KEYS = "/console/api-keys"


async def test_a_key_made_here_works_until_revoked_here(api: Api, db_url: str) -> None:
    admin = await console_client(api, "admin", ADMIN_PASSWORD)
    created = await submit(admin, KEYS, {"name": "historian", "role": "viewer",
                                         "device_id": "", "expires_at": ""}, KEYS)
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    key = shown_secret(created.text)
    assert key.startswith("insa_") and "shown this once" in created.text

    machine = api.client(key=key)
    assert (await machine.get("/devices")).status_code == 200, "the key authenticates"
    assert (await machine.post("/devices", json={"device_id": "X-1"})).status_code == 403

    listed = (await admin.get(KEYS)).text
    prefix = key.split("_")[1]
    assert f"insa_{prefix}_…" in listed and key not in listed, "never shown again"
    row = await fetchrow(db_url, "SELECT id FROM api_keys WHERE prefix = $1", prefix)
    assert row is not None
    confirm = await admin.get(f"{KEYS}/{row['id']}/revoke")
    assert confirm.status_code == 200 and "stops working at once" in confirm.text
    revoked = await submit(admin, f"{KEYS}/{row['id']}/revoke", {}, KEYS)
    assert revoked.status_code == 303 and revoked.headers["location"] == KEYS
    assert (await machine.get("/devices")).status_code == 401, "revoked: refused"
    page = (await admin.get(revoked.headers["location"])).text
    assert f"({prefix}) revoked" in page and f"/console/api-keys/{row['id']}/revoke" \
        not in page, "a revoked key offers no revoke"
    events = await fetch(db_url, "SELECT actor, action FROM audit_log WHERE subject = $1 "
                                 "AND action LIKE 'api_key.%' ORDER BY id", prefix)
    assert [(e["actor"], e["action"]) for e in events] == [
        ("user:admin", "api_key.create"), ("user:admin", "api_key.revoke")]


async def test_a_key_scoped_to_a_device_with_an_expiry(api: Api, db_url: str) -> None:
    await execute(db_url, "INSERT INTO devices (device_id) VALUES ('W-21'), ('W-22')")
    admin = await console_client(api, "admin", ADMIN_PASSWORD)
    created = await submit(admin, KEYS, {"name": "W-21 dashboard", "role": "viewer",
                                         "device_id": "W-21",
                                         "expires_at": "2031-03-04T05:06:07"}, KEYS)
    assert created.status_code == 201, created.text
    assert "2031-03-04 05:06:07 UTC" in created.text
    key = shown_secret(created.text)
    row = await fetchrow(db_url, "SELECT role, device_id, expires_at FROM api_keys "
                                 "WHERE prefix = $1", key.split("_")[1])
    assert row is not None and (row["role"], row["device_id"]) == ("viewer", "W-21")
    assert row["expires_at"] == datetime(2031, 3, 4, 5, 6, 7, tzinfo=UTC), "read as UTC"
    scoped = api.client(key=key)
    assert (await scoped.get("/devices/W-21")).status_code == 200
    assert (await scoped.get("/devices/W-22")).status_code == 404, "scoped to W-21"


async def test_the_apis_rules_are_shown_at_their_inputs(api: Api, db_url: str) -> None:
    admin = await console_client(api, "admin", ADMIN_PASSWORD)

    async def refused(**fields: str) -> str:
        answer = await submit(admin, KEYS, {"name": "k", "role": "viewer", **fields}, KEYS)
        assert answer.status_code == 422, answer.text
        return answer.text

    no_device = await refused(role="device")
    assert field_error(no_device, "device_id") == "a device key needs device_id"
    assert 'value="k"' in no_device, "what was typed is shown again"
    assert field_error(await refused(device_id="W-404"), "device_id") == \
        "W-404 does not exist"
    assert "at least 1" in (field_error(await refused(name=""), "name") or "")
    assert "datetime" in (field_error(await refused(expires_at="soon"), "expires_at") or "")
    assert await fetchrow(db_url, "SELECT 1 FROM api_keys WHERE name = 'k'") is None


async def test_only_admins_manage_keys(api: Api, db_url: str) -> None:
    await api.user("engineer", "eng")
    engineer = await console_client(api, "eng")
    assert (await engineer.get(KEYS)).status_code == 403
    refused = await submit(engineer, KEYS, {"name": "mine", "role": "admin"})
    assert refused.status_code == 403 and "may not keys:manage" in refused.text
    assert await fetchrow(db_url, "SELECT 1 FROM api_keys WHERE name = 'mine'") is None
    key = await api.key("viewer")
    prefix = key.split("_")[1]
    row = await fetchrow(db_url, "SELECT id FROM api_keys WHERE prefix = $1", prefix)
    assert row is not None
    assert (await submit(engineer, f"{KEYS}/{row['id']}/revoke", {})).status_code == 403
    assert (await api.client(key=key).get("/devices")).status_code == 200, "not revoked"
    admin = await console_client(api, "admin", ADMIN_PASSWORD)
    missing = await submit(admin, f"{KEYS}/999999/revoke", {}, KEYS)
    assert missing.status_code == 404 and "API key 999999 does not exist" in missing.text
