"""The console's users page against the real API, PostgreSQL and Redis: a user created
through the form logs in to the console; role changes, disabling and deleting take effect
on their sessions at once; the API's rules (names, passwords, an admin never demoting,
disabling or deleting themself) show at their inputs; only admins get the page."""

from __future__ import annotations

import httpx

from tests.console.admin_pages import field_error, submit
from tests.fixtures.api import ADMIN_PASSWORD, PASSWORD, Api
from tests.utils.console import console_client
from tests.utils.db import fetch, fetchrow

USERS = "/console/users"


async def user_id(db_url: str, username: str) -> int:
    row = await fetchrow(db_url, "SELECT id FROM users WHERE username = $1", username)
    assert row is not None, f"no user {username}"
    return int(row["id"])


async def log_in(api: Api, username: str, password: str = PASSWORD) -> httpx.Response:
    client = httpx.AsyncClient(base_url=api.url)
    api._clients.append(client)
    return await client.post("/console/login", data={"username": username,
                                                     "password": password})


async def test_a_user_created_here_logs_in_with_their_role(api: Api, db_url: str) -> None:
    admin = await console_client(api, "admin", ADMIN_PASSWORD)
    created = await submit(admin, USERS, {"username": "ana", "password": PASSWORD,
                                          "role": "engineer"}, USERS)
    assert created.status_code == 303
    assert created.headers["location"] == "/console/users"
    listed = (await admin.get(created.headers["location"])).text
    assert "User ana created." in listed and PASSWORD not in listed
    assert "User ana created." not in (await admin.get(USERS)).text, "said once"

    ana = await console_client(api, "ana")
    fleet = (await ana.get("/console/")).text
    assert "ana <small>(engineer)</small>" in fleet
    assert 'href="/console/devices"' in fleet and 'href="/console/users"' not in fleet
    [event] = await fetch(db_url, "SELECT actor, detail ->> 'role' AS role FROM audit_log "
                                  "WHERE action = 'user.create' AND subject = 'ana'")
    assert (event["actor"], event["role"]) == ("user:admin", "engineer")


async def test_role_status_and_deletion_end_the_users_sessions(api: Api, db_url: str) -> None:
    await api.user("viewer", "bo")
    admin = await console_client(api, "admin", ADMIN_PASSWORD)
    bo_id = await user_id(db_url, "bo")
    bo = await console_client(api, "bo")

    changed = await submit(admin, f"{USERS}/{bo_id}/role", {"role": "operator"}, USERS)
    assert changed.headers["location"] == "/console/users"
    assert "Role of bo changed" in (await admin.get(USERS)).text
    assert (await bo.get("/console/")).status_code == 303, "bo's session ended"
    row = await fetchrow(db_url, "SELECT role FROM users WHERE id = $1", bo_id)
    assert row is not None and row["role"] == "operator"

    disabled = await submit(admin, f"{USERS}/{bo_id}/status", {"disabled": "true"}, USERS)
    assert disabled.headers["location"] == "/console/users"
    assert "bo disabled" in (await admin.get(USERS)).text
    assert (await log_in(api, "bo")).status_code == 401
    enabled = await submit(admin, f"{USERS}/{bo_id}/status", {"disabled": "false"}, USERS)
    assert enabled.headers["location"] == "/console/users"
    assert "bo enabled" in (await admin.get(USERS)).text
    assert (await log_in(api, "bo")).status_code == 303

    confirm = await admin.get(f"{USERS}/{bo_id}/delete")
    assert confirm.status_code == 200 and "Delete user bo" in confirm.text
    deleted = await submit(admin, f"{USERS}/{bo_id}/delete", {}, USERS)
    assert deleted.headers["location"] == "/console/users"
    assert "User bo deleted." in (await admin.get(USERS)).text
    assert await fetchrow(db_url, "SELECT 1 FROM users WHERE id = $1", bo_id) is None
    assert (await log_in(api, "bo")).status_code == 401
    assert (await admin.get(f"{USERS}/{bo_id}/delete")).status_code == 404
    events = await fetch(db_url, "SELECT action, detail FROM audit_log WHERE subject = 'bo' "
                                 "AND action LIKE 'user.%' ORDER BY id")
    assert [e["action"] for e in events] == ["user.create", "user.update", "user.update",
                                             "user.update", "user.delete"]


async def test_the_apis_rules_are_shown_at_their_inputs(api: Api, db_url: str) -> None:
    admin = await console_client(api, "admin", ADMIN_PASSWORD)

    async def create(status: int, **fields: str) -> str:
        answer = await submit(admin, USERS, {"username": "cy", "password": PASSWORD,
                                             "role": "viewer", **fields}, USERS)
        assert answer.status_code == status, answer.text
        return answer.text

    short = await create(422, password="short")
    assert "at least" in (field_error(short, "password") or "")
    assert 'value="cy"' in short and 'value="short"' not in short, "no password shown again"
    assert "pattern" in (field_error(await create(422, username="c y"), "username") or "")
    assert "platform's own" in (field_error(await create(422, username="insa-cy"),
                                            "username") or "")
    page = await create(422, role="root")
    assert "'admin', 'engineer', 'operator' or 'viewer'" in (field_error(page, "role") or "")
    await create(303)
    taken = field_error(await create(409, username="CY"), "username")
    assert taken == "user cy already exists; names differing only in case are refused"

    me = await user_id(db_url, "admin")
    demoted = await submit(admin, f"{USERS}/{me}/role", {"role": "viewer"}, USERS)
    assert demoted.status_code == 409
    assert field_error(demoted.text, "role") == "an admin may not disable or demote themself"
    disabled = await submit(admin, f"{USERS}/{me}/status", {"disabled": "true"}, USERS)
    assert disabled.status_code == 409
    assert "may not disable" in (field_error(disabled.text, "disabled") or "")
    deleted = await submit(admin, f"{USERS}/{me}/delete", {}, USERS)
    assert deleted.status_code == 409
    assert field_error(deleted.text, "delete") == "an admin may not delete themself"
    row = await fetchrow(db_url, "SELECT role, disabled FROM users WHERE id = $1", me)
    assert row is not None and (row["role"], row["disabled"]) == ("admin", False)
    assert (await admin.get(USERS)).status_code == 200, "still signed in"
    # The page offers no such controls for one's own row.
    assert f'action="/console/users/{me}/role"' not in (await admin.get(USERS)).text


async def test_only_admins_manage_users(api: Api, db_url: str) -> None:
    await api.user("engineer", "eng")
    engineer = await console_client(api, "eng")
    assert (await engineer.get(USERS)).status_code == 403
    eng_id = await user_id(db_url, "eng")
    refused = await submit(engineer, USERS, {"username": "mallory", "password": PASSWORD,
                                             "role": "admin"})
    assert refused.status_code == 403 and "may not users:manage" in refused.text
    promoted = await submit(engineer, f"{USERS}/{eng_id}/role", {"role": "admin"})
    assert promoted.status_code == 403
    assert await fetchrow(db_url, "SELECT 1 FROM users WHERE username = 'mallory'") is None
    row = await fetchrow(db_url, "SELECT role FROM users WHERE id = $1", eng_id)
    assert row is not None and row["role"] == "engineer"
    missing = await (await console_client(api, "admin", ADMIN_PASSWORD)).get(
        f"{USERS}/999999/delete")
    assert missing.status_code == 404 and "user 999999 does not exist" in missing.text
