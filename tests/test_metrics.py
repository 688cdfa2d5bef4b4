"""``/metrics``: Prometheus text with requests by route template and status, jobs by state
and their LLM cost, and the index's size and lag, read from the real app and database."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI

from tests.consolidate.scripted_brain import Brain


def value(text: str, series: str) -> float:
    """The sample of exactly this series (name and labels) in the exposition."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match, f"{series} not in /metrics"
    return float(match.group(1))


async def test_metrics_count_requests_jobs_and_the_index(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, brain: Brain,
        app: FastAPI) -> None:
    before = (await anonymous.get("/metrics")).text
    route = 'route="/v1/memories/search"'
    searched = f'anamnesis_http_requests_total{{method="POST",{route},status="200"}}'
    searches_before = value(before, searched) if searched in before else 0.0

    brain.facts = {"I moved to Oslo.": ["User lives in Oslo"]}
    added = await client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": "I moved to Oslo."}], "user_id": "u1",
        "wait": True})
    assert added.json()["status"] == "SUCCEEDED", added.text
    for _ in range(3):
        response = await client.post("/v1/memories/search",
                                     json={"query": "where", "user_id": "u1"})
        assert response.status_code == 200
    missing = await client.get("/v1/memories/00000000-0000-7000-8000-000000000000")
    assert missing.status_code == 404

    response = await anonymous.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert value(text, searched) == searches_before + 3
    assert value(text, 'anamnesis_http_requests_total{method="GET",'
                       'route="/v1/memories/{memory_id}",status="404"}') >= 1
    assert "00000000-0000-7000-8000" not in text  # templates, never ids
    assert value(text, 'anamnesis_jobs{state="SUCCEEDED"}') >= 1
    assert value(text, "anamnesis_llm_calls") >= 1
    assert value(text, 'anamnesis_llm_tokens{kind="prompt"}') > 0
    index = app.state.resources.index
    assert value(text, "anamnesis_index_memories") == index.live >= 2
    assert value(text, "anamnesis_index_lag_changes") >= 0
    timed = f'anamnesis_http_request_duration_seconds_count{{method="POST",{route}}}'
    assert value(text, timed) >= 3
