"""The edge program (`insa edge --config FILE`): wiring only. Sources read into the buffer,
the publisher drains it to the broker as the gateway, the status page shows it all.

On SIGTERM or SIGINT the sources stop, the gateway says `offline`, and the connection
closes; what is still buffered is sent after the next start.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import structlog

from services.edge.buffer import Buffer
from services.edge.config import BrokerConfig, ConfigError, EdgeConfig, load_config
from services.edge.metrics import EdgeMetrics
from services.edge.modbus_source import ModbusSource
from services.edge.opcua_source import OpcUaSource
from services.edge.publisher import OFFLINE, Publisher, status_topic
from services.edge.rejects import Rejects
from services.edge.source import Sink, Source
from services.edge.status_page import serve_status, status_app
from shared.health import Health, listen_socket
from shared.lifecycle import EXIT_FAILED, StartupError, describe, leaf
from shared.logging import configure_logging
from shared.mqtt_connection import MqttConnection, Will
from shared.settings import CommonSettings

log = structlog.get_logger(__name__)
EXIT_BAD_CONFIG = 2
DROP_LOG_SECONDS = 60.0


def broker_settings(broker: BrokerConfig) -> CommonSettings:
    """The broker part of the platform's settings, as MqttConnection takes them. The edge
    program has no database or Redis, so only these fields are set (model_construct:
    neither validated against the rest nor read from the environment)."""
    return CommonSettings.model_construct(mqtt_host=broker.host,
                                          mqtt_port=broker.resolved_port,
                                          mqtt_tls=broker.tls, mqtt_ca_file=broker.ca_file)


class DropLog:
    """Counts readings dropped because the buffer was full; logs it once a minute."""

    def __init__(self, metrics: EdgeMetrics) -> None:
        self.metrics = metrics
        self.logged_at = -1e18
        self.held_back = 0

    def __call__(self, dropped: int) -> None:
        self.metrics.dropped.inc(dropped)
        self.held_back += dropped
        if time.monotonic() - self.logged_at >= DROP_LOG_SECONDS:
            log.warning("buffer full: oldest readings dropped", dropped=self.held_back)
            self.logged_at, self.held_back = time.monotonic(), 0


class Edge:
    """One run of the program, until `stop` is set."""

    def __init__(self, config: EdgeConfig, password: str) -> None:
        self.config = config
        self.password = password
        self.metrics = EdgeMetrics()
        self.status_port: int | None = None  # bound (the file may say 0: any free port)

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        # The port first: taken, the program ends now with a clear reason.
        sock = listen_socket(cfg.status.host, cfg.status.port)
        self.status_port = sock.getsockname()[1]
        try:
            buffer = await Buffer.open(cfg.buffer.path, cfg.buffer.max_readings,
                                       on_dropped=DropLog(self.metrics))
            try:
                await self._run(stop, sock, buffer)
            finally:
                await buffer.close()
        finally:
            sock.close()

    async def _run(self, stop: asyncio.Event, sock: socket.socket, buffer: Buffer) -> None:
        cfg, metrics = self.config, self.metrics
        metrics.buffered.set(buffer.depth)
        rejects = Rejects(buffer, metrics, cfg.status.reject_log_seconds)
        await rejects.load({(p.device, p.metric) for _, p in cfg.points()})
        sink = Sink(buffer, rejects, metrics)
        sources: list[Source] = [*(OpcUaSource(c, sink) for c in cfg.opcua),
                                 *(ModbusSource(c, sink) for c in cfg.modbus)]
        health = Health("mqtt")
        mqtt = MqttConnection(broker_settings(cfg.broker), cfg.gateway, self.password,
                              health=health,
                              reconnect_max_seconds=cfg.broker.reconnect_max_seconds,
                              will=Will(status_topic(cfg.gateway), OFFLINE))
        publisher = Publisher(cfg.gateway, mqtt, buffer, metrics,
                              batch_readings=cfg.buffer.batch_readings,
                              retry_max_seconds=cfg.broker.reconnect_max_seconds)
        app = status_app(cfg.gateway, health, publisher, buffer, sources, metrics)
        link_stop, page_stop = asyncio.Event(), asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(serve_status(app, sock, page_stop), name="status-page")
            group.create_task(mqtt.run(link_stop), name="mqtt")
            work = [group.create_task(s.run(stop), name=f"source {s.name}") for s in sources]
            work.append(group.create_task(publisher.run(stop), name="publisher"))
            log.info("edge started", gateway=cfg.gateway, sources=[s.name for s in sources],
                     buffered=buffer.depth, status_port=self.status_port)
            await asyncio.wait(work)  # they end once `stop` is set (the gateway said offline)
            link_stop.set()
            page_stop.set()
        log.info("edge stopped", buffered=buffer.depth)


def read_password(config: EdgeConfig) -> str:
    """The gateway's MQTT password; the OPC UA users' passwords must be set too."""
    for server in config.opcua:
        if server.password_env and not os.environ.get(server.password_env):
            raise ConfigError(f"{server.password_env} is not set: it must hold the OPC UA "
                              f"password of {server.name} ([[opcua]] password_env)")
    var = config.broker.password_env
    password = os.environ.get(var, "")
    if not password:
        raise ConfigError(f"{var} is not set: it must hold the gateway's MQTT password "
                          "([broker] password_env)")
    return password


def main(config_path: Path) -> int:
    """Run until SIGTERM or SIGINT; the exit status (0 stopped, 1 failed, 2 bad config)."""
    configure_logging("edge", os.environ.get("INSA_LOG_LEVEL", "INFO"),
                      os.environ.get("INSA_LOG_FORMAT", "json"))
    try:
        config = load_config(config_path)
        password = read_password(config)
    except ConfigError as exc:
        log.error("edge could not start: bad configuration", error=str(exc))
        return EXIT_BAD_CONFIG

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Edge(config, password).run(stop)

    try:
        asyncio.run(run())
    except Exception as exc:
        startup = isinstance(leaf(exc), StartupError)
        log.error(f"edge {'could not start' if startup else 'failed'}; exiting",
                  error=describe(exc), exc_info=not startup)
        return EXIT_FAILED
    return 0
