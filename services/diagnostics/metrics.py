"""Prometheus metrics of the diagnostics service (`insa_diagnostics_*`)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram


class DiagnosticsMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        def name(suffix: str) -> str:
            return f"insa_diagnostics_{suffix}"

        self.readings = Counter(name("readings_total"), "Readings judged by the engine",
                                registry=registry)
        self.skipped = Counter(name("skipped_total"),
                               "Readings or values not judged, by reason", ["reason"],
                               registry=registry)
        self.diagnoses = Counter(name("diagnoses_total"),
                                 "Diagnosis events emitted (raised, changed, cleared)",
                                 ["code", "severity", "cleared"], registry=registry)
        self.published = Counter(name("published_total"),
                                 "Diagnosis events published on insa:diagnostics and MQTT",
                                 registry=registry)
        self.lag = Gauge(name("stream_lag"), "Entries of the telemetry stream not yet read "
                         "by this replica's group", registry=registry)
        self.pending = Gauge(name("stream_pending"), "Entries read but not acknowledged",
                             registry=registry)
        self.batch_seconds = Histogram(name("batch_seconds"),
                                       "Time to judge and commit one batch of entries",
                                       registry=registry)
        self.behind_seconds = Gauge(name("behind_seconds"),
                                    "Age of the newest reading judged, by its own time",
                                    registry=registry)
        self.devices = Gauge(name("devices"), "Wells the engine holds state for",
                             registry=registry)
