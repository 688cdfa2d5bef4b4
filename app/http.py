"""HTTP edge: request ids, the body size limit, the access log, and the one error envelope."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import Gatekeeper, key_from_headers
from app.errors import AnamnesisError
from app.logs import request_context
from app.throttle import retry_after

logger = logging.getLogger(__name__)
# One line per request at INFO: method, route template, status, time, request id. Never the
# path (ids), the query string or the body (what a client sent).
access_logger = logging.getLogger("app.access")

REQUEST_ID_HEADER = "X-Request-ID"
# The paths a request must hold a key for: the API, its Mem0-compatible twin
# (``app.compat.mem0``) and the MCP server (``app.mcp.http``), which take the same keys,
# rates and project slots.
GUARDED_PATHS = ("/v1/", "/mem0/")
MCP_PATH = "/mcp"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
               415: "unsupported_media_type", 422: "validation_error", 429: "rate_limited"}


class ErrorBody(BaseModel):
    """The one shape of every error response (``envelope``)."""

    error: str = Field(description="A stable code: unauthorized, not_found, validation_error…")
    detail: str = Field(description="What went wrong, for a person.")
    request_id: str = Field(description="Also in the X-Request-ID header.")


# What the OpenAPI schema says every operation may answer besides its success: the envelope.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in ((401, "No key, or not a valid one"),
                                (403, "The key's scopes do not allow this"),
                                (404, "Not found in the key's project"),
                                (409, "Conflict"), (413, "Body too large"),
                                (429, "Too many requests, or a quota spent: see Retry-After"),
                                (422, "Invalid request"), (503, "Unavailable, retry"))}


def envelope(request_id: str, status: int, code: str, detail: str, *,
             retry_after_s: float | None = None) -> JSONResponse:
    """The one error body; ``Retry-After`` when the answer names a wait."""
    headers = {REQUEST_ID_HEADER: request_id}
    if retry_after_s is not None:
        headers["Retry-After"] = retry_after(retry_after_s)
    return JSONResponse({"error": code, "detail": detail, "request_id": request_id},
                        status_code=status, headers=headers)


def error_response(request_id: str, exc: AnamnesisError) -> JSONResponse:
    """The envelope of a domain error."""
    return envelope(request_id, exc.status_code, exc.code, exc.detail,
                    retry_after_s=getattr(exc, "retry_after_s", None))


class _BodyTooLarge(StarletteHTTPException):
    # An HTTPException, so FastAPI's body reader re-raises it instead of answering 400.
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class RequestContextMiddleware:
    """Gives every request an id (the client's ``X-Request-ID`` if sane), bound for the log
    (``app.logs``) while the request is served, checks a request to the API's key and rates
    before its body is read (a 401 or 429 costs no parsing), serves it in one of its
    project's slots (``ProjectSlots``), caps the body, and writes the access log line.

    The cap is checked against ``Content-Length`` up front and against the bytes actually
    received, so a chunked upload cannot slip past it.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int,
                 large_bodies: dict[str, int] | None = None) -> None:
        """``large_bodies``: path → its own body limit (an import's NDJSON upload)."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.large_bodies = large_bodies or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        supplied = headers.get(REQUEST_ID_HEADER.lower(), "")
        request_id = supplied if _VALID_REQUEST_ID.match(supplied) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        began = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped, the error handler answers

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with request_context(request_id):
            try:
                await self._serve(scope, receive, observed_send, headers, request_id)
            finally:
                milliseconds = round((time.perf_counter() - began) * 1000, 1)
                route = route_template(scope)
                access_logger.info("%s %s %d %.1f ms", scope["method"], route, status,
                                   milliseconds, extra={"method": scope["method"],
                                                        "route": route, "status": status,
                                                        "duration_ms": milliseconds})

    @staticmethod
    async def _admit(scope: Scope, headers: dict[str, str],
                     request_id: str) -> JSONResponse | None:
        """The key checked and counted against its rates (``Gatekeeper``) before the body is
        read: the caller for the route's dependencies, or the answer refusing it."""
        from sqlalchemy.exc import DBAPIError
        from sqlalchemy.exc import TimeoutError as PoolTimeout

        gate: Gatekeeper = scope["app"].state.resources.gate
        try:
            plaintext = key_from_headers(headers.get("authorization"), headers.get("x-api-key"))
            scope["state"]["caller"] = await gate.admit(plaintext, request_id)
        except AnamnesisError as exc:
            return error_response(request_id, exc)
        except (DBAPIError, PoolTimeout) as exc:
            logger.warning("no database to check a key with: %s", exc.__class__.__name__)
            return envelope(request_id, 503, "unavailable",
                            "the server is busy or its database unavailable; retry shortly",
                            retry_after_s=1)
        return None

    async def _serve(self, scope: Scope, receive: Receive, send: Send,
                     headers: dict[str, str], request_id: str) -> None:
        path: str = scope["path"]
        mcp = path == MCP_PATH or path.startswith(MCP_PATH + "/")
        if not (path.startswith(GUARDED_PATHS) or mcp):
            await self._capped(scope, receive, send, headers, request_id)
            return
        refused = await self._admit(scope, headers, request_id)
        if refused is not None:
            await refused(scope, receive, send)
            return
        if mcp:  # its tools call /v1/ in-process, each call taking its project slot there
            await self._capped(scope, receive, send, headers, request_id)
            return
        gate: Gatekeeper = scope["app"].state.resources.gate
        async with gate.slots.held(scope["state"]["caller"].project_id):
            await self._capped(scope, receive, send, headers, request_id)

    async def _capped(self, scope: Scope, receive: Receive, send: Send,
                      headers: dict[str, str], request_id: str) -> None:
        limit = self.large_bodies.get(scope["path"], self.max_body_bytes)
        too_large = envelope(request_id, 413, "payload_too_large",
                             f"request body larger than {limit} bytes")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await too_large(scope, receive, send)
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        async def tagged_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                name = REQUEST_ID_HEADER.lower().encode()
                message["headers"] = [
                    *(h for h in message.get("headers", []) if h[0].lower() != name),
                    (name, request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, limited_receive, tagged_send)
        except _BodyTooLarge:
            if not started:
                await too_large(scope, receive, send)


def route_template(scope: Scope) -> str:
    """The path template of the route that served the request (``/v1/memories/{memory_id}``),
    never the path itself (ids, and what a client typed), or ``unmatched``."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else "unmatched"


def _request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or uuid.uuid4().hex


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc if part not in ("body",)] or ["body"]
    return ".".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AnamnesisError)
    async def domain_error(request: Request, exc: AnamnesisError) -> JSONResponse:
        return error_response(_request_id(request), exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors()[:20]:
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            problems.append(f"{_location(tuple(error.get('loc', ())))}: {message}")
        return envelope(_request_id(request), 422, "validation_error", "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return envelope(_request_id(request), exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette calls this outside the middleware, where the request id is unbound again:
        # bound here, the traceback's line carries the id the client's envelope names.
        request_id = _request_id(request)
        with request_context(request_id):
            logger.exception("unhandled error in %s %s", request.method,
                             route_template(request.scope))
        return envelope(request_id, 500, "internal_error",
                        "internal error; the request id identifies it in the server log")


# SQLSTATEs that say the database, not the request, is the problem: a lost connection (class
# 08), the database dropped (3D000), the server shutting down or starting (57P01-57P03), too
# many connections (53300). asyncpg raises them as plain errors, which SQLAlchemy does not
# count as operational.
_UNAVAILABLE_STATES = ("3D000", "57P01", "57P02", "57P03", "53300")


def _database_gone(exc: Exception) -> bool:
    state = str(getattr(getattr(exc, "orig", None), "sqlstate", None) or "")
    return state.startswith("08") or state in _UNAVAILABLE_STATES


def install_database_error_handler(app: FastAPI) -> None:
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from app.store.db import model_switched

    @app.exception_handler(PoolTimeout)
    async def pool_exhausted(request: Request, exc: PoolTimeout) -> JSONResponse:
        # Overload, not a bug: every connection stayed busy for db.pool_timeout_s. Answered
        # here rather than by the catch-all, which lets the exception on to the server
        # after its 500 (uvicorn then logs it again and closes the connection, failing the
        # next request a client sends on it, whichever project's it is).
        logger.warning("no database connection free within the pool timeout in %s %s",
                       request.method, route_template(request.scope))
        return envelope(_request_id(request), 503, "unavailable",
                        "the server is busy (no database connection free); retry shortly",
                        retry_after_s=1)

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError)) \
                or _database_gone(exc):
            logger.warning("database unavailable: %s", exc.__class__.__name__)
            return envelope(_request_id(request), 503, "unavailable",
                            "the database is unavailable; retry shortly")
        if model_switched(exc):
            logger.info("a write of the old embedding model refused during a switch")
            return envelope(_request_id(request), 503, "embedding_model_switching",
                            "the embedding model is being switched; retry shortly",
                            retry_after_s=1)
        logger.exception("database error in %s %s", request.method,
                         route_template(request.scope))
        return envelope(_request_id(request), 500, "internal_error",
                        "internal error; the request id identifies it in the server log")
