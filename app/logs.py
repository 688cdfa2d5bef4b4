"""The service's log lines: plain text for a person at a terminal, or one JSON object per line
for a log pipeline (``Settings.log_format``), each naming the request or the job it was
written for.

The ids travel in context variables: ``RequestContextMiddleware`` binds the request's id for
the time it serves the request, ``run_job`` binds the job's id while it runs the job. A filter
on the root handler copies them onto every record that reaches it, a library's as much as
ours (a filter on a logger would see only that logger's own records). A task started while an
id is bound inherits it; a long-lived task that serves every caller starts in an empty context
(``asyncio.create_task(..., context=contextvars.Context())``) so it carries no one's id.

What is logged at INFO and above holds no user text (messages, memories, queries) and no
secret (API keys, passwords in URLs): such values go to DEBUG, or are left out.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from app.config import Settings

REQUEST_ID: ContextVar[str | None] = ContextVar("anamnesis_request_id", default=None)
JOB_ID: ContextVar[str | None] = ContextVar("anamnesis_job_id", default=None)

# What a record may add to a JSON line besides its message: the ids, and the access log's
# fields. An allow-list, so a library's ``extra={...}`` never puts a value of its own there.
CONTEXT_FIELDS = ("request_id", "job_id")
ACCESS_FIELDS = ("method", "route", "status", "duration_ms")

# Loggers whose INFO is a line per outgoing HTTP request with the full URL (httpx writes a
# password in the URL as is): the LLM client logs the failures that matter itself.
_PER_REQUEST_AT_INFO = ("httpx", "httpcore")


@contextmanager
def request_context(request_id: str) -> Iterator[None]:
    """Lines logged inside carry ``request_id``."""
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Lines logged inside carry ``job_id``."""
    token = JOB_ID.set(job_id)
    try:
        yield
    finally:
        JOB_ID.reset(token)


class ContextFilter(logging.Filter):
    """Puts the bound request and job ids on each record (None where unbound); a record that
    names them itself keeps its own where none is bound. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get() or getattr(record, "request_id", None)
        record.job_id = JOB_ID.get() or getattr(record, "job_id", None)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    then ``request_id`` / ``job_id`` where bound and the access log's fields where given.
    A record carrying an exception adds ``exc_type``; only at ERROR and above also its
    ``traceback`` (the text of an exception may quote what it failed on).

    A ``logging.Formatter`` of our own rather than python-json-logger: that library writes
    every extra attribute a record carries (any library's ``extra=``, uvicorn's
    ``color_message``) unless each is named to be left out, and the point here is to write
    the fields above and nothing else; what is left is a ``json.dumps`` of a dict.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in (*CONTEXT_FIELDS, *ACCESS_FIELDS):
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = _qualified_name(record.exc_info[0])
            if record.levelno >= logging.ERROR:
                line["traceback"] = self.formatException(record.exc_info)
        if record.stack_info and record.levelno >= logging.ERROR:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger [request_id=… job_id=…]: message``, the traceback below it."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        ids = " ".join(f"{field}={value}" for field in CONTEXT_FIELDS
                       if (value := getattr(record, field, None)) is not None)
        context = f" [{ids}]" if ids else ""
        return f"{record.asctime} {record.levelname} {record.name}{context}: {record.message}"


class _ServiceHandler(logging.StreamHandler[TextIO]):
    """The root handler ``configure_logging`` installs (and replaces when called again)."""


def configure_logging(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Logs of every logger, and Python's warnings, go to ``stream`` (default: stderr) from
    ``settings.log_level`` up, in ``settings.log_format``, with the request and job ids.
    Replaces the handler an earlier call installed and leaves any other alone. Returns the
    handler."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _ServiceHandler)]:
        root.removeHandler(handler)
        handler.close()
    handler = _ServiceHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.captureWarnings(True)  # a library's warning is a WARNING line, not bare stderr
    for name in _PER_REQUEST_AT_INFO:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Alembic announces each plugin at INFO; only migrations that actually run are news.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    return handler


def redact_url(url: str) -> str:
    """``url`` with its credentials (``user:password@``, or a token as the user) shown as
    ``***``, for logging an endpoint."""
    parts = urlsplit(url)
    _, at, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"***@{host}")) if at else url


def _qualified_name(kind: type[BaseException]) -> str:
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
