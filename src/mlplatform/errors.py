"""Domain errors. Services raise these; `mlplatform.api.errors` maps them to HTTP, nothing else does."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a caller may see; `code` is stable, `message` is for people."""

    code = "error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(DomainError):
    """A request that is not well formed HTTP for us (a bad header, a body that is not what it says)."""

    code = "bad_request"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class InvalidInput(DomainError):
    """Bad input; `details` lists `{"field", "problem"}` entries."""

    code = "invalid_input"


class Unauthorized(DomainError):
    code = "unauthorized"


class Forbidden(DomainError):
    code = "forbidden"


class RateLimited(DomainError):
    code = "rate_limited"

    def __init__(
        self, message: str, *, retry_after: int, details: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after), **(headers or {})}


class PayloadTooLarge(DomainError):
    code = "payload_too_large"


class UnsupportedMediaType(DomainError):
    code = "unsupported_media_type"


class Unavailable(DomainError):
    """A backend the request needs is down, or the instance is not ready to serve (still starting)."""

    code = "unavailable"

    def __init__(self, message: str, *, details: Any = None, retry_after: int | None = None) -> None:
        super().__init__(message, details=details)
        self.headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}


class DeadlineExceeded(DomainError):
    code = "timeout"
