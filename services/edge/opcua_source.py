"""An OPC UA server's points (asyncua): a subscription reports each node's changes, or,
where the server does not support subscriptions, where creating one fails, or where the
mapping file says `subscribe = false`, the nodes are read every `poll_interval_seconds`.

A reading's time is the value's own source timestamp (the server's if it has none,
this program's clock if neither), so the same sample seen twice is the same reading.
A node the server does not have (BadNodeIdUnknown), or a Bad status for a node or one
of its values, is a reject of that point; its subscription is tried again every poll
interval, and the other nodes go on. A lost connection (asyncua's watchdog notices
within about a second) ends the session, and the source reconnects.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import structlog
from asyncua import Client, ua
from asyncua.common.subscription import DataChangeNotif, Subscription
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from services.edge.config import OpcUaPointConfig, OpcUaServerConfig
from services.edge.readings import (
    BAD_STATUS,
    BAD_VALUE,
    UNKNOWN_NODE,
    Reading,
    Reject,
    epoch_us,
    scaled,
)
from services.edge.source import Sink, Source, SourceState, describe
from shared.lifecycle import wait_any

log = structlog.get_logger(__name__)
UNKNOWN_NODE_CODES = {ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadNodeIdInvalid}
CLOSE_TIMEOUT_SECONDS = 2.0


class ConnectionLost(ConnectionError):
    """The server went away, or ended the subscription."""


class Changes:
    """asyncua's subscription handler: notifications wait here until the source takes
    them, a batch per wake-up (one buffer commit)."""

    def __init__(self) -> None:
        self.pending: list[tuple[ua.NodeId, ua.DataValue]] = []
        self.arrived = asyncio.Event()
        self.ended: str | None = None  # the subscription's bad status, if the server ended it

    def datachange_notification(self, node: Any, _value: Any, data: DataChangeNotif) -> None:
        self.pending.append((node.nodeid, data.monitored_item.Value))
        self.arrived.set()

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        if not status.Status.is_good():
            self.ended = status.Status.name
            self.arrived.set()

    def take(self) -> list[tuple[ua.NodeId, ua.DataValue]]:
        self.arrived.clear()
        taken, self.pending = self.pending, []
        return taken


class OpcUaSource(Source):
    def __init__(self, config: OpcUaServerConfig, sink: Sink) -> None:
        super().__init__(SourceState(config.name, "opcua", config.endpoint), sink,
                         config.reconnect_max_seconds)
        self.config = config
        self.points: dict[ua.NodeId, list[OpcUaPointConfig]] = {}
        for point in config.points:
            self.points.setdefault(ua.NodeId.from_string(point.node), []).append(point)
        self.client: Client | None = None
        self.lost = asyncio.Event()

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, OSError | TimeoutError | ua.UaError)

    async def connect(self) -> None:
        cfg = self.config
        client = Client(cfg.endpoint, timeout=cfg.timeout_seconds)
        client.application_uri = cfg.application_uri
        self.client = client
        if cfg.username is not None:
            client.set_user(cfg.username)
            if cfg.password_env:  # checked at start (main.read_password)
                client.set_password(os.environ[cfg.password_env])
        if cfg.security == "Basic256Sha256":
            assert cfg.certificate is not None and cfg.private_key is not None
            await client.set_security(
                SecurityPolicyBasic256Sha256, str(cfg.certificate), str(cfg.private_key),
                server_certificate=str(cfg.server_certificate)
                if cfg.server_certificate else None,
                mode=ua.MessageSecurityMode[cfg.security_mode])
        self.lost.clear()

        async def on_lost(exc: Exception) -> None:
            self.lost.set()

        client.connection_lost_callback = on_lost
        await client.connect()

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            await asyncio.wait_for(client.disconnect(), CLOSE_TIMEOUT_SECONDS)
        except Exception as exc:  # the connection is often gone already: nothing to do
            log.debug("opcua disconnect failed", source=self.name, error=describe(exc))

    async def serve(self, stop: asyncio.Event) -> None:
        assert self.client is not None
        if self.config.subscribe:
            changes = Changes()
            try:
                subscription = await self.client.create_subscription(
                    self.config.publishing_interval_ms, changes)
                refused = await self.monitor(subscription, self.points)
            except ua.UaStatusCodeError as exc:  # e.g. BadServiceUnsupported
                log.warning("opcua subscription failed; polling instead", source=self.name,
                            error=describe(exc))
            else:
                self.state.mode = "subscription"
                await self.subscribed(subscription, changes, refused, stop)
                return
        self.state.mode = "polling"
        await self.poll(stop)

    # --- subscription -----------------------------------------------------------------------
    async def subscribed(self, subscription: Subscription, changes: Changes,
                         refused: list[ua.NodeId], stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        retry_at = loop.time() + self.config.poll_interval_seconds
        while not stop.is_set():
            await wait_any(changes.arrived, self.lost, stop,
                           timeout=max(0.0, retry_at - loop.time()))
            await self.take_values(changes.take())
            if changes.ended is not None:
                raise ConnectionLost(f"the server ended the subscription: {changes.ended}")
            if self.lost.is_set():
                raise ConnectionLost("connection to the OPC UA server lost")
            if refused and loop.time() >= retry_at:  # the rejected nodes, again
                refused = await self.monitor(subscription, {n: self.points[n] for n in refused})
                retry_at = loop.time() + self.config.poll_interval_seconds

    async def monitor(self, subscription: Subscription,
                      points: dict[ua.NodeId, list[OpcUaPointConfig]]) -> list[ua.NodeId]:
        """Subscribe to the nodes' changes; returns the nodes the server refused (rejected)."""
        assert self.client is not None
        nodes = list(points)
        results = await subscription.subscribe_data_change(
            [self.client.get_node(n) for n in nodes], queuesize=self.config.queue_size,
            sampling_interval=ua.Duration(self.config.sampling_interval_ms))
        refused = []
        for node, result in zip(nodes, results, strict=True):
            if isinstance(result, ua.StatusCode):
                refused.append(node)
                await self.reject_status(node, result)
        return refused

    # --- polling ---------------------------------------------------------------------------
    async def poll(self, stop: asyncio.Event) -> None:
        assert self.client is not None
        loop = asyncio.get_running_loop()
        nodes = [self.client.get_node(n) for n in self.points]
        due = loop.time()
        while not stop.is_set():
            if self.lost.is_set():
                raise ConnectionLost("connection to the OPC UA server lost")
            values = await self.client.read_attributes(nodes)
            await self.take_values([(n.nodeid, v) for n, v in zip(nodes, values, strict=True)])
            due = max(due + self.config.poll_interval_seconds, loop.time())
            await wait_any(stop, self.lost, timeout=due - loop.time())

    # --- values to readings ----------------------------------------------------------------
    async def take_values(self, values: Iterable[tuple[ua.NodeId, ua.DataValue]]) -> None:
        now = time.time()
        readings = []
        for node, data in values:
            status = data.StatusCode
            if status is not None and not status.is_good():
                await self.reject_status(node, status)
                continue
            ts = data.SourceTimestamp or data.ServerTimestamp
            ts_us = epoch_us(_aware(ts) if ts is not None else now)
            raw = data.Value.Value if data.Value is not None else None
            for point in self.points.get(node, ()):
                try:
                    value = scaled(raw, point.scale, point.offset)
                except ValueError as exc:
                    await self.sink.reject(Reject(self.name, point.node, point.device,
                                                  point.metric, BAD_VALUE, str(exc)))
                    continue
                readings.append(Reading(point.device, point.metric, ts_us, value, point.unit))
        await self.take(readings)

    async def reject_status(self, node: ua.NodeId, status: ua.StatusCode) -> None:
        reason = UNKNOWN_NODE if status.value in UNKNOWN_NODE_CODES else BAD_STATUS
        for point in self.points.get(node, ()):
            await self.sink.reject(Reject(self.name, point.node, point.device, point.metric,
                                          reason, f"{status.name}: {status.doc}"))


def _aware(ts: datetime) -> datetime:
    """OPC UA times are UTC; some servers send them without a zone."""
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
