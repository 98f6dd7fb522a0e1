"""Prometheus metrics of the ingestor."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30)


class IngestorMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"insa_ingestor_{name}", doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"insa_ingestor_{name}", doc, labels, registry=registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(f"insa_ingestor_{name}", doc, buckets=buckets, registry=registry)

        self.messages = counter("messages_total", "MQTT messages received, by topic kind",
                                ("kind",))
        self.other_partition = counter(
            "other_partition_total", "Messages of another replica's devices, acked unprocessed")
        self.redeliveries = counter("redeliveries_total",
                                    "Messages the broker redelivered (DUP flag set)")
        self.rejects = counter("rejects_total", "Messages rejected and recorded, by reason",
                               ("reason",))
        self.sparkplug_events = counter(
            "sparkplug_events_total", "What the Sparkplug B host saw and did, by event (nbirth, "
            "dbirth, ndeath, stale_ndeath, seq_gap, seq_repeated, before_birth, unknown_alias, "
            "bad_metric, rebirth_requested, ...)", ("event",))
        self.rows = counter("rows_written_total", "Rows inserted, by table", ("table",))
        self.duplicate_rows = counter("duplicate_rows_total",
                                      "Rows already stored (redelivered messages)")
        self.stream_entries = counter("stream_entries_total",
                                      "Entries added to the telemetry stream")
        self.acks_skipped = counter(
            "acks_skipped_total",
            "Acks not sent because their connection is gone (they will be redelivered)")
        self.stream_trimmed = counter("stream_trimmed_total",
                                      "Stream entries trimmed after every group was done")
        self.stream_trimmed_unread = counter(
            "stream_trimmed_unread_total",
            "Stream entries trimmed past the length cap before a group had acknowledged them")
        self.devices_offline = counter("devices_timed_out_total",
                                       "Devices marked offline by the inactivity timeout")
        self.suspensions = counter(
            "device_suspensions_total",
            "Device accounts disabled in the broker for flooding (over the rate limit)")
        self.suspended_devices = gauge(
            "suspended_devices", "Devices over their rate limit whose suspension has not ended")
        self.batch_messages = histogram("batch_messages", "Messages per flushed batch",
                                        (1, 10, 50, 100, 250, 500, 1000, 2000, 5000))
        self.flush_seconds = histogram("flush_seconds",
                                       "Time to commit one batch (retries included)",
                                       LATENCY_BUCKETS)
        self.commit_to_ack_seconds = histogram(
            "commit_to_ack_seconds", "From commit to the batch's acks being sent",
            LATENCY_BUCKETS)
        self.backpressure = gauge("backpressure",
                                  "1 while a dependency is failing and acks are held back",
                                  ("dependency",))
        self.pending = gauge("pending_messages", "Messages received but not yet acked")
        self.subscribed = gauge(
            "partition_subscribed", "Devices and gateways whose topics this partitioned "
            "replica subscribes to")
        self.pending_high_water = gauge("pending_messages_high_water",
                                        "Most messages ever held unacked (bounded by the "
                                        "receive window)")
