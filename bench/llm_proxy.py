"""The bundled LLM server behind a small proxy that counts the tokens of every reply, so peers
that do not report their usage are measured on the same terms (``bench.consolidation``)."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import select
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

# -- the LLM server and a proxy that counts its tokens --------------------------------------------


@dataclass
class Traffic:
    """What went through the proxy: replies, their ``usage`` and llama.cpp's ``timings``."""

    requests: int = 0
    http_errors: int = 0
    abandoned: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_busy_s: float = 0.0
    finish_reasons: Counter[str] = field(default_factory=Counter)

    def copy(self) -> Traffic:
        return Traffic(self.requests, self.http_errors, self.abandoned, self.prompt_tokens,
                       self.cached_prompt_tokens, self.completion_tokens, self.llm_busy_s,
                       Counter(self.finish_reasons))

    def minus(self, earlier: Traffic) -> Traffic:
        return Traffic(self.requests - earlier.requests, self.http_errors - earlier.http_errors,
                       self.abandoned - earlier.abandoned,
                       self.prompt_tokens - earlier.prompt_tokens,
                       self.cached_prompt_tokens - earlier.cached_prompt_tokens,
                       self.completion_tokens - earlier.completion_tokens,
                       self.llm_busy_s - earlier.llm_busy_s,
                       self.finish_reasons - earlier.finish_reasons)

    def to_json(self) -> dict[str, Any]:
        return {"chat_requests": self.requests, "http_errors": self.http_errors,
                "abandoned": self.abandoned,
                "prompt_tokens": self.prompt_tokens,
                "cached_prompt_tokens": self.cached_prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "llm_busy_s": round(self.llm_busy_s, 1),
                "finish_reasons": dict(sorted(self.finish_reasons.items()))}


class CountingProxy:
    """An HTTP proxy on 127.0.0.1 in front of an OpenAI-compatible server: forwards every
    request as it is and adds up the ``usage`` (and llama.cpp ``timings``) of chat replies.

    A client that gives up (its timeout) closes its connection; the proxy then closes its own
    to the server, as a direct connection would, so llama.cpp cancels the generation instead of
    finishing a reply no one reads. Such requests count as ``abandoned``.
    """

    def __init__(self, upstream: str):
        target = urlsplit(upstream.rstrip("/"))  # http://host:port/v1
        if target.scheme != "http" or not target.hostname:
            raise ValueError(f"the counting proxy forwards to http:// URLs only, not {upstream}")
        self.upstream_host, self.upstream_port = target.hostname, target.port or 80
        self.upstream_path = target.path
        self._lock = threading.Lock()
        self._traffic = Traffic()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _client_gone(self) -> bool:
                readable, _, _ = select.select([self.connection], [], [], 0)
                if not readable:
                    return False
                try:
                    return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
                except OSError:
                    return True

            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                path = self.path[3:] if self.path.startswith("/v1") else self.path
                headers = {name: value for name, value in self.headers.items()
                           if name.lower() in ("content-type", "authorization", "accept")}
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port,
                                                      timeout=3600)
                outcome: dict[str, Any] = {}

                def exchange() -> None:
                    try:
                        upstream.request(method, proxy.upstream_path + path, body=body,
                                         headers=headers)
                        response = upstream.getresponse()
                        outcome["reply"] = (response.status,
                                            response.getheader("Content-Type",
                                                               "application/json"),
                                            response.read())
                    except (OSError, http.client.HTTPException) as exc:
                        outcome["error"] = exc

                worker = threading.Thread(target=exchange, daemon=True)
                worker.start()
                while worker.is_alive():
                    worker.join(0.5)
                    if worker.is_alive() and self._client_gone():
                        with contextlib.suppress(OSError):
                            if upstream.sock is not None:
                                upstream.sock.shutdown(socket.SHUT_RDWR)
                        worker.join()
                        upstream.close()
                        proxy._count_abandoned()
                        self.close_connection = True
                        return
                upstream.close()
                if "reply" not in outcome:
                    proxy._count_error()
                    self.send_error(502, f"upstream: {type(outcome.get('error')).__name__}")
                    return
                status, content_type, content = outcome["reply"]
                if path.endswith("/chat/completions"):
                    proxy._count(status, content)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="llm-proxy",
                                        daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def snapshot(self) -> Traffic:
        with self._lock:
            return self._traffic.copy()

    def _count_error(self) -> None:
        with self._lock:
            self._traffic.requests += 1
            self._traffic.http_errors += 1

    def _count_abandoned(self) -> None:
        with self._lock:
            self._traffic.requests += 1
            self._traffic.abandoned += 1

    def _count(self, status: int, content: bytes) -> None:
        try:
            data = json.loads(content)
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        usage = data.get("usage") or {}
        timings = data.get("timings") or {}
        choices = data.get("choices") or [{}]
        ok = 200 <= status < 300
        with self._lock:
            traffic = self._traffic
            traffic.requests += 1
            if not ok:
                traffic.http_errors += 1
            traffic.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            traffic.completion_tokens += int(usage.get("completion_tokens") or 0)
            details = usage.get("prompt_tokens_details") or {}
            traffic.cached_prompt_tokens += int(details.get("cached_tokens") or 0)
            traffic.llm_busy_s += (float(timings.get("prompt_ms") or 0)
                                   + float(timings.get("predicted_ms") or 0)) / 1000
            if ok:
                traffic.finish_reasons[str(choices[0].get("finish_reason"))] += 1
