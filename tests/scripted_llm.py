"""A real OpenAI-compatible HTTP server whose replies are scripted: the one fake these tests
allow. It speaks ``POST /v1/chat/completions`` (and ``GET /v1/models``, ``GET /health``) over
real HTTP on a free 127.0.0.1 port, from a background thread.

A request with ``stream: true`` (as the client sends) is answered as OpenAI streams: server-sent
events of a few characters each, then the finish reason, the usage and ``[DONE]``; a reply
with ``sse=False`` answers it with the whole completion instead, as a server that ignores
``stream`` would.

Each request takes the next scripted reply; with the script empty it asks ``responder`` (a
function of the request JSON, for deterministic decisions from the prompt); with neither it
answers 500 "no reply scripted". Every request is recorded, with the response sent.

    with ScriptedLLM() as llm:
        llm.script(Reply.error(503), {"facts": []}, Reply.slow(2.0))
        client = OpenAICompatibleClient(llm.base_url, "any-model")
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a chat completion carrying ``content``; or, when ``body`` is set
    or ``status`` is not 200, that status with ``body`` as it stands (an error, or a malformed
    200). Sent after ``delay_s``, to provoke client timeouts."""

    content: str = ""
    status: int = 200
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    finish_reason: str = "stop"
    sse: bool = True  # False: a streamed request gets the whole completion at once

    @classmethod
    def json(cls, value: BaseModel | Mapping[str, Any] | list[Any]) -> Reply:
        if isinstance(value, BaseModel):
            return cls(content=value.model_dump_json())
        return cls(content=json.dumps(value))

    @classmethod
    def error(cls, status: int, message: str = "scripted failure", *,
              retry_after: float | None = None) -> Reply:
        """An error in OpenAI's shape, with a ``Retry-After`` header when given."""
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        body = json.dumps({"error": {"message": message, "type": "scripted_error",
                                     "code": status}})
        return cls(status=status, body=body, headers=headers)

    @classmethod
    def slow(cls, delay_s: float, content: str = "{}") -> Reply:
        return cls(content=content, delay_s=delay_s)


Scriptable = Reply | str | BaseModel | Mapping[str, Any]
Responder = Callable[[dict[str, Any]], Scriptable]


def as_reply(item: Scriptable) -> Reply:
    """A string is the reply's content; a model or mapping is serialised as its JSON."""
    if isinstance(item, Reply):
        return item
    if isinstance(item, str):
        return Reply(content=item)
    return Reply.json(item)


@dataclass
class ScriptedRequest:
    body: dict[str, Any]
    headers: dict[str, str]
    response: dict[str, Any] | None = None  # the chat completion sent, None for raw bodies

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.body.get("messages", [])
        return messages


def rough_tokens(text: str) -> int:
    return max(1, len(text) // 4)


class ScriptedLLM:
    def __init__(self, *, reported_model: str | None = None) -> None:
        """``reported_model`` is the model name the completions report; default: the one
        asked for."""
        self.reported_model = reported_model
        self.responder: Responder | None = None
        self._script: deque[Reply] = deque()
        self._requests: list[ScriptedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._serial = 0

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the scripted LLM server is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def script(self, *replies: Scriptable) -> None:
        """Queue replies, answered in order."""
        with self._lock:
            self._script.extend(as_reply(reply) for reply in replies)

    @property
    def requests(self) -> list[ScriptedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def pending(self) -> int:
        """Scripted replies not yet sent."""
        with self._lock:
            return len(self._script)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._requests.clear()
            self.responder = None
            self.reported_model = None

    def start(self) -> ScriptedLLM:
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.llm = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="scripted-llm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes delayed replies
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ScriptedLLM:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _answer(self, body: dict[str, Any],
                headers: dict[str, str]) -> tuple[Reply, dict[str, Any]]:
        """The reply to one request and the chat completion to send ({} to send the reply's
        raw body); records the request."""
        record = ScriptedRequest(body=body, headers=headers)
        with self._lock:
            self._requests.append(record)
            self._serial += 1
            serial = self._serial
            reply = self._script.popleft() if self._script else None
            responder = self.responder
        if reply is None:
            reply = (as_reply(responder(body)) if responder is not None
                     else Reply.error(500, "no reply scripted"))
        if reply.delay_s:
            self._stopping.wait(reply.delay_s)
        if reply.body or reply.status != 200:
            return reply, {}
        prompt = "".join(str(message.get("content") or "") for message in record.messages)
        completion = {
            "id": f"chatcmpl-scripted-{serial}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.reported_model or body.get("model", "scripted"),
            "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                         "message": {"role": "assistant", "content": reply.content}}],
            "usage": {"prompt_tokens": rough_tokens(prompt),
                      "completion_tokens": rough_tokens(reply.content),
                      "total_tokens": rough_tokens(prompt) + rough_tokens(reply.content)},
        }
        record.response = completion
        return reply, completion


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    llm: ScriptedLLM


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx pools connections
    timeout = 10  # idle keep-alive connections are dropped
    disable_nagle_algorithm = True  # headers and body go in two writes

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, json.dumps({"status": "ok"}))
        elif self.path == "/v1/models":
            self._send(200, json.dumps({"object": "list", "data": [
                {"id": self.server.llm.reported_model or "scripted", "object": "model"}]}))
        else:
            self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/v1/chat/completions":
            self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send(400, json.dumps({"error": {"message": "request body is not JSON"}}))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply, completion = self.server.llm._answer(body, headers)
        if completion and body.get("stream") and reply.sse:
            self._stream(completion)
        elif completion:
            self._send(200, json.dumps(completion), reply.headers)
        else:
            self._send(reply.status, reply.body, reply.headers)

    def _stream(self, completion: dict[str, Any]) -> None:
        """The completion as OpenAI streams it, four characters an event, on a connection
        closed at its end (no length to announce)."""
        [choice] = completion["choices"]
        content = choice["message"]["content"]
        base = {key: completion[key] for key in ("id", "created", "model")}
        base["object"] = "chat.completion.chunk"
        events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant"},
                                        "finish_reason": None}]}]
        events += [{**base, "choices": [{"index": 0, "delta": {"content": content[i:i + 4]},
                                         "finish_reason": None}]}
                   for i in range(0, len(content), 4)]
        events += [{**base, "choices": [{"index": 0, "delta": {},
                                         "finish_reason": choice["finish_reason"]}]},
                   {**base, "choices": [], "usage": completion["usage"]}]
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for event in events:
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):  # the client cut the reply
            pass

    def _send(self, status: int, body: str, headers: Mapping[str, str] | None = None) -> None:
        data = body.encode()
        try:
            self.send_response(status)
            if not any(name.lower() == "content-type" for name in headers or {}):
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass
