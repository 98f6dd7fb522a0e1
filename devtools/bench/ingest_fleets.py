"""Who publishes in `insa bench ingest`: devices, gateways or Sparkplug B edge nodes, their
broker accounts and catalog rows, as the platform makes them."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from devtools.bench.publishers import publish_all, publish_gateways
from devtools.bench.sparkplug_publisher import (
    child_ids,
    gateway_id,
    publish_nodes,
    readings_of_child,
)
from devtools.stack.servers import RunningBroker
from shared.broker_accounts import gateway_role, sparkplug_node_role
from shared.broker_control import new_password, role_account


@dataclass
class Fleet:
    """Who publishes in one phase: devices, gateways with children, or Sparkplug edge
    nodes with children; `accounts` are their broker accounts (id → password)."""

    via: str
    accounts: dict[str, str]
    children: int
    per_account: int = 0  # messages each account publishes
    units: bool = False
    qos: int = 1
    rebirths_asked: int = 0  # Sparkplug: rebirths the host asked the nodes for
    children_of: dict[str, list[str]] = field(default_factory=dict)  # platform device ids
    malformed: bool = False  # devices only: every message a reject (publishers.reading)

    def __post_init__(self) -> None:
        if self.via == "device":
            self.children = 1
        for account in self.accounts:
            self.children_of[account] = (
                [account] if self.via == "device"
                else [f"{account}-child-{k}" for k in range(self.children)]
                if self.via == "gateway"
                else [f"{account}:{c}" for c in child_ids(self.children)])

    @property
    def messages(self) -> int:
        return self.per_account * len(self.accounts)

    @property
    def readings_per_message(self) -> int:
        """A gateway's batch holds a reading of each child; a device's message and a
        Sparkplug DDATA are one reading."""
        return self.children if self.via == "gateway" else 1

    def readings_by_device(self) -> dict[str, int]:
        """Each platform device's readings in this phase."""
        if self.via != "sparkplug":
            return {d: self.per_account for ds in self.children_of.values() for d in ds}
        return {d: readings_of_child(k, self.children, self.per_account)
                for ds in self.children_of.values() for k, d in enumerate(ds)}

    @property
    def readings(self) -> int:
        return sum(self.readings_by_device().values())

    @property
    def raw_messages(self) -> int:
        """What a subscriber to all of it receives: with Sparkplug, births too."""
        births = 1 + self.children if self.via == "sparkplug" else 0
        return (self.per_account + births) * len(self.accounts)

    def publish(self, port: int, rate_per_account: float | None = None,
                host_id: str | None = None) -> None:
        """Every account's messages, to completion (`rate_per_account` messages/s each)."""
        if self.via == "device":
            publish_all(port, self.accounts, self.per_account, rate_per_account,
                        units=self.units, malformed=self.malformed)
        elif self.via == "gateway":
            publish_gateways(port, self.accounts, self.children_of, self.per_account,
                             rate_per_account, units=self.units)
        else:
            nodes = publish_nodes(port, self.accounts, self.children, self.per_account,
                                  rate_per_account, self.qos, host_id)
            self.rebirths_asked += sum(n.rebirths_asked for n in nodes)


def account_ids(via: str, prefix: str, count: int) -> list[str]:
    if via == "device":
        return [f"{prefix}-{n:04d}" for n in range(count)]
    if via == "gateway":
        return [f"{prefix}-gw-{n:04d}" for n in range(count)]
    return [gateway_id(f"{'node' if prefix == 'bench' else prefix}-{n:04d}")
            for n in range(count)]


def provision_gateways(broker: RunningBroker, via: str, gateways: list[str]) -> None:
    """Each gateway's (or edge node's) broker account and role, as the platform makes them."""
    with broker.admin() as admin:
        for gw in gateways:
            password = new_password()
            role = gateway_role(gw) if via == "gateway" else sparkplug_node_role(gw)
            admin.execute(*role_account(gw, role, password))
            broker.credentials[gw] = password


async def register_gateways(dsn: str, via: str, gateways: list[str]) -> None:
    """Gateway rows that register their children on first sight (auto_register)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO gateways (gateway_id, protocol, auto_register) VALUES ($1, $2, true)",
            [(gw, "sparkplug" if via == "sparkplug" else "json") for gw in gateways])
    finally:
        await conn.close()


async def register_devices(dsn: str, devices: list[str]) -> None:
    """Device rows, as provisioning makes them: a partitioned replica subscribes to its
    registered devices' topics only."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO devices (device_id) SELECT unnest($1::text[])", devices)
    finally:
        await conn.close()
