"""What the consolidation benchmarks ask of a running server's memory API: a job waited
for, a search."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx


async def wait_job(client: httpx.AsyncClient, job_id: str, timeout_s: float,
                   written: list[float] | None = None) -> dict[str, Any]:
    """The job once it ended (or ``timeout_s`` passed). ``written`` gets the
    ``time.perf_counter()`` of the first poll that saw its facts written (results listed
    while it still runs the graph step, or the job ended)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
        ended = job["status"] in ("SUCCEEDED", "FAILED")
        if written is not None and not written and (job["results"] or ended):
            written.append(time.perf_counter())
        if ended or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.25)


async def search(client: httpx.AsyncClient, query: str, user_id: str, top_k: int,
                 filters: dict[str, Any] | None = None, **extra: Any) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"query": query, "user_id": user_id, "top_k": top_k, **extra}
    if filters is not None:
        body["filters"] = filters
    response = await client.post("/v1/memories/search", json=body)
    response.raise_for_status()
    hits: list[dict[str, Any]] = response.json()["results"]
    return hits
