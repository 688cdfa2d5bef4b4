"""Keys with scopes: read, write, admin; admin keys make, list and revoke the project's keys
over the API, as the CLI does."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from fastapi import FastAPI

from app.auth import Caller, KeyCache
from app.config import Settings
from app.store.db import Database
from app.store.repositories.keys import revoke_key
from tests.conftest import KeyFactory


def keyed(app: FastAPI, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                             headers={"Authorization": f"Bearer {key}"})


async def make_key(client: httpx.AsyncClient, *scopes: str) -> str:
    response = await client.post("/v1/keys", json={"name": "+".join(scopes),
                                                   "scopes": list(scopes)})
    assert response.status_code == 201, response.text
    assert response.json()["scopes"] == list(scopes)
    return str(response.json()["key"])


REQUESTS: dict[str, tuple[str, str, object]] = {
    "add": ("POST", "/v1/memories", {"messages": [{"role": "user", "content": "Likes tea."}],
                                     "user_id": "u1", "infer": False}),
    "search": ("POST", "/v1/memories/search", {"query": "tea", "user_id": "u1"}),
    "list": ("GET", "/v1/memories?user_id=u1", None),
    "instruct": ("PATCH", "/v1/project", {"instructions": "Only keep food preferences."}),
    "keys": ("GET", "/v1/keys", None),
}


@pytest.mark.parametrize(("scopes", "allowed"), [
    (("read",), {"search", "list"}),
    (("write",), {"add"}),
    (("read", "write"), {"add", "search", "list"}),
    (("admin",), {"instruct", "keys"}),
])
async def test_a_key_does_what_its_scopes_allow(app: FastAPI, client: httpx.AsyncClient,
                                                scopes: tuple[str, ...],
                                                allowed: set[str]) -> None:
    async with keyed(app, await make_key(client, *scopes)) as scoped:
        for name, (method, path, body) in REQUESTS.items():
            response = await scoped.request(method, path, json=body)
            if name in allowed:
                assert response.status_code < 300, (scopes, path, response.text)
            else:
                assert response.status_code == 403, (scopes, path, response.text)
                assert response.json()["error"] == "forbidden"
    project = (await client.get("/v1/project")).json()
    assert (project["instructions"] is not None) == ("instruct" in allowed)


async def test_an_admin_key_lists_and_revokes_its_projects_keys(
        app: FastAPI, client: httpx.AsyncClient, api_key_factory: KeyFactory) -> None:
    reader = await make_key(client, "read")
    listed = (await client.get("/v1/keys")).json()["results"]
    assert [k["scopes"] for k in listed] == [["read", "write", "admin"], ["read"]]
    assert all("key" not in k for k in listed)
    prefix = reader.split("_")[1]
    assert listed[1]["prefix"] == prefix

    async with keyed(app, await api_key_factory("another project")) as other:
        assert (await other.delete(f"/v1/keys/{prefix}")).status_code == 404
        assert prefix not in {k["prefix"] for k in (await other.get("/v1/keys")).json()[
            "results"]}

    async with keyed(app, reader) as read_only:
        assert (await read_only.get("/v1/memories?user_id=u1")).status_code == 200
        revoked = await client.delete(f"/v1/keys/{prefix}")
        assert revoked.json() == {"prefix": prefix, "revoked": True}
        assert (await read_only.get("/v1/memories?user_id=u1")).status_code == 401
    assert (await client.delete(f"/v1/keys/{prefix}")).status_code == 404
    assert (await client.get("/v1/keys")).json()["results"][1]["revoked_at"] is not None


async def test_a_checked_key_is_trusted_for_key_cache_s_then_looked_up_again(
        app: FastAPI, client: httpx.AsyncClient, database: Database,
        settings: Settings) -> None:
    assert settings.api.key_cache_s > 0
    reader = await make_key(client, "read")
    async with keyed(app, reader) as read_only:
        assert (await read_only.get("/v1/memories?user_id=u1")).status_code == 200
        async with database.session_scope() as session:  # revoked behind the API's back
            assert await revoke_key(session, reader.split("_")[1]) is True
        # Its check is still fresh: the request is served without looking the key up.
        assert (await read_only.get("/v1/memories?user_id=u1")).status_code == 200
        await asyncio.sleep(settings.api.key_cache_s)
        refused = await read_only.get("/v1/memories?user_id=u1")
        assert refused.status_code == 401, refused.text


@pytest.mark.parametrize("body", [{"scopes": []}, {"scopes": ["root"]},
                                  {"scopes": ["read"], "owner": "x"}])
async def test_a_key_needs_known_scopes(client: httpx.AsyncClient,
                                        body: dict[str, object]) -> None:
    response = await client.post("/v1/keys", json=body)
    assert response.status_code == 422, response.text
    assert len((await client.get("/v1/keys")).json()["results"]) == 1


def test_the_key_cache_keeps_nothing_at_0_evicts_the_oldest_and_forgets_by_prefix() -> None:
    caller = Caller(project_id=uuid.uuid4(), key_id=uuid.uuid4(), request_id="r0")
    off = KeyCache(0)
    off.put(b"a", caller, "pa")
    assert off.get(b"a", "r1") is None
    cache = KeyCache(60, max_keys=2)
    cache.put(b"a", caller, "pa")
    cache.put(b"b", caller, "pb")
    cache.put(b"c", caller, "pc")  # the oldest, a, makes room
    assert cache.get(b"a", "r1") is None
    found = cache.get(b"b", "r2")
    assert found is not None
    assert (found.request_id, found.key_id) == ("r2", caller.key_id)
    cache.forget("pb")
    assert cache.get(b"b", "r3") is None
    assert cache.get(b"c", "r4") is not None
