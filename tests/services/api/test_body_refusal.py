"""A body over the limit is refused unread, and the client still reads the refusal: the
server stops sending, discards what the client was already sending for a moment, and only
then closes (a close with unread bytes resets the connection, and a reset can destroy the
answer before the client reads it)."""

from __future__ import annotations

import asyncio

import httpx

from tests.fixtures.api import Api

MiB = 1024 * 1024


async def test_a_client_sending_an_oversized_body_reads_the_413(api: Api) -> None:
    refused: list[int | str] = []
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(10):
            try:
                response = await client.post(f"{api.url}/api/v1/devices", content=b" " * 4 * MiB,
                                             headers={"Content-Type": "application/json"})
                refused.append(response.status_code)
            except httpx.TransportError as exc:
                refused.append(type(exc).__name__)
            await asyncio.sleep(0)
    assert refused == [413] * 10
