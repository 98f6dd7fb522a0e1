"""Database side of the alert engine: rules, the device catalog, open alerts and their
transitions, evaluation progress, and the people's acknowledge, resolve, shelve and
unshelve. The alerts service writes the engine's transitions through it, the API the
people's changes, and the backtest reads the device catalog through it.

Concurrency: a transition is written only if the row is still in the state the engine
saw (`WHERE state = before`), and a new alert only if none is open for its (rule,
device) (the partial unique index). Otherwise another replica or a person got there
first: the transition is dropped and the engine adopts the stored row instead, so two
replicas never raise one condition twice. The same refusal keeps a shelf that an engine
has not heard of yet (its notification lost with a connection): a re-notify or an
escalation of a shelved row is refused, and the engine adopts the row with its shelf.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from shared.alerting.evaluation import (
    AlertState,
    Device,
    Key,
    OpenAlert,
    Transition,
    TransitionKind,
)
from shared.alerting.rules import Rule, parse_rule
from shared.errors import Conflict, NotFound, ValidationFailed

log = structlog.get_logger(__name__)
ENGINE = "engine"
CHANGED_CHANNEL = "insa_alerts"  # manual changes, so engines re-read the alert


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _ts(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


# --- loading -------------------------------------------------------------------------------
async def load_rules(conn: asyncpg.Connection) -> dict[int, Rule]:
    """Enabled rules that validate; a stored rule that no longer does is skipped, loudly."""
    rules: dict[int, Rule] = {}
    for row in await conn.fetch("SELECT id, name, definition FROM rules WHERE enabled"):
        try:
            rules[row["id"]] = parse_rule({**row["definition"], "name": row["name"]})
        except ValidationFailed as exc:
            log.error("stored rule does not validate; skipped", rule_id=row["id"],
                      rule=row["name"], error=exc.message)
    return rules


async def load_devices(conn: asyncpg.Connection, device_ids: list[str] | None = None
                       ) -> dict[str, Device]:
    rows = await conn.fetch(
        """
        SELECT device_id, device_type, metadata -> 'tags' AS tags,
               metadata -> 'attributes' AS attributes FROM devices
        WHERE $1::text[] IS NULL OR device_id = ANY($1::text[])
        """, device_ids)
    return {row["device_id"]: Device(row["device_type"], _tags(row["tags"]),
                                     _attributes(row["attributes"])) for row in rows}


def _attributes(raw: Any) -> dict[str, float]:
    """The numeric attributes (the API validated them; anything else is not used)."""
    if not isinstance(raw, dict):
        return {}
    return {str(k): float(v) for k, v in raw.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def _tags(raw: Any) -> frozenset[str]:
    return frozenset(str(t) for t in raw) if isinstance(raw, list) else frozenset()


async def latest_values(conn: asyncpg.Connection, device_ids: list[str] | None = None
                        ) -> list[asyncpg.Record]:
    """(device_id, metric, ts, value): the newest numeric value of each series."""
    return await conn.fetch(
        """
        SELECT d.device_id, m.name AS metric, l.time, l.value
        FROM telemetry_latest l JOIN devices d ON d.id = l.device
        JOIN metrics m ON m.id = l.metric
        WHERE l.value IS NOT NULL AND ($1::text[] IS NULL OR d.device_id = ANY($1::text[]))
        """, device_ids)


async def history(conn: asyncpg.Connection, device_id: str, metrics: list[str],
                  since: float, until: float) -> list[asyncpg.Record]:
    """Stored values of some metrics of one device in [since, until), oldest first."""
    return await conn.fetch(
        """
        SELECT m.name AS metric, t.time, t.value
        FROM telemetry t JOIN devices d ON d.id = t.device JOIN metrics m ON m.id = t.metric
        WHERE d.device_id = $1 AND m.name = ANY($2::text[]) AND t.time >= $3 AND t.time < $4
        ORDER BY t.time
        """, device_id, metrics, _at(since), _at(until))


async def load_progress(conn: asyncpg.Connection) -> dict[tuple[str, str], float]:
    rows = await conn.fetch("SELECT device_id, source, last_ts FROM alerts_progress")
    return {(r["device_id"], r["source"]): r["last_ts"].timestamp() for r in rows}


async def open_alerts(conn: asyncpg.Connection, keys: Iterable[Key] | None = None
                      ) -> dict[Key, OpenAlert]:
    wanted = None if keys is None else list(keys)
    rows = await conn.fetch(
        """
        SELECT * FROM alerts WHERE state <> 'resolved'
        AND ($1::bigint[] IS NULL OR (rule_id, device_id) IN
             (SELECT * FROM unnest($1::bigint[], $2::text[])))
        """, None if wanted is None else [k[0] for k in wanted],
        None if wanted is None else [k[1] for k in wanted])
    return {(r["rule_id"], r["device_id"]): _open_alert(r) for r in rows}


def _open_alert(row: asyncpg.Record) -> OpenAlert:
    return OpenAlert(row["rule_id"], row["device_id"], row["state"], row["severity"],
                     row["active_since"].timestamp(), row["fire_at"].timestamp(),
                     value=row["value"], fired_at=_ts(row["fired_at"]),
                     last_notified_at=_ts(row["last_notified_at"]),
                     escalated=row["escalated_at"] is not None, id=row["id"],
                     shelved_until=_ts(row["shelved_until"]))


# --- the engine's transitions -------------------------------------------------------------
async def commit(conn: asyncpg.Connection, transitions: list[Transition],
                 progress: dict[tuple[str, str], float]
                 ) -> set[Key]:
    """Write transitions and progress in one transaction; returns the keys whose
    transition was refused (the engine adopts the stored row for them)."""
    refused: set[Key] = set()
    assigned: list[OpenAlert] = []
    try:
        async with conn.transaction():
            for t in transitions:
                key = (t.alert.rule_id, t.alert.device_id)
                if key in refused:
                    continue
                if t.before is None and t.alert.id is None:
                    t.alert.id = await _insert(conn, t)
                    if t.alert.id is None:
                        refused.add(key)
                        continue
                    assigned.append(t.alert)
                elif not await _update(conn, t):
                    refused.add(key)
                    continue
                if t.kind != "cancelled":
                    await conn.execute(
                        """
                        INSERT INTO alert_events (alert_id, kind, state, severity, at, actor,
                                                  value, note, published_at)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                                CASE WHEN $2 = 'pending' THEN now() END)
                        """, t.alert.id, t.kind, _state_after(t), t.severity, _at(t.at),
                        ENGINE, t.value, t.note)
            if progress:
                await conn.execute(
                    """
                    INSERT INTO alerts_progress (device_id, source, last_ts)
                    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
                    ON CONFLICT (device_id, source) DO UPDATE
                    SET last_ts = GREATEST(alerts_progress.last_ts, EXCLUDED.last_ts)
                    """, [k[0] for k in progress], [k[1] for k in progress],
                    [_at(ts) for ts in progress.values()])
    except BaseException:
        for alert in assigned:  # rolled back: the ids were never stored
            alert.id = None
        raise
    return refused


# The alert's state after each transition (but a cancelled alert, which is deleted).
STATE_AFTER: dict[TransitionKind, AlertState] = {
    "pending": "pending", "firing": "firing", "renotify": "firing", "escalated": "firing",
    "resolved": "resolved"}


def _state_after(t: Transition) -> AlertState:
    """An unshelve leaves the state as it was (firing, or acknowledged)."""
    return t.alert.state if t.kind == "unshelved" else STATE_AFTER[t.kind]


async def _insert(conn: asyncpg.Connection, t: Transition) -> int | None:
    firing = t.kind == "firing"
    fired = _at(t.at) if firing else None
    return await conn.fetchval(  # type: ignore[no-any-return]
        """
        INSERT INTO alerts (rule_id, device_id, state, severity, value, threshold, message,
                            active_since, fire_at, fired_at, last_notified_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
        ON CONFLICT (rule_id, device_id) WHERE state <> 'resolved' DO NOTHING
        RETURNING id
        """, t.alert.rule_id, t.alert.device_id, "firing" if firing else "pending",
        t.severity, t.value, t.threshold or None, t.message, _at(t.alert.active_since),
        _at(t.alert.fire_at), fired)


async def _update(conn: asyncpg.Connection, t: Transition) -> bool:
    if t.alert.id is None:
        return False
    at = _at(t.at)
    if t.kind == "cancelled":
        status = await conn.execute("DELETE FROM alerts WHERE id = $1 AND state = 'pending'",
                                    t.alert.id)
    elif t.kind == "firing":
        status = await conn.execute(
            """
            UPDATE alerts SET state = 'firing', fired_at = $2, last_notified_at = $2,
                   value = $3, message = $4, updated_at = now()
            WHERE id = $1 AND state = 'pending'
            """, t.alert.id, at, t.value, t.message)
    elif t.kind == "resolved":
        status = await conn.execute(
            """
            UPDATE alerts SET state = 'resolved', resolved_at = $2, resolved_by = $3,
                   value = COALESCE($4, value), shelved_until = NULL, shelved_by = NULL,
                   updated_at = now()
            WHERE id = $1 AND state = $5
            """, t.alert.id, at, ENGINE, t.value, t.before)
    elif t.kind == "escalated":  # once, whichever replica is first, and not while shelved
        status = await conn.execute(
            """
            UPDATE alerts SET severity = $3, message = $4, last_notified_at = $2,
                   escalated_at = $2, updated_at = now()
            WHERE id = $1 AND state = 'firing' AND escalated_at IS NULL
              AND shelved_until IS NULL
            """, t.alert.id, at, t.severity, t.message)
    elif t.kind == "unshelved":  # once: only while the shelf that ended is still the row's
        status = await conn.execute(
            """
            UPDATE alerts SET shelved_until = NULL, shelved_by = NULL, updated_at = now(),
                   last_notified_at = CASE WHEN state = 'firing' THEN $2
                                           ELSE last_notified_at END
            WHERE id = $1 AND state = $3
              AND shelved_until <= $2::timestamptz + interval '1 millisecond'
            """, t.alert.id, at, t.before)
    else:  # renotify: only if no replica has notified since the notice it follows
        status = await conn.execute(
            """
            UPDATE alerts SET last_notified_at = $2, message = $3, updated_at = now()
            WHERE id = $1 AND state = 'firing' AND shelved_until IS NULL
              AND last_notified_at < $4::timestamptz + interval '1 millisecond'
            """, t.alert.id, at, t.message,
            _at(t.notified_before if t.notified_before is not None else t.at))
    return status.split()[-1] != "0"


# --- people --------------------------------------------------------------------------------
# Each change locks the row, checks its state, writes it with an event naming the actor
# (and their note), and tells the engines (NOTIFY insa_alerts), which adopt the row.
async def acknowledge(conn: asyncpg.Connection, alert_id: int, actor: str,
                      note: str | None = None) -> asyncpg.Record:
    return await _manual(conn, alert_id, actor, note, "acknowledged", ("firing",))


async def resolve(conn: asyncpg.Connection, alert_id: int, actor: str,
                  note: str | None = None) -> asyncpg.Record:
    return await _manual(conn, alert_id, actor, note, "resolved",
                         ("pending", "firing", "acknowledged"))


async def shelve(conn: asyncpg.Connection, alert_id: int, actor: str, until: datetime,
                 note: str | None = None) -> asyncpg.Record:
    """Put a firing or acknowledged alert aside until `until` (a shelved one: the new
    shelf replaces it). The bounds on `until` are the caller's (the API's settings)."""
    async with conn.transaction():
        row = await _locked(conn, alert_id)
        if row["state"] not in ("firing", "acknowledged"):
            raise Conflict(f"alert {alert_id} is {row['state']}; only a firing or "
                           f"acknowledged alert can be shelved", alert_id=alert_id,
                           state=row["state"])
        updated = await conn.fetchrow(
            "UPDATE alerts SET shelved_until = $2, shelved_by = $3, updated_at = now() "
            "WHERE id = $1 RETURNING *", alert_id, until, actor)
        await _event(conn, row, "shelved", row["state"], actor, note, shelved_until=until)
    assert updated is not None
    return updated


async def unshelve(conn: asyncpg.Connection, alert_id: int, actor: str,
                   note: str | None = None) -> asyncpg.Record:
    """End a shelf now: the `unshelved` event announces the alert again, as the engine's
    does when a shelf runs out, and re-notify counts from it."""
    async with conn.transaction():
        row = await _locked(conn, alert_id)
        if row["shelved_until"] is None:
            raise Conflict(f"alert {alert_id} is not shelved", alert_id=alert_id,
                           state=row["state"])
        updated = await conn.fetchrow(
            """
            UPDATE alerts SET shelved_until = NULL, shelved_by = NULL, updated_at = now(),
                   last_notified_at = CASE WHEN state = 'firing' THEN now()
                                           ELSE last_notified_at END
            WHERE id = $1 RETURNING *
            """, alert_id)
        await _event(conn, row, "unshelved", row["state"], actor, note)
    assert updated is not None
    return updated


async def _manual(conn: asyncpg.Connection, alert_id: int, actor: str, note: str | None,
                  state: AlertState, allowed: tuple[AlertState, ...]) -> asyncpg.Record:
    async with conn.transaction():
        row = await _locked(conn, alert_id)
        if row["state"] not in allowed:
            raise Conflict(f"alert {alert_id} is {row['state']}; cannot make it {state}",
                           alert_id=alert_id, state=row["state"])
        who = "acknowledged" if state == "acknowledged" else "resolved"
        # A resolve ends the alert, and with it any shelf (nothing is left to announce).
        shelf = ", shelved_until = NULL, shelved_by = NULL" if state == "resolved" else ""
        updated = await conn.fetchrow(
            f"""
            UPDATE alerts SET state = $2, {who}_at = now(), {who}_by = $3,
                   updated_at = now(){shelf}
            WHERE id = $1 RETURNING *
            """, alert_id, state, actor)
        await _event(conn, row, state, state, actor, note)
    assert updated is not None
    return updated


async def _locked(conn: asyncpg.Connection, alert_id: int) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1 FOR UPDATE", alert_id)
    if row is None:
        raise NotFound(f"alert {alert_id} does not exist", alert_id=alert_id)
    return row


async def _event(conn: asyncpg.Connection, row: asyncpg.Record, kind: str, state: str,
                 actor: str, note: str | None, shelved_until: datetime | None = None) -> None:
    """A person's event on the alert `row` (as it was before), and the engines told."""
    await conn.execute(
        """
        INSERT INTO alert_events (alert_id, kind, state, severity, at, actor, value, note,
                                  shelved_until, published_at)
        VALUES ($1, $2, $3, $4, now(), $5, $6, $7, $8, CASE WHEN $9 THEN now() END)
        """, row["id"], kind, state, row["severity"], actor, row["value"], note,
        shelved_until, row["fired_at"] is None)  # a pending alert was never announced
    await conn.execute("SELECT pg_notify($1, $2)", CHANGED_CHANNEL, str(row["id"]))
