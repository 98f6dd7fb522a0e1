"""The fleet page: every well with its status, health, open diagnoses and alerts, filtered
and searched, in pages keyed by device id (no offsets: a page stays the same wells while
others are added), and its visible rows refreshed every few seconds as one request."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import asyncpg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from services.api import analytics
from services.api.console.rendering import render
from services.api.console.session import PATH, ConsoleUser
from services.api.deps import Res, Resources, authorize
from services.api.routes.devices import TAG_PATTERN, TYPE_PATTERN
from services.api.security.principal import Principal

router = APIRouter(prefix=PATH, include_in_schema=False)
PAGE_SIZE = 50
HEALTH_HOURS = 24
REFRESH_SECONDS = 10
CHOICES_SECONDS = 60.0
# What the page shows: the wells, their health, open diagnoses and alerts.
SHOWS = ("devices:read", "telemetry:read", "diagnoses:read", "alerts:read")
Status = Literal["online", "offline", "unknown"]
Severity = Literal["critical", "warning", "any"]

WHERE = """
 WHERE ($1::text IS NULL OR d.device_type = $1)
   AND ($2::text IS NULL OR d.metadata -> 'tags' ? $2)
   AND ($3::text IS NULL OR d.metadata ->> 'site' = $3)
   AND ($4::text IS NULL OR d.status = $4)
   AND ($5::text IS NULL OR d.device_id ILIKE $5 ESCAPE '\\' OR d.name ILIKE $5 ESCAPE '\\')
   AND ($6::text IS NULL OR d.device_id = $6)
   AND ($7::text IS NULL
        OR EXISTS (SELECT FROM open_diagnoses o WHERE o.device_id = d.device_id
                      AND o.severity = ANY($8::text[]))
        OR EXISTS (SELECT FROM alerts a WHERE a.device_id = d.device_id
                      AND a.state IN ('firing', 'acknowledged')
                      AND a.severity = ANY($8::text[])))"""
COUNTS = f"""SELECT count(*) AS wells,
                    count(*) FILTER (WHERE d.status = 'online') AS online,
                    count(*) FILTER (WHERE d.status = 'offline') AS offline
               FROM devices d {WHERE}"""
# One page after ($9) or before ($10) a device id; a page before is read backwards.
PAGE = """SELECT d.id, d.device_id, d.name, d.device_type, d.status, d.last_seen,
                 d.metadata ->> 'site' AS site
            FROM devices d {where}
             AND ($9::text IS NULL OR d.device_id > $9)
             AND ($10::text IS NULL OR d.device_id < $10)
           ORDER BY d.device_id {order} LIMIT $11"""
CHOICES = """SELECT array(SELECT DISTINCT device_type FROM devices
                           WHERE $1::text IS NULL OR device_id = $1 ORDER BY 1) AS types,
                    array(SELECT DISTINCT metadata ->> 'site' FROM devices
                           WHERE metadata ? 'site' AND ($1::text IS NULL OR device_id = $1)
                           ORDER BY 1) AS sites"""


@dataclass(frozen=True)
class Filters:
    q: str | None = None
    site: str | None = None
    type: str | None = None
    tag: str | None = None
    status: Status | None = None
    severity: Severity | None = None

    def args(self, who: Principal) -> list[Any]:
        pattern = None
        if self.q:
            escaped = self.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
        severities = ["critical", "warning"] if self.severity == "any" else [self.severity]
        return [self.type, self.tag, self.site, self.status, pattern, who.device_id,
                self.severity, severities]

    def query(self, **extra: str | None) -> str:
        """This filter (and `extra`) as a query string, empty values left out."""
        found = {k: v for k, v in {**self.__dict__, **extra}.items() if v}
        return urlencode(found)


async def filters(q: Annotated[str | None, Query(max_length=100)] = None,
            site: Annotated[str | None, Query(max_length=200)] = None,
            type: Annotated[str | None, Query(pattern=f"^$|{TYPE_PATTERN}")] = None,
            tag: Annotated[str | None, Query(pattern=f"^$|{TAG_PATTERN}")] = None,
            status: Annotated[str | None, Query(pattern="^(|online|offline|unknown)$")] = None,
            severity: Annotated[str | None, Query(pattern="^(|critical|warning|any)$")] = None
            ) -> Filters:
    # A form without scripts sends its empty boxes and selects as "": no filter.
    return Filters(q or None, site or None, type or None, tag or None,
                   status or None, severity or None)  # type: ignore[arg-type]  # by pattern


Filtered = Annotated[Filters, Depends(filters)]
Cursor = Annotated[str | None, Query(max_length=128)]


async def fleet_rows(pool: asyncpg.Pool, who: Principal, chosen: Filters, after: str | None,
                     before: str | None) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """A page of wells with their open issues and health; and the cursors of the pages
    before and after it (None at either end)."""
    args = chosen.args(who)
    backwards = before is not None and after is None
    sql = PAGE.format(where=WHERE, order="DESC" if backwards else "ASC")
    found = await pool.fetch(sql, *args, None if backwards else after, before,
                             PAGE_SIZE + 1)
    more = len(found) > PAGE_SIZE
    found = found[:PAGE_SIZE]
    if backwards:
        found.reverse()
    names = [r["device_id"] for r in found]
    issues = await analytics.open_issues(pool, names)
    health = {s["device_id"]: s["health"] for s in await analytics.scores(
        pool, found, datetime.now(UTC), HEALTH_HOURS, issues)}
    rows = [{**dict(r), "issues": issues[r["device_id"]], "health": health[r["device_id"]],
             "critical": sum(i["severity"] == "critical" for i in issues[r["device_id"]]),
             "warning": sum(i["severity"] == "warning" for i in issues[r["device_id"]])}
            for r in found]
    first, last = (names[0], names[-1]) if names else (None, None)
    has_before = more if backwards else after is not None
    has_after = (before is not None) if backwards else more
    return rows, first if has_before and names else None, last if has_after and names else None


_choices: tuple[asyncpg.Pool, float, asyncpg.Record] | None = None


async def filter_choices(pool: asyncpg.Pool, who: Principal) -> asyncpg.Record:
    """The types and sites the filters offer, the whole fleet's read at most every
    CHOICES_SECONDS (a scan of every device's metadata on each page load would be most of
    the page's time); a principal of one device gets its device's alone."""
    global _choices
    if who.device_id is not None:
        return await pool.fetchrow(CHOICES, who.device_id)
    if _choices is None or _choices[0] is not pool or \
            time.monotonic() - _choices[1] > CHOICES_SECONDS:
        _choices = (pool, time.monotonic(), await pool.fetchrow(CHOICES, None))
    return _choices[2]


async def authorize_fleet(res: Resources, who: Principal, request: Request) -> None:
    for permission in SHOWS:
        await authorize(res, who, permission, request)


@router.get("/")
async def fleet_page(request: Request, res: Res, who: ConsoleUser, chosen: Filtered,
                     after: Cursor = None, before: Cursor = None) -> Response:
    await authorize_fleet(res, who, request)
    # On two of the pool's connections at once: the page waits for the slower, not both.
    (rows, prev_key, next_key), counts = await asyncio.gather(
        fleet_rows(res.pool, who, chosen, after, before),
        res.pool.fetchrow(COUNTS, *chosen.args(who)))
    choices = await filter_choices(res.pool, who)
    return render(request, "fleet.html", {
        "rows": rows, "counts": counts, "chosen": chosen, "types": choices["types"],
        "sites": choices["sites"], "refresh": REFRESH_SECONDS,
        "rows_url": f"{PATH}/fleet/rows?{chosen.query(after=after, before=before)}",
        "prev_url": f"{PATH}/?{chosen.query(before=prev_key)}" if prev_key else None,
        "next_url": f"{PATH}/?{chosen.query(after=next_key)}" if next_key else None}, who)


@router.get("/fleet/rows")
async def fleet_rows_fragment(request: Request, res: Res, who: ConsoleUser,
                              chosen: Filtered, after: Cursor = None,
                              before: Cursor = None) -> Response:
    """The rows on screen again (the page's live refresh)."""
    await authorize_fleet(res, who, request)
    rows, _, _ = await fleet_rows(res.pool, who, chosen, after, before)
    return render(request, "_fleet_rows.html", {
        "rows": rows, "refresh": REFRESH_SECONDS,
        "rows_url": f"{PATH}/fleet/rows?{chosen.query(after=after, before=before)}"}, who)
