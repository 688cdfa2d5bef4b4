from __future__ import annotations

import httpx

from tests.consolidate.scripted_brain import Brain, FactSpec, rules


async def test_paris_then_berlin(client: httpx.AsyncClient, brain: Brain) -> None:
    brain.facts = {"I live in Paris.": [FactSpec("User lives in Paris", "2024-01-01")],
                   "I moved to Berlin last month.": [FactSpec("User lives in Berlin",
                                                              "2024-05-01")]}
    brain.decide = rules(("User lives in Berlin", "SUPERSEDE", "User lives in Paris"))
    first = await client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": "I live in Paris."}], "user_id": "u1",
        "observed_at": "2024-01-10T10:00:00Z", "wait": True})
    assert first.status_code == 200, first.text
    print(first.json())
    second = await client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": "Hello"},
                     {"role": "user", "content": "I moved to Berlin last month."}],
        "user_id": "u1", "observed_at": "2024-06-01T10:00:00Z", "wait": True})
    assert second.status_code == 200, second.text
    print(second.json())
    listed = (await client.get("/v1/memories", params={"user_id": "u1"})).json()["results"]
    print(listed)
    old = (await client.get("/v1/memories", params={"user_id": "u1",
                                                     "as_of": "2024-03-01T00:00:00Z"})).json()
    print(old)
    detail = (await client.get(f"/v1/memories/{listed[0]['id']}")).json()
    print(detail)
    history = await client.get(f"/v1/memories/{old['results'][0]['id']}/history")
    print(history.json())
