"""Structured logs: with ``log_format=json`` every line the real app writes while serving
requests and running a job is one JSON object naming its request or job, each request has an
access line with its route template, and what a client sent (message text, the facts made of
it, a query, the API key) appears in no line at INFO or above, even with DEBUG on."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.http import RequestContextMiddleware, install_error_handlers
from app.logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    job_context,
    redact_url,
    request_context,
)
from tests.consolidate.scripted_brain import Brain

# What a client sends and the service must not write down at INFO+.
SAID = "My locker code is zebra-4471-quartz, keep it secret."
FACT = "User's locker code is zebra-4471-quartz"
QUERY = "what is the marmalade-9921 locker code"


class Lines:
    """The lines written by the service's handler, parsed."""

    def __init__(self, buffer: io.StringIO) -> None:
        self.buffer = buffer

    def raw(self) -> list[str]:
        return self.buffer.getvalue().splitlines()

    def parsed(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.raw()]


@pytest.fixture
def json_lines() -> Iterator[Lines]:
    """The service's logging as ``anamnesis serve`` sets it up (JSON, DEBUG: the test also
    shows that what is kept out of INFO is only at DEBUG), writing to a buffer."""
    root = logging.getLogger()
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    level = root.level
    buffer = io.StringIO()
    handler = configure_logging(Settings(log_format="json", log_level="DEBUG"), stream=buffer)
    try:
        yield Lines(buffer)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for name, was in quiet.items():
            logging.getLogger(name).setLevel(was)


def at_info_or_above(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if logging.getLevelName(line["level"]) >= logging.INFO]


def access_line(lines: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    found = [line for line in lines
             if line["logger"] == "app.access" and line.get("request_id") == request_id]
    assert len(found) == 1, f"one access line for {request_id}: {found}"
    return found[0]


async def test_json_lines_carry_request_ids_and_never_what_the_client_sent(
        client: httpx.AsyncClient, api_key: str, brain: Brain, json_lines: Lines) -> None:
    brain.facts = {SAID: [FACT]}
    added = await client.post("/v1/memories", headers={"X-Request-ID": "logs-add-1"}, json={
        "messages": [{"role": "user", "content": SAID}], "user_id": "u-logs", "wait": True})
    assert added.status_code == 200, added.text
    assert added.json()["status"] == "SUCCEEDED"
    found = await client.post("/v1/memories/search", json={"query": QUERY, "user_id": "u-logs"})
    assert found.status_code == 200, found.text
    memory_id = found.json()["results"][0]["id"]
    read = await client.get(f"/v1/memories/{memory_id}")
    assert read.status_code == 200
    listed = await client.get("/v1/memories", params={"user_id": "u-logs", "kind": "fact"})
    assert listed.status_code == 200

    lines = json_lines.parsed()  # every line parses: one JSON object per line
    assert lines
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= line.keys(), line
        assert line["ts"].endswith("Z")
        assert datetime.fromisoformat(line["ts"]).utcoffset() is not None
        assert "traceback" not in line or line["level"] in ("ERROR", "CRITICAL")

    assert added.headers["x-request-id"] == "logs-add-1"  # the client's own id, kept
    expected = [(added, "POST", "/v1/memories", 200),
                (found, "POST", "/v1/memories/search", 200),
                (read, "GET", "/v1/memories/{memory_id}", 200),
                (listed, "GET", "/v1/memories", 200)]
    for response, method, route, status in expected:
        line = access_line(lines, response.headers["x-request-id"])
        assert line["level"] == "INFO"
        assert (line["method"], line["route"], line["status"]) == (method, route, status)
        assert line["duration_ms"] >= 0
    assert all(memory_id not in line["message"] for line in lines
               if line["logger"] == "app.access")  # the template, never the path
    assert all("u-logs" not in line["message"] for line in lines
               if line["logger"] == "app.access")  # nor the query string

    written = "\n".join(json.dumps(line) for line in at_info_or_above(lines))
    for secret in ("zebra-4471-quartz", "marmalade-9921", api_key, api_key[-16:]):
        assert secret not in written


async def test_lines_written_during_a_job_carry_its_id(
        client: httpx.AsyncClient, brain: Brain, json_lines: Lines) -> None:
    brain.facts = {SAID: [FACT]}
    added = await client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": SAID}], "user_id": "u-logs", "wait": True})
    assert added.json()["status"] == "SUCCEEDED", added.text
    job_id = added.json()["id"]

    lines = json_lines.parsed()
    of_job = [line for line in lines if line.get("job_id") == job_id]
    loggers = {line["logger"] for line in of_job}
    # The pipeline's summary, and the LLM client's calls deeper down, all name the job.
    assert "app.consolidate.pipeline" in loggers, lines
    assert "app.llm" in loggers, lines
    # The job runs on the queue's own task, not the request's: it is not the request's line.
    request_id = added.headers["x-request-id"]
    assert all(line.get("request_id") != request_id for line in of_job)
    assert access_line(lines, request_id)["status"] == 200


async def test_an_unhandled_error_logs_its_traceback_under_the_request_id(
        json_lines: Lines) -> None:
    application = FastAPI()
    application.add_middleware(RequestContextMiddleware, max_body_bytes=1024)
    install_error_handlers(application)

    @application.get("/boom/{thing_id}")
    async def boom(thing_id: str) -> None:
        logging.getLogger("some.library").warning("a library speaks mid-request")
        raise RuntimeError("kaboom")

    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/boom/secret-thing-id?q=private-words",
                                  headers={"X-Request-ID": "logs-boom-1"})
    assert response.status_code == 500
    assert response.json()["request_id"] == "logs-boom-1"

    lines = json_lines.parsed()
    library = [line for line in lines if line["logger"] == "some.library"]
    assert [line.get("request_id") for line in library] == ["logs-boom-1"]
    errors = [line for line in lines if line["level"] == "ERROR" and line["logger"] == "app.http"]
    assert len(errors) == 1, errors
    assert errors[0]["request_id"] == "logs-boom-1"
    assert errors[0]["exc_type"] == "RuntimeError"
    assert "kaboom" in errors[0]["traceback"]
    assert "/boom/{thing_id}" in errors[0]["message"]
    access = access_line(lines, "logs-boom-1")
    assert (access["route"], access["status"]) == ("/boom/{thing_id}", 500)
    assert all("secret-thing-id" not in line["message"] and "private-words" not in
               line["message"] for line in lines)


def record(level: int, message: str, *, exc: BaseException | None = None,
           **extra: Any) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    made = logging.LogRecord("app.example", level, __file__, 1, message, (), exc_info)
    made.__dict__.update(extra)
    ContextFilter().filter(made)
    return made


def failure() -> BaseException:
    try:
        raise KeyError("inner detail")
    except KeyError:
        return sys.exc_info()[1]  # type: ignore[return-value]


def test_a_traceback_only_at_error_and_only_listed_fields() -> None:
    formatter = JsonFormatter()
    warned = json.loads(formatter.format(record(logging.WARNING, "w", exc=failure(),
                                                color_message="smuggled")))
    assert warned["exc_type"] == "KeyError"
    assert "traceback" not in warned
    assert "smuggled" not in json.dumps(warned)  # a library's extra= is not copied
    errored = json.loads(formatter.format(record(logging.ERROR, "e\nsecond line",
                                                 exc=failure())))
    assert errored["exc_type"] == "KeyError"
    assert "inner detail" in errored["traceback"]
    assert "\n" not in formatter.format(record(logging.ERROR, "e\nx", exc=failure()))
    plain = json.loads(formatter.format(record(logging.INFO, "hello")))
    assert set(plain) == {"ts", "level", "logger", "message"}


def test_ids_bound_in_context_reach_both_formats() -> None:
    with request_context("req-7"), job_context("job-9"):
        bound = record(logging.INFO, "inside")
    outside = record(logging.INFO, "outside")
    line = json.loads(JsonFormatter().format(bound))
    assert (line["request_id"], line["job_id"]) == ("req-7", "job-9")
    assert "request_id" not in json.loads(JsonFormatter().format(outside))
    text = TextFormatter().format(bound)
    assert " INFO app.example [request_id=req-7 job_id=job-9]: inside" in text
    assert "[" not in TextFormatter().format(outside)


def test_text_is_the_default_format() -> None:
    assert Settings.model_fields["log_format"].default == "text"


@pytest.mark.parametrize(("url", "shown"), [
    ("https://user:hunter2@llm.example/v1", "https://***@llm.example/v1"),
    ("https://:hunter2@llm.example:8443/v1?x=1", "https://***@llm.example:8443/v1?x=1"),
    ("http://sk-token@127.0.0.1:8080/v1", "http://***@127.0.0.1:8080/v1"),
    ("https://llm.example/v1", "https://llm.example/v1"),
])
def test_credentials_in_a_logged_url_are_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown
