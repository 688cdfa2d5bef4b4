"""``GET /v1/jobs``: a project's recent consolidation jobs, newest first, by status, paged
(real app, Postgres, in-process queue; the LLM the scripted server)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import KeyFactory
from tests.consolidate.scripted_brain import Brain
from tests.consolidate.test_consolidation_api import consolidate
from tests.scripted_llm import ScriptedLLM


async def listed(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/jobs", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_recent_jobs_newest_first_by_status_and_paged(
        client: httpx.AsyncClient, brain: Brain, scripted_llm: ScriptedLLM,
        api_key_factory: KeyFactory, app: Any) -> None:
    scripted_llm.responder = lambda body: "not JSON at all"
    failed = await consolidate(client, "I collect stamps.")
    assert failed["status"] == "FAILED"
    brain.facts = {"I row.": ["User rows"], "I sail.": ["User sails"]}
    scripted_llm.responder = brain
    rowing = await consolidate(client, "I row.")
    sailing = await consolidate(client, "I sail.")

    everything = await listed(client)
    assert [job["id"] for job in everything["results"]] == [
        sailing["id"], rowing["id"], failed["id"]]
    assert everything["next_cursor"] is None
    assert everything["results"][0] == sailing  # the same shape as GET /v1/jobs/{id}
    assert everything["results"][2]["error"]["code"] == "llm_bad_output"

    only_failed = await listed(client, status="FAILED")
    assert [job["id"] for job in only_failed["results"]] == [failed["id"]]
    assert (await listed(client, status="RUNNING"))["results"] == []

    first = await listed(client, limit=2)
    assert [job["id"] for job in first["results"]] == [sailing["id"], rowing["id"]]
    assert first["next_cursor"] == rowing["id"]
    rest = await listed(client, limit=2, cursor=first["next_cursor"])
    assert ([job["id"] for job in rest["results"]], rest["next_cursor"]) == ([failed["id"]], None)

    stranger = await api_key_factory()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                 headers={"Authorization": f"Bearer {stranger}"}) as other:
        assert await listed(other) == {"results": [], "next_cursor": None}


async def test_bad_listing_requests_are_422(client: httpx.AsyncClient) -> None:
    for params in ({"status": "DONE"}, {"limit": 0}, {"limit": 1001}, {"cursor": "nope"}):
        response = await client.get("/v1/jobs", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"] == "validation_error"
