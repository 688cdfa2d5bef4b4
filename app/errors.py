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


class Forbidden(AnamnesisError):
    """The key is valid but its scopes do not allow this."""

    status_code = 403
    code = "forbidden"


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


class RateLimited(AnamnesisError):
    """Too many requests, or a quota spent: try again after ``retry_after_s``."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after_s: float, code: str | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
        if code is not None:
            self.code = code


class ValidationFailed(AnamnesisError):
    status_code = 422
    code = "validation_error"


class InvalidFilter(ValidationFailed):
    code = "invalid_filter"


class Unavailable(AnamnesisError):
    status_code = 503
    code = "unavailable"


class LLMError(AnamnesisError):
    """An LLM call failed. Carries the tokens it spent and the replies it received before
    failing, so a job can record what a failed call cost."""

    status_code = 502
    code = "llm_error"

    def __init__(self, detail: str, *, prompt_tokens: int = 0, completion_tokens: int = 0,
                 replies: int = 0, truncated: int = 0) -> None:
        super().__init__(detail)
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.replies = replies
        self.truncated = truncated  # replies cut at max_tokens


class LLMRequestRejected(LLMError):
    """The endpoint refused the request (a 4xx other than 429: bad key, unknown model, schema
    it cannot serve). Configuration, not luck: retrying will not help."""

    code = "llm_request_rejected"


class LLMOutputError(LLMError):
    """The model kept answering with output that does not validate, past its re-asks."""

    code = "llm_bad_output"


class LLMUnavailable(LLMError):
    """Transient: 5xx, timeouts or connection failures outlasted the client's own retries.
    Worth retrying later, after ``retry_after_s`` when the endpoint named a wait."""

    status_code = 503
    code = "llm_unavailable"

    def __init__(self, detail: str, *, retry_after_s: float | None = None,
                 prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        super().__init__(detail, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        self.retry_after_s = retry_after_s


class LLMRateLimited(LLMUnavailable):
    status_code = 429
    code = "llm_rate_limited"
