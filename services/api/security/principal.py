"""Who is calling: a user (JWT) or an API key, with its role and optional device scope."""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("admin", "engineer", "operator", "viewer", "device")
USER_ROLES = ROLES[:-1]


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # user or key
    id: int
    name: str  # username, or the key's name
    role: str
    # Set for device keys (their own device) and for keys scoped to one device: every
    # device-specific read or write is limited to it.
    device_id: str | None = None
    # Epoch seconds the credential lapses (an access token's exp); None: no fixed end.
    expires: float | None = None
    # A user's account version when authenticated (services/api/security/tokens.py,
    # `account_version`): a long connection ends when it changes.
    version: int | None = None

    @property
    def actor(self) -> str:
        """As audit rows and alert events name it."""
        return f"{self.kind}:{self.name}"

    def sees(self, device_id: str) -> bool:
        return self.device_id is None or self.device_id == device_id
