"""Fixtures of the delivery tests (test_actions.py, test_webhook_guard.py): real receivers
(an HTTP server in the test's event loop, an aiosmtpd SMTP server) and a pool on the
test's database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from aiosmtpd.controller import Controller

from devtools.stack.processes import free_port
from shared import db
from tests.utils.receivers import Inbox, Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield receiver
    receiver.closing.set()
    server.close()
    await server.wait_closed()


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(db_url, max_size=4)
    yield pool
    await pool.close()
