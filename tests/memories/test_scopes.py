"""``GET /v1/scopes``: the user, agent and run ids a project's memories are stored under."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import KeyFactory


async def remember(client: httpx.AsyncClient, text: str, **scope: str) -> None:
    response = await client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": text}], "infer": False, **scope})
    assert response.status_code == 201, response.text


async def listed(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/scopes", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_scope_ids_in_order_with_counts_by_prefix_and_paged(
        client: httpx.AsyncClient, api_key_factory: KeyFactory, app: Any) -> None:
    await remember(client, "I like jazz", user_id="bob", agent_id="tutor")
    await remember(client, "I live in Porto", user_id="alice", run_id="r1")
    await remember(client, "I moved to Lisbon", user_id="alice")
    await remember(client, "Agents only", agent_id="coach")

    users = await listed(client, kind="user")
    assert users == {"results": [{"id": "alice", "memories": 2}, {"id": "bob", "memories": 1}],
                     "next_cursor": None}
    agents = await listed(client, kind="agent")
    assert [(s["id"], s["memories"]) for s in agents["results"]] == [("coach", 1), ("tutor", 1)]
    assert [s["id"] for s in (await listed(client, kind="run"))["results"]] == ["r1"]
    assert [s["id"] for s in (await listed(client, kind="user", prefix="b"))["results"]] == [
        "bob"]

    first = await listed(client, kind="user", limit=1)
    assert (first["results"], first["next_cursor"]) == ([{"id": "alice", "memories": 2}],
                                                         "alice")
    rest = await listed(client, kind="user", limit=1, cursor="alice")
    assert (rest["results"], rest["next_cursor"]) == ([{"id": "bob", "memories": 1}], None)

    stranger = await api_key_factory()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                 headers={"Authorization": f"Bearer {stranger}"}) as other:
        assert await listed(other, kind="user") == {"results": [], "next_cursor": None}


async def test_bad_scope_requests_are_422(client: httpx.AsyncClient) -> None:
    for params in ({}, {"kind": "users"}, {"kind": "user", "limit": 0},
                   {"kind": "user", "prefix": ""}, {"kind": "user", "prefix": "a\x00"}):
        response = await client.get("/v1/scopes", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"] == "validation_error"
