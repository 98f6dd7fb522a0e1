"""Prometheus metrics of the ingestor."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kw = {"registry": registry} if registry is not None else {}
        self.messages = Counter("insa_ingestor_messages_total",
                                "MQTT messages received, by topic kind", ["kind"], **kw)
        self.redeliveries = Counter("insa_ingestor_redeliveries_total",
                                    "Messages the broker redelivered (DUP flag set)", **kw)
        self.rejects = Counter("insa_ingestor_rejects_total",
                               "Messages rejected and recorded, by reason", ["reason"], **kw)
        self.rows = Counter("insa_ingestor_rows_written_total",
                            "Rows inserted, by table", ["table"], **kw)
        self.duplicate_rows = Counter("insa_ingestor_duplicate_rows_total",
                                      "Rows already stored (redelivered messages)", **kw)
        self.stream_entries = Counter("insa_ingestor_stream_entries_total",
                                      "Entries added to the telemetry stream", **kw)
        self.batch_messages = Histogram(
            "insa_ingestor_batch_messages", "Messages per flushed batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000), **kw)
        self.flush_seconds = Histogram(
            "insa_ingestor_flush_seconds", "Time to commit one batch (incl. retries)",
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30), **kw)
        self.commit_to_ack_seconds = Histogram(
            "insa_ingestor_commit_to_ack_seconds", "From commit to the acks being sent",
            buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .5, 1, 5), **kw)
        self.backpressure = Gauge(
            "insa_ingestor_backpressure",
            "1 while a dependency is failing and acks are held back", ["dependency"], **kw)
        self.acks_skipped = Counter(
            "insa_ingestor_acks_skipped_total",
            "Acks not sent because the connection they came on is gone (will be redelivered)",
            **kw)
        self.pending = Gauge("insa_ingestor_pending_messages",
                             "Messages received but not yet acked", **kw)
        self.devices_offline = Counter("insa_ingestor_devices_timed_out_total",
                                       "Devices marked offline by the inactivity timeout", **kw)
