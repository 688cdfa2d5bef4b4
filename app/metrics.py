"""``/metrics`` in the Prometheus text format: requests by route, status and time; jobs by
state (the queue's depth is the PENDING ones) and what their LLM calls cost; the in-process
index's size and how far it lags the change log. One registry per app (tests run several).
Aggregates over every project, never a project's name or id: expose it to operators only."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http import route_template
from app.resources import Resources
from app.store.repositories import changes, jobs

# Seconds: searches take milliseconds, a waited-for consolidation up to a minute.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("anamnesis_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.seconds = Histogram("anamnesis_http_request_duration_seconds",
                                 "Time to answer an HTTP request", ["method", "route"],
                                 buckets=BUCKETS, registry=self.registry)
        self.jobs = Gauge("anamnesis_jobs", "Consolidation jobs by state", ["state"],
                          registry=self.registry)
        self.llm_calls = Gauge("anamnesis_llm_calls", "LLM calls made by jobs",
                               registry=self.registry)
        self.llm_tokens = Gauge("anamnesis_llm_tokens", "LLM tokens spent by jobs", ["kind"],
                                registry=self.registry)
        self.llm_truncated = Gauge("anamnesis_llm_truncated_replies",
                                   "LLM replies cut at their token limit",
                                   registry=self.registry)
        self.llm_failed_jobs = Gauge("anamnesis_llm_failed_jobs",
                                     "Jobs failed by an LLM error", registry=self.registry)
        self.index_memories = Gauge("anamnesis_index_memories",
                                    "Memories in this process's search index",
                                    registry=self.registry)
        self.index_lag = Gauge("anamnesis_index_lag_changes",
                               "Change-log entries this process's index has not read",
                               registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.seconds.labels(method, route).observe(seconds)

    async def render(self, resources: Resources) -> bytes:
        """The current numbers (the job and change-log ones read from Postgres now)."""
        async with resources.database.session_scope() as session:
            totals = await jobs.totals(session)
            last = await changes.last_seq(session)
        for state, count in totals.by_status.items():
            self.jobs.labels(state).set(count)
        self.llm_calls.set(totals.llm_calls)
        self.llm_tokens.labels("prompt").set(totals.prompt_tokens)
        self.llm_tokens.labels("completion").set(totals.completion_tokens)
        self.llm_truncated.set(totals.truncated_replies)
        self.llm_failed_jobs.set(totals.llm_failures)
        index = resources.index
        self.index_memories.set(index.live if index is not None else 0)
        self.index_lag.set(max(0, last - index.position) if index is not None else 0)
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Times each HTTP request and counts it by method, matched route template (never the
    path itself: ids would make every memory its own series) and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def counted_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        finally:
            self.metrics.observe(scope["method"], route_template(scope), status,
                                 time.perf_counter() - began)
