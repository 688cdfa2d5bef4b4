"""What the consolidation benchmarks ask of a running server's memory API: a job waited
for, a search."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx


async def wait_job(client: httpx.AsyncClient, job_id: str, timeout_s: float,
                   seen: dict[str, float] | None = None) -> dict[str, Any]:
    """The job once it ended (or ``timeout_s`` passed). ``seen`` gets, for each memory the
    job's results list, the ``time.perf_counter()`` of the first poll that listed it (a job
    lists its facts as it writes them, while it still runs)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
        ended = job["status"] in ("SUCCEEDED", "FAILED")
        if seen is not None:
            now = time.perf_counter()
            for result in job["results"]:
                seen.setdefault(result["id"], now)
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
