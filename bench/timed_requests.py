"""Requests timed for the HTTP benchmarks: latency summaries, a tally of outcomes and
Server-Timing steps, a timed POST, and a pool that keeps N requests in flight."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

MAX_ERROR_SAMPLES = 5

def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def latency_summary(latencies_s: list[float]) -> dict[str, float | None]:
    if not latencies_s:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None,
                "min_ms": None, "max_ms": None}
    ms = sorted(v * 1000 for v in latencies_s)
    return {
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p95_ms": round(percentile(ms, 0.95), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "mean_ms": round(sum(ms) / len(ms), 2),
        "min_ms": round(ms[0], 2),
        "max_ms": round(ms[-1], 2),
    }


@dataclass
class Tally:
    """Outcome of a set of requests: latencies of successes, errors by status, samples."""

    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    server_ms: dict[str, list[float]] = field(default_factory=dict)  # Server-Timing steps

    def server_steps(self, header: str | None) -> None:
        for part in (header or "").split(","):
            name, _, duration = part.strip().partition(";dur=")
            if name and duration:
                self.server_ms.setdefault(name, []).append(float(duration))

    def server_steps_p50(self) -> dict[str, float] | None:
        if not self.server_ms:
            return None
        return {name: round(percentile(sorted(values), 0.5), 2)
                for name, values in self.server_ms.items()}

    def error(self, key: str, sample: str) -> None:
        self.errors[key] += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(f"{key}: {sample[:300]}")

    def errors_json(self) -> dict[str, Any]:
        return {"errors": sum(self.errors.values()), "errors_by_status": dict(self.errors),
                "error_samples": self.error_samples}


async def timed_post(
    client: httpx.AsyncClient, path: str, body: dict[str, Any] | str, tally: Tally, expect: int
) -> dict[str, Any] | None:
    """A JSON body, or an NDJSON one given as text."""
    started = time.perf_counter()
    try:
        response = await (client.post(path, json=body) if isinstance(body, dict) else
                          client.post(path, content=body.encode(),
                                      headers={"Content-Type": "application/x-ndjson"}))
    except httpx.HTTPError as exc:
        tally.error(type(exc).__name__, str(exc))
        return None
    elapsed = time.perf_counter() - started
    if response.status_code != expect:
        tally.error(str(response.status_code), response.text)
        return None
    tally.latencies_s.append(elapsed)
    tally.server_steps(response.headers.get("server-timing"))
    payload: dict[str, Any] = response.json()
    return payload


async def run_pool(jobs: list[Any], workers: int, handle: Any) -> float:
    """Run ``handle(job)`` over ``jobs`` with ``workers`` in flight; returns the wall time."""
    iterator: Iterator[Any] = iter(jobs)

    async def worker() -> None:
        for job in iterator:  # one shared iterator: each job is taken exactly once
            await handle(job)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, workers))))
    return time.perf_counter() - started
