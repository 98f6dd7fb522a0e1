"""The edge program's local HTTP page (`[status]` in the mapping file; 127.0.0.1 unless
the integrator says otherwise): `/status` (JSON: the broker connection, each source, the
buffer, and the rejected points with their reasons), `/metrics` (Prometheus),
`/health/live` and `/health/ready` (ready while the broker connection is up)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.edge.buffer import Buffer
from services.edge.metrics import EdgeMetrics
from services.edge.publisher import Publisher
from services.edge.source import Source
from shared.health import Health, health_app, serve_app
from shared.timefmt import utc_text


async def status(gateway: str, health: Health, publisher: Publisher, buffer: Buffer,
                 sources: Sequence[Source]) -> dict[str, Any]:
    down = health.failures.get("mqtt")
    rejects = await buffer.rejects()
    for row in rejects:
        row["first_at"], row["last_at"] = utc_text(row["first_at"]), utc_text(row["last_at"])
    return {"gateway": gateway,
            # Connected, a publish can still be refused (a topic not the account's).
            "broker": {"connected": down is None, "problem": down or publisher.problem},
            "sources": [s.state.as_dict() for s in sources],
            "buffer": {"path": str(buffer.path), "readings": buffer.depth,
                       "max_readings": buffer.max_readings, "dropped": buffer.dropped},
            "rejects": rejects}


def status_app(gateway: str, health: Health, publisher: Publisher, buffer: Buffer,
               sources: Sequence[Source], metrics: EdgeMetrics) -> Starlette:
    async def status_page(_: Request) -> JSONResponse:
        return JSONResponse(await status(gateway, health, publisher, buffer, sources))

    return Starlette(routes=[*health_app(health, metrics.registry).routes,
                             Route("/status", status_page)])


async def serve_status(app: Starlette, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve on the bound `sock` until `stop` is set."""
    await serve_app(app, sock, stop, "status page")
