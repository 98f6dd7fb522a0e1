"""The telemetry stream's consumers in a benchmark: the diagnostics and alerts services
as processes, and their backlog (entries not yet delivered to, or not yet acked by, each
consumer group) sampled while the ingest runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import redis

from devtools.registry import Service
from devtools.stack.servers import RunningBroker
from devtools.stack.service_process import ServiceProcess, service_environment

SAMPLE_SECONDS = 0.5


def start_service(service: Service, dsn: str, redis_url: str, broker: RunningBroker,
                  logdir: Path, **overrides: str) -> ServiceProcess:
    env = service_environment(service, dsn, redis_url, broker, INSA_ENV="production",
                              INSA_LOG_LEVEL="WARNING", **overrides)
    process = ServiceProcess(service, env, logdir / f"{service.name}.log")
    process.start()
    return process


def backlog(client: redis.Redis, stream: str) -> dict[str, int]:
    """Per consumer group: entries not yet delivered (lag) plus delivered and unacked."""
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:  # no stream yet
        return {}
    return {g["name"].decode(): (g.get("lag") or 0) + g["pending"] for g in groups}


class BacklogSampler:
    """Samples the groups' backlog in a thread from `start` to `stop`: the largest seen,
    and the last."""

    def __init__(self, redis_url: str, stream: str = "insa:telemetry") -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.stream = stream
        self.largest: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.last = backlog(self.client, self.stream)
            for group, entries in self.last.items():
                self.largest[group] = max(self.largest.get(group, 0), entries)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def drain(self, timeout: float = 300) -> float | None:
        """Seconds until every group's backlog is empty (None: not within `timeout`)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not any(backlog(self.client, self.stream).values()):
                return round(time.monotonic() - started, 1)
            time.sleep(SAMPLE_SECONDS)
        return None

    def summary(self, drained: float | None) -> dict[str, Any]:
        return {"largest": self.largest, "at_end": self.last, "drained_after_s": drained}
