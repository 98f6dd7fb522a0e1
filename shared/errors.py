"""Domain errors shared by every service; the api maps them to HTTP in one handler."""

from __future__ import annotations


class InsaError(Exception):
    """Base of every domain error; carries a machine-readable code."""

    code = "error"

    def __init__(self, message: str, **data: object) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class ValidationFailed(InsaError):
    """Input that is not acceptable; `reason` is a stable label (used for reject metrics),
    `field` where in the input, if the raiser knows: a dotted path (`ts`,
    `telemetry.pip.unit`), also in `data` (the api answers it as `details.field`)."""

    code = "validation"

    def __init__(self, reason: str, message: str, *, field: str | None = None,
                 **data: object) -> None:
        if field is not None:
            data["field"] = field
        super().__init__(message, **data)
        self.reason = reason
        self.field = field


class NotFound(InsaError):
    code = "not_found"


class Conflict(InsaError):
    code = "conflict"


class DependencyUnavailable(InsaError):
    """PostgreSQL, Redis or the broker cannot be reached; the caller should back off."""

    code = "unavailable"


class Unauthorized(InsaError):
    """No valid credentials: missing, wrong, expired or revoked."""

    code = "unauthorized"


class Forbidden(InsaError):
    """Valid credentials that may not do this."""

    code = "forbidden"


class TooManyRequests(InsaError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after
