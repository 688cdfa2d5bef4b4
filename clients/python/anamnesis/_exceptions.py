"""Exception tree mirroring the server's error codes.

Every error the SDK raises on purpose is an :class:`AnamnesisError`. Errors the server answered
with are :class:`APIError` subclasses chosen by the envelope's ``error`` code; an unknown code
falls back to a class chosen by HTTP status. Client-side argument mistakes raise ``ValueError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anamnesis._models import Job


class AnamnesisError(Exception):
    """Base of every error raised by the SDK (bad configuration, transport, API answers)."""


class AnamnesisConnectionError(AnamnesisError):
    """The request never got an HTTP answer (DNS, refused connection, reset, timeout, ...)."""


class AnamnesisTimeoutError(AnamnesisConnectionError):
    """The request timed out before an answer arrived."""


class APIError(AnamnesisError):
    """The server answered with an error status.

    ``code`` is the envelope's stable ``error`` code (or ``"unknown"`` when the body was not an
    envelope), ``detail`` its human-readable message, ``request_id`` the id to quote in reports.
    """

    def __init__(
        self, status_code: int, code: str, detail: str, request_id: str | None = None
    ) -> None:
        suffix = f" (request_id={request_id})" if request_id else ""
        super().__init__(f"{status_code} {code}: {detail}{suffix}")
        self.status_code = status_code
        self.code = code
        self.detail = detail
        self.request_id = request_id


class AuthenticationError(APIError):
    """401 ``unauthorized``: the API key is missing, unknown or revoked."""


class PermissionDeniedError(APIError):
    """403 ``forbidden``: the API key lacks the scope (read, write, admin) the call needs."""


class NotFoundError(APIError):
    """404 ``not_found``: no such memory in this project (or it was deleted)."""


class ConflictError(APIError):
    """409 ``conflict``: the request conflicts with the current state."""


class IdempotencyKeyReusedError(ConflictError):
    """409 ``idempotency_key_reused``: the key was already used with a different body."""


class PayloadTooLargeError(APIError):
    """413 ``payload_too_large``: the body or one of its fields exceeds a server limit."""


class ValidationError(APIError):
    """422 ``validation_error``: the server rejected the request's shape or values."""


class InvalidFilterError(ValidationError):
    """422 ``invalid_filter``: the search filter is malformed or names an unknown field."""


class ServiceUnavailableError(APIError):
    """503 ``unavailable``: the server (or its database / model) is temporarily unavailable."""


class InternalServerError(APIError):
    """500 ``internal_error``, or any other 5xx without a more specific code."""


class JobTimeoutError(AnamnesisError, TimeoutError):
    """``wait_for_job`` gave up before the job finished; ``job`` is the job as last seen.

    The job keeps running on the server: wait again, or read it later with ``get_job``.
    """

    def __init__(self, job: Job, timeout: float) -> None:
        super().__init__(f"job {job.id} is still {job.status} after {timeout:g} s")
        self.job = job
        self.timeout = timeout


_BY_CODE: dict[str, type[APIError]] = {
    "unauthorized": AuthenticationError,
    "forbidden": PermissionDeniedError,
    "not_found": NotFoundError,
    "conflict": ConflictError,
    "idempotency_key_reused": IdempotencyKeyReusedError,
    "payload_too_large": PayloadTooLargeError,
    "validation_error": ValidationError,
    "invalid_filter": InvalidFilterError,
    "unavailable": ServiceUnavailableError,
    "internal_error": InternalServerError,
}

_BY_STATUS: dict[int, type[APIError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    503: ServiceUnavailableError,
}


def make_api_error(
    status_code: int, code: str | None, detail: str, request_id: str | None
) -> APIError:
    """The exception for one error answer: by known ``code`` first, then by status."""
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status_code)
    if cls is None:
        cls = InternalServerError if status_code >= 500 else APIError
    return cls(status_code, code or "unknown", detail, request_id)
