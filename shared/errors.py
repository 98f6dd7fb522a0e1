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
    """Input that is not acceptable; `reason` is a stable label (used for reject metrics)."""

    code = "validation"

    def __init__(self, reason: str, message: str, **data: object) -> None:
        super().__init__(message, **data)
        self.reason = reason


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
