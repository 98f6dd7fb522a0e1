"""Prometheus metrics of the alert engine (`insa_alerts_*`)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# A webhook may take its whole timeout (up to 60 s); e-mail a few seconds.
DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class AlertsMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        def name(suffix: str) -> str:
            return f"insa_alerts_{suffix}"

        self.values = Counter(name("values_total"), "Metric values evaluated from insa:telemetry",
                              registry=registry)
        self.diagnoses = Counter(name("diagnoses_total"),
                                 "Diagnosis events evaluated from insa:diagnostics",
                                 registry=registry)
        self.late = Gauge(name("late_values"), "Values skipped as at or before the newest "
                          "evaluated of their series (late data, redeliveries)",
                          registry=registry)
        self.errors = Counter(name("evaluation_errors_total"),
                              "Readings whose evaluation raised (logged, skipped)",
                              registry=registry)
        self.transitions = Counter(name("transitions_total"), "Alert transitions committed",
                                   ["kind", "severity"], registry=registry)
        self.refused = Counter(name("refused_total"),
                               "Transitions refused by the database because another replica "
                               "or a person changed the alert first", registry=registry)
        self.open_alerts = Gauge(name("open_alerts"), "Alerts pending, firing or acknowledged "
                                 "as this engine sees them", registry=registry)
        self.rules = Gauge(name("rules"), "Enabled rules loaded", registry=registry)
        self.published = Counter(name("published_total"),
                                 "Alert events published on insa:alerts and MQTT",
                                 registry=registry)
        self.behind_seconds = Gauge(name("behind_seconds"),
                                    "Wall time minus the event time of the newest value "
                                    "evaluated", registry=registry)
        self.lag = Gauge(name("stream_lag"), "Entries not yet read, by stream", ["stream"],
                         registry=registry)
        self.deliveries = Counter(name("deliveries_total"),
                                  "Tries of rules' actions, by kind and outcome "
                                  "(delivered, retry: failed and rescheduled, dead: gave up)",
                                  ["kind", "outcome"], registry=registry)
        self.delivery_seconds = Histogram(name("delivery_seconds"),
                                          "Time one try of an action took, failed or not",
                                          ["kind"], buckets=DELIVERY_BUCKETS,
                                          registry=registry)
