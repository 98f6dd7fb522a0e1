"""Authentication: passwords, tokens and their rotation, API keys, brute-force limits,
and the audit rows each leaves."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import orjson
import pytest

from services.api import audit
from services.api.deps import authenticate, still_valid
from services.api.security.tokens import AUDIENCE, ISSUER
from tests.fixtures.api import ADMIN_PASSWORD, PASSWORD, REUSE_GRACE, Api
from tests.utils.db import fetch


async def audit_rows(db_url: str, action: str) -> list[Any]:
    return await fetch(db_url, "SELECT actor, subject, outcome, detail FROM audit_log "
                               "WHERE action = $1 ORDER BY id", action)


async def test_login_me_and_the_audit_trail(api: Api, db_url: str) -> None:
    await api.user("operator", "ana")
    tokens = await api.login("ana")
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 900
    me = await api.client(tokens["access_token"]).get("/auth/me")
    assert me.json() == {"kind": "user", "id": me.json()["id"], "name": "ana",
                         "role": "operator", "device_id": None}
    for username, password in (("ana", "wrong-password-here"), ("nobody", PASSWORD)):
        refused = await api.client().post("/auth/login", json={"username": username,
                                                                "password": password})
        assert refused.status_code == 401
        assert refused.json()["error"] == {"code": "unauthorized",
                                           "message": "wrong username or password"}
    logins = await audit_rows(db_url, "auth.login")
    assert [(r["subject"], r["outcome"]) for r in logins] == [
        ("admin", "success"), ("ana", "success"), ("ana", "success"), ("ana", "failure"),
        ("nobody", "failure")]
    assert [r["subject"] for r in await audit_rows(db_url, "user.create")] == ["admin", "ana"]


async def test_passwords_and_keys_are_never_stored_in_clear(api: Api, db_url: str) -> None:
    await api.user("viewer", "vic")
    key = await api.key("viewer")
    [row] = await fetch(db_url, "SELECT password_hash FROM users WHERE username = 'vic'")
    assert row["password_hash"].startswith("$argon2id$") and PASSWORD not in row["password_hash"]
    [stored] = await fetch(db_url, "SELECT * FROM api_keys")
    assert key not in str(dict(stored)) and key.split("_")[2] not in str(dict(stored))
    assert (await api.client(key=key).get("/auth/me")).json()["role"] == "viewer"
    listed = (await api.admin.get("/api-keys")).json()
    assert "key" not in listed[0] and listed[0]["prefix"] == key.split("_")[1]


async def test_refresh_rotates_and_reuse_revokes_the_family(api: Api, db_url: str) -> None:
    await api.user("engineer", "eve")
    first = await api.login("eve")
    anon = api.client()
    second = (await anon.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}))
    assert second.status_code == 200
    second_tokens = second.json()
    assert (await api.client(second_tokens["access_token"]).get("/auth/me")).status_code == 200
    # The first refresh token again at once: a race (two tabs, a retry), not a replay.
    race = await anon.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert race.status_code == 409
    # Later: a replay. Refused, and the whole login is revoked.
    await asyncio.sleep(REUSE_GRACE + 0.2)
    replay = await anon.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401 and "reused" in replay.json()["error"]["message"]
    after = await anon.post("/auth/refresh", json={"refresh_token": second_tokens["refresh_token"]})
    assert after.status_code == 401
    outcomes = [r["outcome"] for r in await audit_rows(db_url, "auth.refresh")]
    assert outcomes == ["success", "failure", "failure", "failure"]


async def test_logout_revokes_the_refresh_token(api: Api, db_url: str) -> None:
    await api.user("viewer", "val")
    tokens = await api.login("val")
    client = api.client(tokens["access_token"])
    other = await api.login("admin", ADMIN_PASSWORD)
    assert (await client.post("/auth/logout", json={"refresh_token": other["refresh_token"]})
            ).status_code == 403, "one may not log another out"
    assert (await client.post("/auth/logout", json={"refresh_token": tokens["refresh_token"]})
            ).status_code == 204
    assert (await api.client().post("/auth/refresh", json={
        "refresh_token": tokens["refresh_token"]})).status_code == 401
    assert [r["subject"] for r in await audit_rows(db_url, "auth.logout")] == ["val"]


def forged(api: Api, key: str | None = None, algorithm: str = "HS256",
           **claims: Any) -> str:
    now = int(time.time())
    # The admin's account version, from its own token: without it no token is good.
    admin = api.admin.headers["Authorization"].removeprefix("Bearer ")
    version = jwt.decode(admin, options={"verify_signature": False})["ver"]
    return jwt.encode({"sub": "1", "name": "admin", "role": "admin", "typ": "access",
                       "jti": "x", "iss": ISSUER, "aud": AUDIENCE, "iat": now,
                       "exp": now + 600, "ver": version, **claims},
                      key if key is not None else
                      api.settings.jwt_secret.get_secret_value(),  # type: ignore[union-attr]
                      algorithm=algorithm)


@pytest.mark.parametrize("attack", ["expired", "tampered", "alg_none", "wrong_key", "hs512",
                                    "refresh_as_access", "garbage"])
async def test_token_attacks_are_refused(api: Api, attack: str) -> None:
    valid = forged(api)
    assert (await api.client(valid).get("/auth/me")).status_code == 200
    header, _, signature = valid.split(".")
    token = {
        "expired": lambda: forged(api, exp=int(time.time()) - 5),
        "tampered": lambda: ".".join([header, forged(api, role="viewer").split(".")[1],
                                      signature]),
        "alg_none": lambda: jwt.encode(jwt.decode(valid, options={"verify_signature": False}),
                                       None, algorithm="none"),  # type: ignore[arg-type]
        "wrong_key": lambda: forged(api, key="another-key-of-sufficient-length-" + "0" * 64),
        "hs512": lambda: forged(api, algorithm="HS512"),
        "refresh_as_access": lambda: forged(api, typ="refresh"),
        "garbage": lambda: "not.a.token",
    }[attack]()
    refused = await api.client(token).get("/auth/me")
    assert refused.status_code == 401, attack
    assert refused.json()["error"]["code"] == "unauthorized"
    assert refused.headers["WWW-Authenticate"] == "Bearer"


async def test_a_disabled_user_is_out_at_once(api: Api) -> None:
    client = await api.user("operator", "olga")
    users = {u["username"]: u["id"] for u in (await api.admin.get("/users")).json()}
    assert (await api.admin.patch(f"/users/{users['olga']}", json={"disabled": True})
            ).status_code == 200
    assert (await client.get("/auth/me")).status_code == 401


async def test_login_brute_force_gets_429_with_retry_after(api: Api, db_url: str) -> None:
    await api.user("viewer", "target")
    anon = api.client()
    for _ in range(api.settings.login_attempts_per_minute):
        assert (await anon.post("/auth/login", json={"username": "target", "password": "guess"})
                ).status_code == 401
    blocked = await anon.post("/auth/login", json={"username": "target", "password": PASSWORD})
    assert blocked.status_code == 429, "even the right password waits out the window"
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert blocked.json()["error"]["code"] == "rate_limited"
    # Another account from the same client is not locked by this one's failures.
    assert (await anon.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
            ).status_code == 200


async def test_a_forged_forwarded_for_neither_escapes_the_limit_nor_the_audit(
        api: Api, db_url: str) -> None:
    # No proxy is configured: X-Forwarded-For, even from 127.0.0.1, names nobody.
    await api.user("viewer", "target2")
    anon = api.client()
    codes = [(await anon.post("/auth/login", json={"username": "target2", "password": "guess"},
                              headers={"X-Forwarded-For": f"203.0.113.{n}"})).status_code
             for n in range(api.settings.login_attempts_per_minute + 1)]
    assert codes == [401] * api.settings.login_attempts_per_minute + [429]
    failures = [r for r in await audit_rows(db_url, "auth.login") if r["subject"] == "target2"]
    assert {orjson.loads(r["detail"])["client"] for r in failures} == {"127.0.0.1"}


async def test_api_keys_revoked_expired_and_brute_force(api: Api, db_url: str) -> None:
    key = await api.key("viewer")
    expired = await api.key("viewer", expires_at="2020-01-01T00:00:00Z")
    assert (await api.client(key=expired).get("/auth/me")).status_code == 401
    [row] = [k for k in (await api.admin.get("/api-keys")).json() if k["prefix"] in key]
    assert (await api.admin.delete(f"/api-keys/{row['id']}")).status_code == 204
    assert (await api.client(key=key).get("/auth/me")).status_code == 401
    guesses = api.settings.key_failures_per_minute - 2
    for n in range(guesses):
        assert (await api.client(key=f"insa_{n:016d}_guess").get("/auth/me")).status_code == 401
    limited = await api.client(key="insa_0000000000000000_more").get("/auth/me")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    failures = await audit_rows(db_url, "auth.api_key")
    assert len(failures) == api.settings.key_failures_per_minute
    assert {r["outcome"] for r in failures} == {"failure"}
    assert [r["subject"] for r in await audit_rows(db_url, "api_key.revoke")] == [row["prefix"]]


async def test_parallel_guesses_cannot_outrun_the_login_limit(api: Api) -> None:
    """Each try is counted before the slow password check, so guesses sent together do
    not all pass one check."""
    await api.user("viewer", "rush")
    anon = api.client()
    answers = await asyncio.gather(*(anon.post("/auth/login", json={
        "username": "rush", "password": f"guess-{n}"}) for n in range(20)))
    codes = sorted(a.status_code for a in answers)
    assert codes.count(401) == api.settings.login_attempts_per_minute
    assert codes.count(429) == 20 - api.settings.login_attempts_per_minute


async def report_refusals(api: Api) -> None:
    """What the API's upkeep job does each minute: the refusals counted in Redis become
    audit rows (run here at once rather than waited for)."""
    res = api.app.state.resources
    await audit.report_refusals(res.pool, res.limiter)


def details(rows: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r["detail"]) for r in rows]


def refusals(rows: list[Any]) -> tuple[int, list[dict[str, Any]]]:
    """The rows' refusals summed up (one row a minute: the job may also have reported
    some), and what the reports said besides the count, each once."""
    reports = [d for d in details(rows) if d["reason"] == "rate_limited"]
    total = sum(d.pop("refused") for d in reports)
    return total, [d for n, d in enumerate(reports) if d not in reports[:n]]


@pytest.mark.parametrize("api_overrides", [{"account_login_failures": 3}], ids=["3/account"])
async def test_an_account_is_limited_whichever_address_guesses(api: Api, db_url: str) -> None:
    """Guesses spread over addresses (every one of 127/8 is this host's) stay under each
    address's limits but not under the account's; the right password is then refused
    too, so a guess can never be confirmed while the account is limited."""
    await api.user("viewer", "acct")
    limit = api.settings.account_login_failures
    for n in range(limit):
        guess = await api.client(address=f"127.0.0.{n + 2}").post(
            "/auth/login", json={"username": "acct", "password": f"guess-{n}"})
        assert guess.status_code == 401
    elsewhere = api.client(address="127.0.0.99")
    for password in (PASSWORD, "guess-again"):
        refused = await elsewhere.post("/auth/login", json={"username": "acct",
                                                             "password": password})
        assert refused.status_code == 429, password
        assert 1 <= int(refused.headers["Retry-After"]) <= api.settings.account_login_window_seconds
    # Another account from the same addresses is not limited by this one's failures.
    assert (await elsewhere.post("/auth/login", json={"username": "admin",
                                                      "password": ADMIN_PASSWORD})
            ).status_code == 200
    await report_refusals(api)
    rows = [r for r in await audit_rows(db_url, "auth.login")
            if r["subject"] == "acct" and r["outcome"] == "failure"]
    assert [d["reason"] for d in details(rows)][:limit + 1] == \
        ["bad credentials"] * limit + ["rate_limited"]
    assert refusals(rows) == (2, [{"reason": "rate_limited", "limit": "account"}])


async def test_parallel_bad_keys_and_refresh_tokens_are_limited_and_counted(
        api: Api, db_url: str) -> None:
    """Each try is counted before it is judged, so a burst cannot outrun the limit; the
    refusals over it are reported as a count (a row a minute), not written one by one."""
    keys = await asyncio.gather(*(api.client(key=f"insa_{n:016d}_guess").get("/auth/me")
                                  for n in range(60)))
    limit = api.settings.key_failures_per_minute
    assert sorted(r.status_code for r in keys) == [401] * limit + [429] * (60 - limit)
    anon = api.client()
    refreshes = await asyncio.gather(*(anon.post("/auth/refresh", json={
        "refresh_token": f"not.a.token{n}"}) for n in range(20)))
    refresh_limit = api.settings.refresh_failures_per_minute
    assert sorted(r.status_code for r in refreshes) == \
        [401] * refresh_limit + [429] * (20 - refresh_limit)
    await report_refusals(api)
    for action, failed, refused in (("auth.api_key", limit, 60 - limit),
                                    ("auth.refresh", refresh_limit, 20 - refresh_limit)):
        rows = await audit_rows(db_url, action)
        assert len([d for d in details(rows) if d["reason"] != "rate_limited"]) == failed
        limit_name = action.removeprefix("auth.")
        assert refusals(rows) == (refused, [{"reason": "rate_limited", "limit": limit_name,
                                             "client": "127.0.0.1"}])


async def test_a_change_ends_tokens_issued_before_it_within_the_same_second(
        api: Api, db_url: str) -> None:
    """Revocation compares the account's version, not issue times in whole seconds: a
    token from just before a change is refused, one from just after is good, and a live
    feed opened before it ends. The change is audited from and to."""
    res = api.app.state.resources
    await api.user("viewer", "sam")
    users = {u["username"]: u["id"] for u in (await api.admin.get("/users")).json()}
    await asyncio.sleep(1.02 - time.time() % 1)  # at a second's start: what follows shares it
    before = await api.login("sam")
    following = await authenticate(res, "127.0.0.1", before["access_token"], None)
    assert (await api.admin.patch(f"/users/{users['sam']}", json={"role": "operator"})
            ).status_code == 200
    after = await api.login("sam")
    assert (await api.client(before["access_token"]).get("/auth/me")).status_code == 401
    assert (await api.client(after["access_token"]).get("/auth/me")).json()["role"] == "operator"
    assert not await still_valid(res, following)
    assert await still_valid(res, await authenticate(res, "127.0.0.1", after["access_token"],
                                                     None))
    [update] = await audit_rows(db_url, "user.update")
    assert orjson.loads(update["detail"]) == {"changed": ["role"],
                                              "role": {"from": "viewer", "to": "operator"}}


async def test_user_names_that_differ_only_in_case_or_take_the_platform_prefix_are_refused(
        api: Api) -> None:
    for username, status in (("ADMIN", 409), ("Admin", 409), ("insa-api", 422),
                             ("INSA-api", 422), ("Insa-Ingestor", 422)):
        refused = await api.admin.post("/users", json={"username": username,
                                                       "password": PASSWORD,
                                                       "role": "admin"})
        assert refused.status_code == status, username
    assert (await api.admin.post("/users", json={"username": "insa.ops", "password": PASSWORD,
                                                 "role": "viewer"})).status_code == 201
