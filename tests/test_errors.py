"""Every error comes in one envelope with the request id, and leaves stored memories alone."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.limits import (
    MAX_ID_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_MESSAGES_PER_ADD,
    MAX_METADATA_BYTES,
    MAX_QUERY_CHARS,
    MAX_TOP_K,
)
from app.store.db import Database
from app.store.repositories.keys import revoke_key

KeyFactory = Callable[..., Awaitable[str]]
MEMORY_ID = "00000000-0000-7000-8000-000000000000"
ENDPOINTS = [
    ("GET", "/v1/memories", None),
    ("POST", "/v1/memories", {"messages": [{"role": "user", "content": "hi"}], "user_id": "u1",
                              "infer": False}),
    ("DELETE", "/v1/memories?user_id=u1", None),
    ("POST", "/v1/memories/search", {"query": "anything"}),
    ("GET", f"/v1/memories/{MEMORY_ID}", None),
    ("PATCH", f"/v1/memories/{MEMORY_ID}", {"text": "changed"}),
    ("DELETE", f"/v1/memories/{MEMORY_ID}", None),
    ("GET", f"/v1/memories/{MEMORY_ID}/history", None),
]


def assert_envelope(response: httpx.Response, status: int, code: str) -> str:
    """The one error shape; returns its detail."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "request_id"}, body
    assert body["error"] == code, body
    assert isinstance(body["detail"], str)
    assert body["detail"]
    request_ids = response.headers.get_list("x-request-id")
    assert request_ids
    assert set(request_ids) == {body["request_id"]}, request_ids
    detail: str = body["detail"]
    return detail


def make_client(app: FastAPI, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                             headers=headers)


async def stored(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/v1/memories", params={"limit": 1000})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


@pytest.fixture
async def seeded(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Two memories that no failed request may change; returns them as listed."""
    response = await client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": "I keep chickens."},
                     {"role": "user", "content": "My car is a 1998 Volvo."}],
        "user_id": "u1", "infer": False})
    assert response.status_code == 201, response.text
    return await stored(client)


async def total_rows(database: Database) -> tuple[int, int]:
    async with database.engine.connect() as connection:
        memories = await connection.exec_driver_sql("SELECT count(*) FROM memories")
        events = await connection.exec_driver_sql("SELECT count(*) FROM memory_events")
        return int(memories.scalar_one()), int(events.scalar_one())


def key_prefix(key: str) -> str:
    assert key.startswith("anm_")
    return key.removeprefix("anm_").split("_", 1)[0]


# --- 401 ------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_missing_key_is_401_on_every_endpoint(anonymous: httpx.AsyncClient,
                                                    client: httpx.AsyncClient,
                                                    seeded: list[dict[str, Any]],
                                                    method: str, path: str,
                                                    body: dict[str, Any] | None) -> None:
    response = await anonymous.request(method, path, json=body)
    assert_envelope(response, 401, "unauthorized")
    assert await stored(client) == seeded


@pytest.mark.parametrize(("body", "headers"), [
    (b"{not json", {}),
    (b'{"messages": 5}', {}),
    (b"x" * 64, {"Content-Length": str(64 * 1024 * 1024)}),
])
async def test_no_key_is_401_before_the_body_is_read(anonymous: httpx.AsyncClient,
                                                     body: bytes,
                                                     headers: dict[str, str]) -> None:
    """Without a key the body is not read: a bad or huge one is still a 401, not 422/413."""
    response = await anonymous.post("/v1/memories", content=body,
                                     headers={"Content-Type": "application/json", **headers})
    assert_envelope(response, 401, "unauthorized")


@pytest.mark.parametrize("key", [
    "anm_deadbeef_" + "x" * 43,
    "not-a-key",
    "anm__",
])
async def test_wrong_key_is_401(app: FastAPI, client: httpx.AsyncClient,
                                seeded: list[dict[str, Any]], key: str) -> None:
    async with make_client(app) as other:
        for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
            for method, path, body in ENDPOINTS:
                response = await other.request(method, path, json=body, headers=headers)
                assert_envelope(response, 401, "unauthorized")
    assert await stored(client) == seeded


async def test_right_prefix_wrong_secret_is_401(app: FastAPI, api_key: str,
                                                seeded: list[dict[str, Any]],
                                                client: httpx.AsyncClient) -> None:
    forged = f"anm_{key_prefix(api_key)}_{secrets.token_urlsafe(32)}"
    async with make_client(app, {"Authorization": f"Bearer {forged}"}) as other:
        assert_envelope(await other.get("/v1/memories"), 401, "unauthorized")
    truncated = api_key[:-1]
    async with make_client(app, {"Authorization": f"Bearer {truncated}"}) as other:
        assert_envelope(await other.get("/v1/memories"), 401, "unauthorized")
    assert await stored(client) == seeded


@pytest.mark.parametrize("authorization", [
    "Basic {key}", "{key}", "Bearer", "Bearer    ", "Token", "Bearer{key}", "Digest {key}",
    "ApiKey {key}",
])
async def test_malformed_authorization_is_401(app: FastAPI, api_key: str,
                                              client: httpx.AsyncClient,
                                              seeded: list[dict[str, Any]],
                                              authorization: str) -> None:
    header = authorization.format(key=api_key)
    async with make_client(app, {"Authorization": header}) as other:
        assert_envelope(await other.get("/v1/memories"), 401, "unauthorized")
        # A broken Authorization header is not silently replaced by X-API-Key.
        response = await other.get("/v1/memories", headers={"X-API-Key": api_key})
        assert_envelope(response, 401, "unauthorized")
    assert await stored(client) == seeded


async def test_revoked_key_is_401(app: FastAPI, api_key_factory: KeyFactory,
                                  database: Database, settings: Settings) -> None:
    doomed = await api_key_factory("revocation")
    survivor = await api_key_factory("revocation")
    async with make_client(app, {"Authorization": f"Bearer {doomed}"}) as client:
        added = await client.post("/v1/memories", json={
            "messages": [{"role": "user", "content": "Written before revocation."}],
            "user_id": "u1", "infer": False})
        assert added.status_code == 201, added.text
        async with database.session_scope() as session:
            assert await revoke_key(session, key_prefix(doomed)) is True
        # Revoked behind this process's back: trusted at most api.key_cache_s longer.
        await asyncio.sleep(settings.api.key_cache_s)
        for method, path, body in ENDPOINTS:
            response = await client.request(method, path, json=body)
            assert_envelope(response, 401, "unauthorized")
        assert_envelope(await client.get("/v1/memories", headers={"Authorization": "",
                                                                  "X-API-Key": doomed}),
                        401, "unauthorized")
    async with make_client(app, {"Authorization": f"Bearer {survivor}"}) as other:
        memories = await stored(other)
        assert [m["memory"] for m in memories] == ["Written before revocation."]


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer {key}"},
    {"Authorization": "bearer {key}"},
    {"Authorization": "Token {key}"},
    {"Authorization": "  Token   {key}  "},
    {"X-API-Key": "{key}"},
    {"x-api-key": " {key} "},
])
async def test_accepted_key_headers(app: FastAPI, api_key: str, client: httpx.AsyncClient,
                                    seeded: list[dict[str, Any]],
                                    headers: dict[str, str]) -> None:
    filled = {name: value.format(key=api_key) for name, value in headers.items()}
    async with make_client(app, filled) as other:
        assert await stored(other) == seeded
        added = await other.post("/v1/memories", json={
            "messages": [{"role": "user", "content": "Added with another header."}],
            "user_id": "u1", "infer": False})
        assert added.status_code == 201, added.text


# --- 404 / 405 -------------------------------------------------------------------------


async def test_unknown_memory_is_404(client: httpx.AsyncClient,
                                     seeded: list[dict[str, Any]]) -> None:
    for method, path, body in ENDPOINTS[4:]:
        detail = assert_envelope(await client.request(method, path, json=body), 404,
                                 "not_found")
        assert MEMORY_ID in detail
    assert await stored(client) == seeded


@pytest.mark.parametrize("path", ["/nope", "/v1", "/v2/memories", "/v1/memories/x/y/z",
                                  f"/v1/memories/{MEMORY_ID}/histories"])
async def test_unknown_route_is_404(client: httpx.AsyncClient, anonymous: httpx.AsyncClient,
                                    path: str) -> None:
    assert_envelope(await client.get(path), 404, "not_found")
    # Under /v1/ a request without a key is turned away before routing: 401, not 404.
    anonymous_status = (401, "unauthorized") if path.startswith("/v1/") else (404, "not_found")
    assert_envelope(await anonymous.get(path), *anonymous_status)


async def test_wrong_method_is_405(client: httpx.AsyncClient,
                                   seeded: list[dict[str, Any]]) -> None:
    assert_envelope(await client.put("/v1/memories", json={}), 405, "method_not_allowed")
    assert_envelope(await client.post(f"/v1/memories/{MEMORY_ID}", json={}), 405,
                    "method_not_allowed")
    assert await stored(client) == seeded


# --- 413 ------------------------------------------------------------------------------


def oversized_add(settings: Settings) -> bytes:
    body = {"messages": [{"role": "user", "content": "z" * settings.api.max_body_bytes}],
            "user_id": "u1", "infer": False}
    payload = json.dumps(body).encode()
    assert len(payload) > settings.api.max_body_bytes
    return payload


async def test_body_over_limit_with_content_length_is_413(
        client: httpx.AsyncClient, anonymous: httpx.AsyncClient, settings: Settings,
        database: Database, seeded: list[dict[str, Any]]) -> None:
    rows = await total_rows(database)
    payload = oversized_add(settings)
    response = await client.post("/v1/memories", content=payload,
                                 headers={"Content-Type": "application/json"})
    assert "content-length" in {k.lower() for k in response.request.headers}
    detail = assert_envelope(response, 413, "payload_too_large")
    assert str(settings.api.max_body_bytes) in detail
    anonymous_response = await anonymous.post("/v1/memories", content=payload,
                                              headers={"Content-Type": "application/json"})
    assert_envelope(anonymous_response, 401, "unauthorized")  # no key: the body is not read
    assert await total_rows(database) == rows
    assert await stored(client) == seeded


async def test_streamed_body_over_limit_is_413(client: httpx.AsyncClient, settings: Settings,
                                               database: Database,
                                               seeded: list[dict[str, Any]]) -> None:
    rows = await total_rows(database)
    payload = oversized_add(settings)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 64 * 1024):
            yield payload[start:start + 64 * 1024]

    response = await client.post("/v1/memories", content=chunks(),
                                 headers={"Content-Type": "application/json"})
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert_envelope(response, 413, "payload_too_large")
    assert await total_rows(database) == rows
    assert await stored(client) == seeded


async def test_streamed_body_under_limit_is_accepted(client: httpx.AsyncClient) -> None:
    payload = json.dumps({"messages": [{"role": "user", "content": "Streamed in pieces."}],
                          "user_id": "u1", "infer": False}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 7):
            yield payload[start:start + 7]

    response = await client.post("/v1/memories", content=chunks(),
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text


# --- 422 ------------------------------------------------------------------------------


def add_body(**overrides: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "A perfectly fine message."}],
            "user_id": "u1", "infer": False, **overrides}


BIG_METADATA = {"blob": "m" * MAX_METADATA_BYTES}
INVALID = [
    pytest.param("POST", "/v1/memories", add_body(user_id=None), "user_id", id="no-scope"),
    pytest.param("POST", "/v1/memories", add_body(user_id="", agent_id=""), "user_id",
                 id="empty-scope"),
    pytest.param("POST", "/v1/memories", add_body(user_id="u" * (MAX_ID_CHARS + 1)), "user_id",
                 id="long-user-id"),
    pytest.param("POST", "/v1/memories",
                 add_body(messages=[{"role": "user", "content": "m"}] * (MAX_MESSAGES_PER_ADD + 1)),
                 "messages", id="too-many-messages"),
    pytest.param("POST", "/v1/memories", add_body(messages=[]), "messages", id="no-messages"),
    pytest.param("POST", "/v1/memories",
                 add_body(messages=[{"role": "user", "content": "c" * (MAX_MESSAGE_CHARS + 1)}]),
                 "messages.0.content", id="message-too-long"),
    pytest.param("POST", "/v1/memories", add_body(metadata=BIG_METADATA), "metadata",
                 id="metadata-too-large"),
    pytest.param("POST", "/v1/memories",
                 add_body(messages=[{"role": "robot", "content": "beep"}]), "messages.0.role",
                 id="bad-role"),
    pytest.param("POST", "/v1/memories", add_body(messages=[{"content": "no role"}]),
                 "messages.0.role", id="missing-role"),
    pytest.param("POST", "/v1/memories", add_body(expires_at="next tuesday"), "expires_at",
                 id="bad-expires-at"),
    pytest.param("POST", "/v1/memories", add_body(infer="maybe"), "infer", id="bad-infer"),
    pytest.param("POST", "/v1/memories", add_body(surprise=1), "surprise", id="extra-field"),
    pytest.param("POST", "/v1/memories/search", {"query": "q", "top_k": 0}, "top_k",
                 id="top-k-zero"),
    pytest.param("POST", "/v1/memories/search", {"query": "q", "top_k": MAX_TOP_K + 1}, "top_k",
                 id="top-k-too-big"),
    pytest.param("POST", "/v1/memories/search", {"query": ""}, "query", id="empty-query"),
    pytest.param("POST", "/v1/memories/search", {"query": "q" * (MAX_QUERY_CHARS + 1)},
                 "query", id="long-query"),
    pytest.param("POST", "/v1/memories/search", {"query": "q", "threshold": 1.5}, "threshold",
                 id="bad-threshold"),
    pytest.param("POST", "/v1/memories/search", {"top_k": 3}, "query", id="missing-query"),
    pytest.param("PATCH", f"/v1/memories/{MEMORY_ID}", {"metadata": BIG_METADATA}, "metadata",
                 id="patch-metadata-too-large"),
    pytest.param("PATCH", f"/v1/memories/{MEMORY_ID}", {"text": "t", "role": "user"}, "role",
                 id="patch-extra-field"),
    pytest.param("GET", "/v1/memories/not-a-uuid", None, "memory_id", id="get-non-uuid"),
    pytest.param("PATCH", "/v1/memories/12345", {"text": "t"}, "memory_id",
                 id="patch-non-uuid"),
    pytest.param("DELETE", "/v1/memories/abc-def", None, "memory_id", id="delete-non-uuid"),
    pytest.param("GET", "/v1/memories/zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz/history", None,
                 "memory_id", id="history-non-uuid"),
    pytest.param("GET", "/v1/memories?user_id=", None, "user_id", id="list-empty-user-id"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), INVALID)
async def test_invalid_request_is_422_naming_the_field(client: httpx.AsyncClient,
                                                       database: Database,
                                                       seeded: list[dict[str, Any]],
                                                       method: str, path: str,
                                                       body: dict[str, Any] | None,
                                                       field: str) -> None:
    rows = await total_rows(database)
    response = await client.request(method, path, json=body)
    detail = assert_envelope(response, 422, "validation_error")
    assert field in detail, detail
    assert await total_rows(database) == rows
    assert await stored(client) == seeded


async def test_long_idempotency_key_header_is_422(client: httpx.AsyncClient,
                                                  seeded: list[dict[str, Any]]) -> None:
    response = await client.post("/v1/memories", json=add_body(),
                                 headers={"Idempotency-Key": "k" * 256})
    detail = assert_envelope(response, 422, "validation_error")
    assert "idempotency" in detail.lower()
    assert await stored(client) == seeded


async def test_malformed_json_is_422(client: httpx.AsyncClient,
                                     seeded: list[dict[str, Any]]) -> None:
    response = await client.post("/v1/memories", content=b'{"messages": [',
                                 headers={"Content-Type": "application/json"})
    assert_envelope(response, 422, "validation_error")
    response = await client.post("/v1/memories/search", content=b"[1, 2]",
                                 headers={"Content-Type": "application/json"})
    assert_envelope(response, 422, "validation_error")
    assert await stored(client) == seeded


async def test_limits_are_inclusive(client: httpx.AsyncClient) -> None:
    """Exactly at each limit is still accepted (the 422 cases above are one past it)."""
    messages = [{"role": "user", "content": f"m{i}"} for i in range(MAX_MESSAGES_PER_ADD - 1)]
    messages.append({"role": "user", "content": "c" * MAX_MESSAGE_CHARS})
    response = await client.post("/v1/memories", json=add_body(
        messages=messages, user_id="u" * MAX_ID_CHARS,
        metadata={"blob": "m" * (MAX_METADATA_BYTES - len('{"blob":""}'))}))
    assert response.status_code == 201, response.text
    assert len(response.json()["results"]) == MAX_MESSAGES_PER_ADD
    search = await client.post("/v1/memories/search",
                               json={"query": "q" * MAX_QUERY_CHARS, "top_k": MAX_TOP_K})
    assert search.status_code == 200, search.text


UNSTORABLE = [
    pytest.param("POST", "/v1/memories",
                 json.dumps(add_body(messages=[{"role": "user", "content": "a\x00b"}])),
                 id="nul-in-content"),
    pytest.param("POST", "/v1/memories", json.dumps(add_body(metadata={"k": "a\x00b"})),
                 id="nul-in-metadata-value"),
    pytest.param("POST", "/v1/memories", json.dumps(add_body(metadata={"k\x00": 1})),
                 id="nul-in-metadata-key"),
    pytest.param("POST", "/v1/memories", json.dumps(add_body(user_id="a\x00b")),
                 id="nul-in-user-id"),
    pytest.param("POST", "/v1/memories", json.dumps(add_body(idempotency_key="k\x00")),
                 id="nul-in-idempotency-key"),
    pytest.param("POST", "/v1/memories", json.dumps(add_body(metadata={"n": float("nan")})),
                 id="nan-in-metadata"),
    pytest.param("POST", "/v1/memories", json.dumps(add_body(metadata={"n": 0})).replace(
        '"n": 0', '"n": 1e400'), id="infinity-in-metadata"),
    pytest.param("PATCH", "/v1/memories/{first}", json.dumps({"text": "a\x00b"}),
                 id="nul-in-patch-text"),
    pytest.param("PATCH", "/v1/memories/{first}",
                 json.dumps({"metadata": {"n": float("inf")}}), id="infinity-in-patch-metadata"),
    pytest.param("POST", "/v1/memories/search", json.dumps({"query": "q", "user_id": "a\x00"}),
                 id="nul-in-search-user-id"),
    pytest.param("POST", "/v1/memories/search",
                 json.dumps({"query": "q", "filters": {"metadata.k": "a\x00"}}),
                 id="nul-in-filter-value"),
    pytest.param("POST", "/v1/memories/search",
                 json.dumps({"query": "q", "filters": {"metadata.n": float("nan")}}),
                 id="nan-in-filter"),
    pytest.param("POST", "/v1/memories/search",
                 json.dumps({"query": "q", "filters": {"metadata.n": {"gt": float("inf")}}}),
                 id="infinity-in-filter"),
    pytest.param("GET", "/v1/memories?user_id=a%00b", None, id="nul-in-list-user-id"),
    pytest.param("DELETE", "/v1/memories?user_id=a%00b", None, id="nul-in-delete-scope"),
    # Lone surrogates (half of a UTF-16 pair): JSON can carry them, UTF-8 cannot.
    pytest.param("POST", "/v1/memories",
                 json.dumps({"messages": [{"role": "user", "content": "a\ud800b"}],
                             "user_id": "u1", "infer": False}), id="surrogate-in-content"),
    pytest.param("POST", "/v1/memories/search",
                 json.dumps({"query": "q", "filters": {"metadata.\udfff": 1}}),
                 id="surrogate-in-filter-key"),
    pytest.param("POST", "/v1/memories/search",
                 json.dumps({"query": "q", "filters": {"metadata.k": "\ud800"}}),
                 id="surrogate-in-filter-value"),
    pytest.param("PATCH", "/v1/memories/{first}", json.dumps({"metadata": {"k": "\ud800"}}),
                 id="surrogate-in-metadata"),
    pytest.param("GET", "/v1/relations?type=%00", None, id="nul-in-relation-type"),
    # Timestamps that leave years 1..9999 once in UTC.
    pytest.param("POST", "/v1/memories/search",
                 json.dumps({"query": "q", "as_of": "9999-12-31T23:00:00-14:00"}),
                 id="search-as-of-past-9999"),
    pytest.param("GET", "/v1/memories?as_of=0001-01-01T01:00:00%2B14:00", None,
                 id="list-as-of-before-year-1"),
    pytest.param("GET", "/v1/relations?as_of=9999-12-31T23:00:00-14:00", None,
                 id="relations-as-of-past-9999"),
    pytest.param("POST", "/v1/memories",
                 json.dumps({"messages": [{"role": "user", "content": "hi"}], "user_id": "u1",
                             "infer": False, "observed_at": "0001-01-01T00:00:00+14:00"}),
                 id="observed-at-before-year-1"),
    pytest.param("POST", "/v1/memories",
                 json.dumps({"messages": [{"role": "user", "content": "hi"}], "user_id": "u1",
                             "infer": False, "expires_at": "9999-12-31T23:59:00-14:00"}),
                 id="expires-at-past-9999"),
    # Within Python's range but too near its ends for the service's own date arithmetic
    # (the turn said up to six hours earlier): a 500 found by the fuzzer.
    pytest.param("POST", "/v1/memories",
                 json.dumps({"messages": [{"role": "user", "content": "hi"}], "user_id": "u1",
                             "infer": False, "observed_at": "0001-01-01T03:00:00Z"}),
                 id="observed-at-in-year-1"),
    # JSON nested past MAX_JSON_DEPTH (once stored, 300 deep broke every read of it).
    *[pytest.param("PATCH", "/v1/memories/{first}",
                   '{"metadata": ' + '{"k": ' * depth + "1" + "}" * depth + "}",
                   id=f"metadata-{depth}-deep") for depth in (33, 300)],
]


@pytest.mark.parametrize(("method", "path", "raw"), UNSTORABLE)
async def test_unstorable_input_is_422_not_500(client: httpx.AsyncClient, database: Database,
                                               seeded: list[dict[str, Any]], method: str,
                                               path: str, raw: str | None) -> None:
    """NUL characters and non-finite numbers cannot be stored in Postgres text/JSONB."""
    rows = await total_rows(database)
    response = await client.request(
        method, path.format(first=seeded[0]["id"]),
        content=None if raw is None else raw.encode(),
        headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert_envelope(response, 422, response.json()["error"])
    assert response.json()["error"] in {"validation_error", "invalid_filter"}
    assert await total_rows(database) == rows
    assert await stored(client) == seeded


async def test_json_past_the_parser_s_depth_is_400(client: httpx.AsyncClient,
                                                   database: Database,
                                                   seeded: list[dict[str, Any]]) -> None:
    """So deep the JSON parser itself gives up: a 400 in the envelope, nothing stored."""
    rows = await total_rows(database)
    depth = 5000
    response = await client.patch(
        f"/v1/memories/{seeded[0]['id']}", headers={"Content-Type": "application/json"},
        content=('{"metadata": ' + '{"k": ' * depth + "1" + "}" * depth + "}").encode())
    assert_envelope(response, 400, "bad_request")
    assert await total_rows(database) == rows
    assert await stored(client) == seeded


# --- envelope and request ids ---------------------------------------------------------


async def test_error_response_carries_one_request_id_header(
        client: httpx.AsyncClient) -> None:
    for response in (await client.get(f"/v1/memories/{MEMORY_ID}"),
                     await client.get("/no-such-route"),
                     await client.post("/v1/memories", json={}),
                     await client.post("/v1/memories", json=add_body(infer="maybe"))):
        body = response.json()
        assert response.headers.get_list("x-request-id") == [body["request_id"]]


async def test_client_request_id_is_echoed(client: httpx.AsyncClient,
                                           anonymous: httpx.AsyncClient) -> None:
    sent = "trace-abc.123:XYZ_9"
    ok = await client.get("/v1/memories", headers={"X-Request-ID": sent})
    assert ok.status_code == 200
    assert ok.headers.get_list("x-request-id") == [sent]
    for response in (await client.get(f"/v1/memories/{MEMORY_ID}",
                                      headers={"X-Request-ID": sent}),
                     await anonymous.get("/v1/memories", headers={"X-Request-ID": sent}),
                     await client.post("/v1/memories/search", json={"query": "q", "top_k": 0},
                                       headers={"X-Request-ID": sent})):
        assert_envelope(response, response.status_code, response.json()["error"])
        assert response.json()["request_id"] == sent


@pytest.mark.parametrize("supplied", ["has space", "x" * 129, "semi;colon", "ünï"])
async def test_unsafe_request_id_is_replaced(client: httpx.AsyncClient,
                                             supplied: str) -> None:
    response = await client.get(f"/v1/memories/{MEMORY_ID}",
                                headers={"X-Request-ID": supplied.encode()})
    assert_envelope(response, 404, "not_found")
    assert response.json()["request_id"] != supplied
    assert len(response.json()["request_id"]) == 32


async def test_every_response_has_a_fresh_request_id(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/v1/memories")).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


# --- the API key never leaks -----------------------------------------------------------


async def test_api_key_never_appears_in_a_response(app: FastAPI, api_key: str,
                                                   settings: Settings) -> None:
    secret = api_key.split("_", 2)[2]
    responses: list[httpx.Response] = []
    async with make_client(app, {"Authorization": f"Bearer {api_key}"}) as client:
        added = await client.post("/v1/memories", json=add_body())
        memory_id = added.json()["results"][0]["id"]
        responses += [
            added,
            await client.get("/v1/memories"),
            await client.get(f"/v1/memories/{memory_id}"),
            await client.patch(f"/v1/memories/{memory_id}", json={"metadata": {"k": 1}}),
            await client.get(f"/v1/memories/{memory_id}/history"),
            await client.post("/v1/memories/search", json={"query": "fine"}),
            await client.post("/v1/memories", json=add_body(idempotency_key="idem")),
            await client.post("/v1/memories", json=add_body(idempotency_key="idem")),
            await client.post("/v1/memories", json=add_body(user_id="u2",
                                                            idempotency_key="idem")),
            await client.delete(f"/v1/memories/{memory_id}"),
            await client.delete("/v1/memories", params={"user_id": "u1"}),
            await client.get(f"/v1/memories/{api_key}"),
            await client.get(f"/{api_key}"),
            await client.post("/v1/memories", json={"messages": "x", "user_id": "u1"}),
            await client.post("/v1/memories", json=add_body(infer="maybe")),
            await client.post("/v1/memories", content=oversized_add(settings),
                              headers={"Content-Type": "application/json"}),
            await client.get("/v1/memories", params={"cursor": api_key[:60]}),
            await client.get("/v1/memories", headers={"Authorization": f"Basic {api_key}"}),
            await client.get("/v1/memories", headers={"Authorization": f"Bearer {api_key}x"}),
            await client.get("/v1/memories", headers={"Authorization": api_key}),
        ]
    for response in responses:
        leaked = [response.text, *(f"{k}: {v}" for k, v in response.headers.multi_items())]
        for text in leaked:
            assert api_key not in text, (response.request.url, text)
            assert secret not in text, (response.request.url, text)
