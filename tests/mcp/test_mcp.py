"""The MCP server through the official ``mcp`` client, over both transports, against the live
server: stdio (``python -m app.cli mcp`` spawned with ANAMNESIS_URL and ANAMNESIS_API_KEY
pointing at it) and streamable HTTP (the live server's ``/mcp``, with the key in the header).
Only the LLM's replies are scripted (graph tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from anamnesis import AsyncAnamnesis
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from app.limits import MAX_TOP_K
from tests.clients.test_sdk_graph import SESSIONS, teach_graph
from tests.conftest import KeyFactory, LiveServer
from tests.consolidate.scripted_brain import Brain

ROOT = Path(__file__).resolve().parents[2]
TOOLS = {"add_memory", "search_memories", "get_memory", "list_memories", "delete_memory",
         "memory_history", "get_entity", "neighbors"}


@asynccontextmanager
async def over_stdio(base_url: str, key: str) -> AsyncIterator[ClientSession]:
    """``anamnesis mcp`` as an MCP host starts it: a process, configured by its environment."""
    env = {"ANAMNESIS_URL": base_url, "ANAMNESIS_API_KEY": key,
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python"),
                                          os.environ.get("PYTHONPATH", "")])}
    params = StdioServerParameters(command=sys.executable, args=["-m", "app.cli", "mcp"],
                                   env=env, cwd=ROOT)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def over_http(base_url: str, key: str) -> AsyncIterator[ClientSession]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http, \
            streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


OPEN = {"stdio": over_stdio, "http": over_http}


@pytest.fixture(params=sorted(OPEN))
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def key(api_key_factory: KeyFactory) -> str:
    return await api_key_factory()


Connect = Callable[[], AbstractAsyncContextManager[ClientSession]]


@pytest.fixture
def connect(transport: str, live_server: LiveServer, key: str) -> Connect:
    """Opens an MCP session with the test's key. Tests enter it themselves: the transports
    run task groups, which must be left by the task that entered them (a fixture is not)."""
    return lambda: OPEN[transport](live_server.base_url, key)


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """The tool's structured result; fails the test on a tool error."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def refused(session: ClientSession, tool: str, **arguments: Any) -> str:
    """The error text a refused tool call gives the model."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert result.is_error
    return " ".join(getattr(block, "text", "") for block in result.content)


def text_of(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


async def test_lists_the_tools_with_typed_schemas(connect: Connect) -> None:
    async with connect() as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(tools) == TOOLS
        for tool in tools.values():
            assert tool.description
            assert tool.output_schema is not None
            for name, field in tool.input_schema["properties"].items():
                assert field.get("description"), (tool.name, name)
        assert tools["search_memories"].input_schema["required"] == ["query"]
        assert tools["search_memories"].input_schema["properties"]["top_k"]["maximum"] == MAX_TOP_K
        assert tools["search_memories"].annotations is not None
        assert tools["search_memories"].annotations.read_only_hint is True
        assert tools["delete_memory"].annotations is not None
        assert tools["delete_memory"].annotations.destructive_hint is True


async def test_add_search_get_list_history_delete(connect: Connect, user: str) -> None:
    async with connect() as session:
        added = await call(session, "add_memory", text="I am allergic to peanuts", user_id=user,
                           infer=False, metadata={"topic": "health"})
        [stored] = added["stored"]
        assert stored["memory"] == "I am allergic to peanuts"
        memory_id = stored["id"]
        await call(session, "add_memory", text="My favourite city is Lisbon", user_id=user,
                   infer=False)

        found = await session.call_tool("search_memories", {"query": "peanut allergy",
                                                            "user_id": user})
        hits = found.structured_content["results"]  # type: ignore[index]
        assert hits[0]["id"] == memory_id
        assert "I am allergic to peanuts" in text_of(found).splitlines()[1]
        filtered = await call(session, "search_memories", query="city", user_id=user,
                              filters={"metadata.topic": "health"})
        assert [h["id"] for h in filtered["results"]] == [memory_id]

        detail = await call(session, "get_memory", memory_id=memory_id)
        assert detail["memory"] == "I am allergic to peanuts"
        assert detail["metadata"]["topic"] == "health"

        listed = await call(session, "list_memories", user_id=user)
        assert [m["memory"] for m in listed["results"]] == [
            "My favourite city is Lisbon", "I am allergic to peanuts"]
        assert listed["more"] is False
        first = await call(session, "list_memories", user_id=user, limit=1)
        assert [m["memory"] for m in first["results"]] == ["My favourite city is Lisbon"]
        assert first["more"] is True

        history = await call(session, "memory_history", memory_id=memory_id)
        assert [e["event"] for e in history["results"]] == ["ADD"]

        assert await call(session, "delete_memory", memory_id=memory_id) == {
            "id": memory_id, "deleted": True}
        assert "404 not_found" in await refused(session, "get_memory", memory_id=memory_id)
        assert "404 not_found" in await refused(session, "delete_memory", memory_id=memory_id)
        assert (await call(session, "search_memories", query="peanut allergy", user_id=user,
                           filters={"kind": "message"}))["results"][0]["id"] != memory_id


async def test_an_inferred_add_is_a_job_and_its_message_is_searchable_at_once(
        connect: Connect, user: str, brain: Brain) -> None:
    async with connect() as session:
        brain.facts = {"I live in Porto": ["User lives in Porto"]}
        added = await session.call_tool("add_memory", {"text": "I live in Porto",
                                                       "user_id": user})
        assert added.structured_content is not None
        job = added.structured_content["job"]
        assert job["status"] in ("PENDING", "RUNNING", "SUCCEEDED")
        assert added.structured_content["stored"] == []
        assert f"consolidation job {job['id']}" in text_of(added)
        found = await call(session, "search_memories", query="Porto", user_id=user,
                           filters={"kind": "message"})
        assert [h["memory"] for h in found["results"]] == ["I live in Porto"]


async def test_bad_arguments_reach_the_model_as_errors(connect: Connect) -> None:
    async with connect() as session:
        assert "422 validation_error" in await refused(session, "get_memory", memory_id="nope")
        assert "top_k" in await refused(session, "search_memories", query="x", top_k=0)
        assert "invalid_filter" in await refused(session, "search_memories", query="x",
                                                 filters={"colour": "red"})
        assert "entity_id or the name" in await refused(session, "get_entity")
        assert "entity_id or the name" in await refused(session, "neighbors")
        assert "not both" in await refused(session, "get_entity", entity_id=str(uuid.uuid4()),
                                           name="x")
        assert "no entity named 'Nobody'" in await refused(session, "get_entity", name="Nobody")


async def test_entities_and_neighbours_of_a_consolidated_graph(
        connect: Connect, live_server: LiveServer, key: str, user: str,
        brain: Brain) -> None:
    teach_graph(brain)
    async with AsyncAnamnesis(live_server.base_url, key) as sdk:
        for text, when in SESSIONS:
            job = await sdk.add(text, user_id=user, observed_at=when, wait=True)
            assert job.status == "SUCCEEDED", job.error
        past = [m async for m in sdk.get_all(user_id=user, kind="fact", include_superseded=True)]
    async with connect() as session:

        by_name = await session.call_tool("get_entity", {"name": "melanie", "user_id": user})
        melanie = by_name.structured_content
        assert melanie is not None
        assert melanie["name"] == "Melanie"
        assert [a["alias"] for a in melanie["aliases"]] == ["Mel"]
        assert {m["memory"] for m in melanie["memories"]} >= {"Melanie works at Siemens"}
        assert "Melanie (person" in text_of(by_name)
        by_id = await call(session, "get_entity", entity_id=melanie["id"])
        assert by_id["relations"] == melanie["relations"]

        hops = await call(session, "neighbors", name="Siemens", user_id=user, depth=2)
        assert {(n["entity"]["name"], n["distance"]) for n in hops["results"]} == {
            ("Melanie", 1), ("User", 2), ("Berlin", 2)}
        near = await call(session, "neighbors", entity_id=melanie["id"])
        assert {n["entity"]["name"] for n in near["results"]} == {"User", "Berlin", "Siemens"}

        found = await call(session, "search_memories", query="Where does Melanie live?",
                           user_id=user, relations=True)
        assert (melanie["id"], "lives_in", "Berlin") in {
            (r["source_id"], r["type"], r["target_name"]) for r in found["relations"]}
        assert "Relations among them:" in text_of(
            await session.call_tool("search_memories", {
                "query": "Where does Melanie live?", "user_id": user, "relations": True}))

        [paris] = [m for m in past if m.memory == "Melanie lives in Paris"]
        old = await session.call_tool("get_memory", {"memory_id": paris.id})
        assert old.structured_content is not None
        assert old.structured_content["superseded_by"] == paris.superseded_by
        assert "no longer true since 2024-02-20" in text_of(old)
        assert f"Superseded by {paris.superseded_by}." in text_of(old)
        assert f"said (2024-01-10) user: {SESSIONS[0][0]}" in text_of(old)
        changes = await call(session, "memory_history", memory_id=paris.id)
        assert [e["event"] for e in changes["results"]] == ["ADD", "SUPERSEDE"]


async def test_a_read_key_reads_but_may_not_write(transport: str, live_server: LiveServer,
                                                  key: str, user: str) -> None:
    async with AsyncAnamnesis(live_server.base_url, key) as sdk:
        reader = (await sdk.create_key(name="reader", scopes=["read"])).key
    async with OPEN[transport](live_server.base_url, reader) as session:
        listed = await session.call_tool("list_memories", {"user_id": user})
        assert listed.structured_content == {"results": [], "more": False}
        assert text_of(listed) == "No memories in this scope."
        nothing = await session.call_tool("search_memories", {"query": "x", "user_id": user})
        assert text_of(nothing) == "No memories match."
        assert "403 forbidden" in await refused(session, "add_memory", text="x", user_id=user,
                                                infer=False)


async def test_a_bad_key_over_stdio_is_the_tools_error(live_server: LiveServer) -> None:
    async with over_stdio(live_server.base_url, "anm_nothing_here") as session:
        assert "401 unauthorized" in await refused(session, "list_memories")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer anm_nothing_here"},
                                     {"X-API-Key": "anm_nothing_here"}])
async def test_http_without_a_valid_key_is_401_in_the_envelope(
        live_server: LiveServer, headers: dict[str, str], clean: None) -> None:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"}}}
    async with httpx.AsyncClient(base_url=live_server.base_url) as http:
        response = await http.post("/mcp", json=initialize, headers={
            **headers, "Accept": "application/json, text/event-stream"})
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"error", "detail", "request_id"}
    assert body["error"] == "unauthorized"


def test_the_command_needs_a_key() -> None:
    env = {name: value for name, value in os.environ.items() if name != "ANAMNESIS_API_KEY"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")])
    done = subprocess.run([sys.executable, "-m", "app.cli", "mcp", "--url",
                           "http://127.0.0.1:9"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "--api-key or ANAMNESIS_API_KEY" in done.stderr
