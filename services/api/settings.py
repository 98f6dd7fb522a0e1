"""API settings (`INSA_API_*`)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import Environment, ServiceSettings, is_placeholder

MIN_JWT_SECRET_LENGTH = 32


class ApiSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INSA_API_", extra="ignore")

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
    # Brute force: failed logins per (username, client) and per client, and failed API
    # keys per client, in a moving window; over it, 429 with Retry-After.
    login_attempts_per_minute: int = Field(5, ge=1)
    client_login_attempts_per_minute: int = Field(30, ge=1)
    key_failures_per_minute: int = Field(10, ge=1)
    # The reverse proxies (comma-separated addresses or networks) whose X-Forwarded-For
    # names the client; empty, none is trusted and the client is the TCP peer.
    forwarded_allow_ips: str = ""
    # Commands unanswered (no `done`/`failed` on command/ack) after this are timed_out.
    command_timeout_seconds: float = Field(60.0, gt=0, le=86_400)
    # How long HTTP ingest waits for the broker's PUBACK before answering 503.
    publish_timeout_seconds: float = Field(5.0, gt=0, le=60)
    page_max: int = Field(1000, ge=10, le=100_000)
    # The live feed (SSE and WebSocket), per API process: clients held; events queued per
    # client (one this far behind is cut off with a cursor to resume from); devices one
    # client may follow; entries re-read from Redis for a resume; idle heartbeat interval.
    live_max_clients: int = Field(2000, ge=1, le=100_000)
    live_queue_size: int = Field(256, ge=1, le=100_000)
    live_max_devices: int = Field(100, ge=1, le=10_000)
    live_backlog_max: int = Field(5000, ge=1, le=1_000_000)
    live_heartbeat_seconds: float = Field(15.0, gt=0, le=300)

    @field_validator("jwt_secret", "admin_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value  # compose passes unset variables as ""

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
