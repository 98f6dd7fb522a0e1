"""Turn one MQTT delivery into a `Parsed` item: readings, a status change, or a reject."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from services.ingestor.batch import Parsed, Reject
from services.ingestor.rejects import LogWindow
from services.ingestor.settings import IngestorSettings
from shared.errors import ValidationFailed
from shared.mqtt import parse_device_topic
from shared.mqtt_connection import Message
from shared.readings import Limits, Reading, check_units
from shared.schemas import (
    check_device_id,
    parse_gateway_payload,
    parse_metric_payload,
    parse_reading_payload,
    parse_status_payload,
)

log = structlog.get_logger(__name__)

# timedelta's own limit is 999,999,999 days; anything past ~740,000 (year 1) bounds nothing.
MAX_PAST_AGE_DAYS = 1_000_000


class MessageParser:
    def __init__(self, settings: IngestorSettings,
                 admit: Callable[[str, bool], bool] = lambda _account, _gateway: True,
                 over_limit: str = "") -> None:
        # The flood guard: a message it does not admit is rejected unparsed (cheaply).
        self.admit, self.over_limit = admit, over_limit
        self.max_payload = settings.max_payload_bytes
        self.keep_bytes = settings.reject_keep_bytes
        self.limits = Limits(
            max_future_skew=timedelta(seconds=settings.max_future_skew_seconds),
            max_past_age=timedelta(days=min(settings.max_past_age_days, MAX_PAST_AGE_DAYS)))
        # A device repeating a message that trips a parser bug must not flood the log.
        self.error_log = LogWindow(settings.reject_log_window_seconds)

    def parse(self, delivery: Message, received: datetime | None = None) -> Parsed:
        received = received or datetime.now(UTC)
        topic = parse_device_topic(delivery.topic)
        device_id = topic.device_id if topic else None
        item = Parsed(delivery, device_id, received, topic.kind if topic else "unknown",
                      gateway=topic.gateway if topic else None)
        try:
            if topic is None:
                raise ValidationFailed("unknown_topic", "not an ingestor topic")
            check_device_id(topic.device_id)
            account = topic.device_id
            if topic.gateway is not None:
                check_device_id(topic.gateway)
                account = topic.gateway
            if not self.admit(account, topic.gateway is not None):
                raise ValidationFailed("rate_limited", self.over_limit)
            if len(delivery.payload) > self.max_payload:
                raise ValidationFailed("payload_too_large",
                                       f"{len(delivery.payload)} bytes > {self.max_payload}")
            if topic.kind == "gateway_telemetry":
                item.parts = [self._child(item, child, got) for child, got in
                              parse_gateway_payload(delivery.payload, received, self.limits)]
            elif topic.kind == "telemetry":
                item.readings = check_units(parse_reading_payload(
                    delivery.payload, topic.device_id, received, self.limits))
            elif topic.kind == "metric":
                assert topic.metric is not None
                item.readings = check_units([parse_metric_payload(
                    delivery.payload, topic.metric, received, self.limits)])
            else:
                item.status = parse_status_payload(delivery.payload, received, self.limits)
        except ValidationFailed as exc:
            item.reject = self.reject(delivery, device_id, exc.reason, exc.message)
        except Exception as exc:  # a parser bug must not wedge the message unacked forever
            suppressed = self.error_log.allow(f"{type(exc).__module__}.{type(exc).__qualname__}")
            if suppressed is not None:
                log.exception("unexpected error parsing a message", topic=delivery.topic,
                              suppressed_in_last_window=suppressed)
            item.readings, item.status = [], None
            item.reject = self.reject(delivery, device_id, "internal_error",
                                      f"{type(exc).__name__}: {exc}")
        return item

    def _child(self, item: Parsed, device_id: str, got: list[Reading] | ValidationFailed
               ) -> Parsed:
        """One child's part of a gateway's batch: its readings, or its own reject."""
        part = Parsed(item.delivery, device_id, item.received, "telemetry",
                      gateway=item.gateway)
        try:
            if isinstance(got, ValidationFailed):
                raise got
            part.readings = check_units(got)
        except ValidationFailed as exc:
            part.reject = self.reject(item.delivery, device_id, exc.reason,
                                      f"device {device_id}: {exc.message}")
        return part

    def reject(self, delivery: Message, device_id: str | None, reason: str,
               detail: str) -> Reject:
        # The detail may quote the payload; PostgreSQL text cannot hold NUL.
        return Reject(delivery.topic, device_id, reason, detail.replace("\x00", "\\x00")[:1000],
                      delivery.payload[: self.keep_bytes], len(delivery.payload))

