"""Domain errors with an HTTP status and a stable code, rendered in one JSON envelope:
``{"error": code, "detail": message, "request_id": id}``."""

from __future__ import annotations


class AnamnesisError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unauthorized(AnamnesisError):
    status_code = 401
    code = "unauthorized"


class NotFound(AnamnesisError):
    status_code = 404
    code = "not_found"


class Conflict(AnamnesisError):
    status_code = 409
    code = "conflict"


class IdempotencyKeyReused(AnamnesisError):
    status_code = 409
    code = "idempotency_key_reused"


class PayloadTooLarge(AnamnesisError):
    status_code = 413
    code = "payload_too_large"


class ValidationFailed(AnamnesisError):
    status_code = 422
    code = "validation_error"


class InvalidFilter(ValidationFailed):
    code = "invalid_filter"


class ConsolidationNotConfigured(AnamnesisError):
    status_code = 422
    code = "consolidation_not_configured"


class Unavailable(AnamnesisError):
    status_code = 503
    code = "unavailable"
