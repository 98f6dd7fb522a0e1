"""API settings (`INSA_API_*`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import Environment, ServiceSettings, is_placeholder
from shared.webhooks import ALLOW_SETTING, WebhookPolicy

MIN_JWT_SECRET_LENGTH = 32
DocsExposure = Literal["off", "authenticated", "public"]


class ApiSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INSA_API_", extra="ignore",
                                      populate_by_name=True)

    mqtt_username: str = "insa-api"
    http_port: int = Field(8004, ge=0, le=65535)
    # HS256 signing key of access and refresh tokens; at least 32 random characters.
    # Unset in development: a random one per process (tokens end with it).
    jwt_secret: SecretStr | None = None
    access_token_seconds: int = Field(900, ge=30, le=86_400)
    refresh_token_seconds: int = Field(7 * 86_400, ge=300, le=90 * 86_400)
    # A used refresh token presented again within this is a race (409), not a replay.
    refresh_reuse_grace_seconds: float = Field(10.0, ge=0, le=60)
    # The first admin, created when the users table is empty: this password, or else a
    # one-time password printed once in the log (never a fixed default).
    admin_username: str = "admin"
    admin_password: SecretStr | None = None
    # Brute force (services/api/security/ratelimit.py): failed logins per (username,
    # client) and per client a minute, per username from any client in its own window
    # (guesses spread over many addresses), and bad API keys and refresh tokens per client
    # a minute; over one, 429 with Retry-After, even for the right password or key.
    login_attempts_per_minute: int = Field(5, ge=1)
    client_login_attempts_per_minute: int = Field(30, ge=1)
    account_login_failures: int = Field(20, ge=1)
    account_login_window_seconds: int = Field(900, ge=60, le=86_400)
    key_failures_per_minute: int = Field(10, ge=1)
    refresh_failures_per_minute: int = Field(10, ge=1)
    # The console (services/api/console): a session ends after this long without a
    # request, and in any case this long after its login. Its cookie is Secure when the
    # request came over HTTPS (a TLS proxy: X-Forwarded-Proto from forwarded_allow_ips)
    # or when console_secure_cookie is set.
    console_idle_seconds: int = Field(1800, ge=60, le=86_400)
    console_session_seconds: int = Field(12 * 3600, ge=300, le=7 * 86_400)
    console_secure_cookie: bool = False
    # Days audit_log rows are kept (deleted hourly by the API); 0 keeps them for ever.
    # At least 7: the ingestor's flood guard reads the last day of suspensions.
    audit_retention_days: int = Field(365, ge=0, le=36_500)
    # The reverse proxies (comma-separated addresses or networks) whose X-Forwarded-For
    # names the client; empty, none is trusted and the client is the TCP peer.
    forwarded_allow_ips: str = ""
    # Commands unanswered (no `done`/`failed` on command/ack) after this are timed_out.
    command_timeout_seconds: float = Field(60.0, gt=0, le=86_400)
    # How short and how long a shelf of an alert may be (POST /alerts/{id}/shelve): the
    # site's shelving policy. A shelf that outlives what it was for hides a real alarm.
    alert_shelf_min_seconds: float = Field(300.0, ge=1, le=86_400)
    alert_shelf_max_seconds: float = Field(7 * 86_400.0, ge=60, le=366 * 86_400)
    # How long HTTP ingest waits for the broker's PUBACK before answering 503.
    publish_timeout_seconds: float = Field(5.0, gt=0, le=60)
    page_max: int = Field(1000, ge=10, le=100_000)
    # Raw readings' pages are rows of a few numbers: a day of one device (about 17,000 at
    # a reading a minute of 12 metrics) fits one page.
    raw_page_max: int = Field(20_000, ge=10, le=100_000)
    # The live feed (SSE and WebSocket), per API process: clients held; events queued per
    # client (one this far behind is cut off with a cursor to resume from); devices one
    # client may follow; entries re-read from Redis for a resume; idle heartbeat interval.
    live_max_clients: int = Field(2000, ge=1, le=100_000)
    live_queue_size: int = Field(256, ge=1, le=100_000)
    live_max_devices: int = Field(100, ge=1, le=10_000)
    live_backlog_max: int = Field(5000, ge=1, le=1_000_000)
    live_heartbeat_seconds: float = Field(15.0, gt=0, le=300)
    # Feeds one caller (a user or a key) may hold at once, so that no one takes every slot
    # (beyond, 429); how long a send may wait on a client that stopped reading before its
    # connection is reset.
    live_max_per_principal: int = Field(10, ge=1, le=100_000)
    live_send_timeout_seconds: float = Field(30.0, gt=0, le=600)
    # Request bodies over this are refused with 413 before they are read; an operation may
    # declare its own (`x-max-body-bytes` in the schema: HTTP ingest, diagnostics/analyze).
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    # Connections open at once (beyond, 503; each live client holds one, so more than
    # LIVE_MAX_CLIENTS); a request's headers must be complete this long after the
    # connection opened or the request's first byte came; idle keep-alive connections close.
    max_connections: int = Field(4096, ge=16, le=1_000_000)
    header_timeout_seconds: float = Field(10.0, gt=0, le=300)
    keep_alive_seconds: int = Field(5, ge=1, le=300)
    # /api/v1/docs, /redoc and /openapi.json: off; authenticated (the schema with any
    # credential; no pages, a browser cannot send one); public. Unset: off in production,
    # public elsewhere.
    docs: DocsExposure | None = None
    # /metrics: set, only with `Authorization: Bearer <token>`; unset, public outside
    # production and not served in production.
    metrics_token: SecretStr | None = None
    # The alerts service's webhook allow-list, under its name: rules are refused when
    # written with a webhook the engine would refuse to send (shared/webhooks.py).
    webhook_allow: str = Field("", validation_alias=ALLOW_SETTING)

    @field_validator("webhook_allow")
    @classmethod
    def _allow_list(cls, value: str) -> str:
        WebhookPolicy.parse(value)
        return value

    @property
    def webhook_policy(self) -> WebhookPolicy:
        return WebhookPolicy.parse(self.webhook_allow)

    @field_validator("audit_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if 0 < value < 7:
            raise ValueError("keep the audit trail at least 7 days (or 0: for ever)")
        return value

    @model_validator(mode="after")
    def _connections_for_the_live_feed(self) -> ApiSettings:
        if self.max_connections <= self.live_max_clients:
            raise ValueError("INSA_API_MAX_CONNECTIONS must exceed INSA_API_LIVE_MAX_CLIENTS "
                             "(each live client holds a connection)")
        return self

    def docs_exposure(self, env: Environment) -> DocsExposure:
        return self.docs or ("off" if env == "production" else "public")

    def check_secrets(self, env: Environment) -> None:
        super().check_secrets(env)
        if env == "development":
            return
        secret = self.jwt_secret.get_secret_value() if self.jwt_secret else None
        if is_placeholder(secret) or len(secret or "") < MIN_JWT_SECRET_LENGTH:
            raise ValueError(f"INSA_API_JWT_SECRET must be set to at least "
                             f"{MIN_JWT_SECRET_LENGTH} random characters outside development")
        if self.admin_password is not None and \
                is_placeholder(self.admin_password.get_secret_value()):
            raise ValueError("INSA_API_ADMIN_PASSWORD is a placeholder; set a real secret "
                             "or leave it unset for a one-time password")
        if self.metrics_token is not None and \
                is_placeholder(self.metrics_token.get_secret_value()):
            raise ValueError("INSA_API_METRICS_TOKEN is a placeholder; set a real secret "
                             "or leave it unset")
