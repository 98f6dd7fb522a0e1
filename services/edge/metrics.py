"""Prometheus metrics of the edge program (`insa_edge_*`), served on its status port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # Its own registry by default: one process may run more than one (the tests).
        self.registry = registry = registry or CollectorRegistry()

        def name(suffix: str) -> str:
            return f"insa_edge_{suffix}"

        self.readings = Counter(name("readings_total"),
                                "Readings taken into the buffer, by source",
                                ["source"], registry=registry)
        self.published = Counter(name("published_total"),
                                 "Readings in messages the broker acknowledged",
                                 registry=registry)
        self.messages = Counter(name("messages_total"),
                                "Telemetry messages the broker acknowledged",
                                registry=registry)
        self.dropped = Counter(name("dropped_total"),
                               "Readings dropped, oldest first, because the buffer was full",
                               registry=registry)
        self.buffered = Gauge(name("buffered_readings"),
                              "Readings in the buffer, not yet acknowledged by the broker",
                              registry=registry)
        self.rejects = Counter(name("rejects_total"),
                               "Attempts at a point that yielded no value, by reason",
                               ["source", "reason"], registry=registry)
        self.source_up = Gauge(name("source_connected"),
                               "1 while the source's server is connected",
                               ["source"], registry=registry)
