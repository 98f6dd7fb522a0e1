"""The ingestor's periodic jobs beside the pipeline: stream trimming and device inactivity."""

from __future__ import annotations

import asyncpg
import redis.asyncio as redis
import structlog

from services.ingestor import repository
from services.ingestor.metrics import IngestorMetrics
from services.ingestor.settings import IngestorSettings
from shared.streams import trim_consumed

log = structlog.get_logger(__name__)


def inactivity_sweep_period(settings: IngestorSettings) -> float:
    return min(settings.offline_after_seconds / 4, 30.0)


async def trim_stream(settings: IngestorSettings, client: redis.Redis,
                      metrics: IngestorMetrics) -> None:
    """Drop what every consumer group is done with; past the length cap, the oldest anyway."""
    trimmed = await trim_consumed(client, settings.stream, settings.stream_max_len)
    metrics.stream_trimmed.inc(trimmed.entries - trimmed.unread)
    if trimmed.unread:
        metrics.stream_trimmed_unread.inc(trimmed.unread)
        log.error("stream over its length cap: trimmed entries a consumer group "
                  "had not acknowledged", stream=settings.stream,
                  unread=trimmed.unread, max_len=settings.stream_max_len)


async def mark_inactive_devices(settings: IngestorSettings, pool: asyncpg.Pool,
                                metrics: IngestorMetrics) -> None:
    """Devices silent past `offline_after_seconds` go offline (no Last Will ever came)."""
    async with pool.acquire() as conn:
        gone = await repository.mark_inactive_offline(conn, settings.offline_after_seconds)
    if gone:
        metrics.devices_offline.inc(len(gone))
        log.info("devices offline after inactivity", devices=gone[:50], count=len(gone))
