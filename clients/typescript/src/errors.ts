/**
 * The error tree, mirroring the server's error codes.
 *
 * Every error the SDK throws on purpose is an {@link AnamnesisError}. Answers with an error
 * status are {@link APIError} subclasses chosen by the envelope's `error` code
 * (`{"error", "detail", "request_id"}`); a code this SDK does not know yet gives a plain
 * `APIError` (or {@link InternalServerError} for a 5xx). A request that never got an answer is a
 * {@link ConnectionError} ({@link TimeoutError} when it ran out of time). Argument mistakes the
 * SDK can see before sending throw a `TypeError` or `RangeError`.
 */

import type { Job } from "./types.js";

/** Base of every error thrown by the SDK (configuration, transport, API answers). */
export class AnamnesisError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The request never got an HTTP answer (DNS, refused connection, reset, ...). */
export class ConnectionError extends AnamnesisError {}

/** The request ran out of time (`timeoutMs`) before its answer arrived. */
export class TimeoutError extends ConnectionError {}

/**
 * The server answered with an error status.
 *
 * `code` is the envelope's stable `error` code, `detail` its message for a person, `requestId`
 * the id to quote in a report (also in the `X-Request-ID` header), `status` the HTTP status.
 */
export class APIError extends AnamnesisError {
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  readonly requestId: string | undefined;

  constructor(status: number, code: string, detail: string, requestId?: string) {
    super(`${status} ${code}: ${detail}${requestId ? ` (request_id=${requestId})` : ""}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.requestId = requestId;
  }
}

/** 401 `unauthorized`: the API key is missing, unknown or revoked. */
export class AuthenticationError extends APIError {}

/** 403 `forbidden`: the key is valid, but its scopes do not allow this call. */
export class PermissionDeniedError extends APIError {}

/** 404 `not_found`: nothing with this id in the key's project (or it was erased). */
export class NotFoundError extends APIError {}

/** 409 `conflict`: the request conflicts with the current state (e.g. retrying a job that did not fail). */
export class ConflictError extends APIError {}

/** 409 `idempotency_key_reused`: the key was already used with a different body. */
export class IdempotencyKeyReusedError extends ConflictError {}

/** 413 `payload_too_large`: the body or one of its fields exceeds a server limit. */
export class PayloadTooLargeError extends APIError {}

/** 422 `validation_error`: the server rejected the request's shape or values. */
export class ValidationError extends APIError {}

/** 422 `invalid_filter`: the search filter is malformed or names an unknown field. */
export class InvalidFilterError extends ValidationError {}

/**
 * 429 `rate_limited` or `quota_exceeded`: too many requests, or a quota spent.
 * `retryAfter` is the wait in seconds the server named (`Retry-After`), when it named one.
 */
export class RateLimitError extends APIError {
  readonly retryAfter: number | undefined;

  constructor(status: number, code: string, detail: string, requestId?: string,
              retryAfter?: number) {
    super(status, code, detail, requestId);
    this.retryAfter = retryAfter;
  }
}

/** 503 `unavailable`: the server, its database or a model is unavailable for a moment; retry. */
export class ServiceUnavailableError extends APIError {}

/** 500 `internal_error`, or any other 5xx without a more specific code. */
export class InternalServerError extends APIError {}

/**
 * `waitForJob` gave up before the job finished; `job` is the job as last seen. The job keeps
 * running on the server: wait again, or read it later with `getJob`.
 */
export class JobTimeoutError extends AnamnesisError {
  readonly job: Job;
  readonly timeoutMs: number;

  constructor(job: Job, timeoutMs: number) {
    super(`job ${job.id} is still ${job.status} after ${timeoutMs} ms`);
    this.job = job;
    this.timeoutMs = timeoutMs;
  }
}

const BY_CODE: Record<string, typeof APIError> = {
  unauthorized: AuthenticationError,
  forbidden: PermissionDeniedError,
  not_found: NotFoundError,
  conflict: ConflictError,
  idempotency_key_reused: IdempotencyKeyReusedError,
  payload_too_large: PayloadTooLargeError,
  validation_error: ValidationError,
  invalid_filter: InvalidFilterError,
  unavailable: ServiceUnavailableError,
  internal_error: InternalServerError,
};

const RATE_LIMIT_CODES = new Set(["rate_limited", "quota_exceeded"]);

/** The error for one error answer: by its envelope's code, else by its status. */
export function apiError(status: number, code: string, detail: string, requestId?: string,
                         retryAfter?: number): APIError {
  if (RATE_LIMIT_CODES.has(code)) {
    return new RateLimitError(status, code, detail, requestId, retryAfter);
  }
  const known = Object.hasOwn(BY_CODE, code) ? BY_CODE[code] : undefined;
  const cls = known ?? (status >= 500 ? InternalServerError : APIError);
  return new cls(status, code, detail, requestId);
}
