"""The MCP tools, defined once over the Python SDK's ``AsyncAnamnesis``: each tool is one or
two SDK calls, so the MCP server has no behaviour of its own. Where the client comes from is
the transport's business (``ClientSource``): over stdio one client of a running server, over
HTTP a client bound to the caller's key (``app.mcp.http``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Literal

from anamnesis import AnamnesisError, AsyncAnamnesis, EntityDetail, Memory, MemoryDetail
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import Field

from app.limits import MAX_ID_CHARS, MAX_TOP_K
from app.mcp.results import (
    AddMemoryResult,
    DeletedResult,
    HistoryResult,
    MemoryListResult,
    NeighborsResult,
    SearchMemoriesResult,
    added_text,
    answer,
    detail_text,
    entity_text,
    history_text,
    list_text,
    neighbors_text,
    search_text,
)

ClientSource = Callable[[Context], AbstractAsyncContextManager[AsyncAnamnesis]]
"""Gives a tool call the SDK client to make its calls with (opened and closed around it)."""

INSTRUCTIONS = (
    "Long-term memory. Save what is worth remembering about the user with add_memory, look "
    "it up with search_memories before answering, and pass the same user_id every time. "
    "Search with relations=true to see who and what the memories connect; get_entity and "
    "neighbors explore those entities.")
MAX_LIST = 100

UserId = Annotated[str | None, Field(min_length=1, max_length=MAX_ID_CHARS,
                                     description="Whose memories: the end user's id.")]
AgentId = Annotated[str | None, Field(min_length=1, max_length=MAX_ID_CHARS,
                                      description="The agent's id, for an agent's own memories.")]
RunId = Annotated[str | None, Field(min_length=1, max_length=MAX_ID_CHARS,
                                    description="One conversation or session's id.")]
MemoryId = Annotated[str, Field(min_length=1, max_length=64,
                                description="A memory id, as search or list returned it.")]
EntityId = Annotated[str | None, Field(
    min_length=1, max_length=64,
    description="An entity id (relations' source_id/target_id). Or give name instead.")]
EntityName = Annotated[str | None, Field(
    min_length=1, max_length=255,
    description="An entity's name, when its id is not known (looked up in the scope).")]
READS = ToolAnnotations(read_only_hint=True, open_world_hint=False)


class MemoryTools:
    """The tools of the MCP server (see :func:`build_server`)."""

    def __init__(self, clients: ClientSource) -> None:
        self.clients = clients

    @asynccontextmanager
    async def client(self, ctx: Context) -> AsyncIterator[AsyncAnamnesis]:
        """The SDK client for this call; an error it raises (the server's answer, or an
        argument it refused) reaches the model as the tool's error text."""
        try:
            async with self.clients(ctx) as client:
                yield client
        except (AnamnesisError, ValueError) as exc:
            raise ToolError(str(exc)) from exc

    async def add_memory(
        self,
        ctx: Context,
        text: Annotated[str, Field(min_length=1, description="What to remember, in the "
                                   "words it was said (one message of the conversation).")],
        user_id: UserId = None, agent_id: AgentId = None, run_id: RunId = None,
        role: Annotated[Literal["user", "assistant"], Field(
            description="Who said it.")] = "user",
        infer: Annotated[bool, Field(description="true: the server's LLM distils the message "
                                     "into facts in the background (the message itself is "
                                     "searchable at once); false: store it verbatim.")] = True,
        metadata: Annotated[dict[str, Any] | None, Field(
            description="Labels to filter searches by later.")] = None,
    ) -> Annotated[CallToolResult, AddMemoryResult]:
        """Remember something said in the conversation, for the given user/agent/run."""
        async with self.client(ctx) as client:
            messages = [{"role": role, "content": text}]
            if infer:
                job = await client.add(messages, user_id=user_id, agent_id=agent_id,
                                       run_id=run_id, metadata=metadata, infer=True)
                result = AddMemoryResult(job=job)
            else:
                added = await client.add(messages, user_id=user_id, agent_id=agent_id,
                                         run_id=run_id, metadata=metadata, infer=False)
                result = AddMemoryResult(stored=added.results)
        return answer(result, added_text(result))

    async def search_memories(
        self,
        ctx: Context,
        query: Annotated[str, Field(min_length=1, description="What to look for, in plain "
                                    "words (a question works).")],
        user_id: UserId = None, agent_id: AgentId = None, run_id: RunId = None,
        top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K, description="How many.")] = 10,
        filters: Annotated[dict[str, Any] | None, Field(description=(
            'e.g. {"metadata.topic": "food"}, {"created_at": {"gte": "2024-01-01"}}, '
            '{"kind": "fact"}; AND/OR/NOT combine them.'))] = None,
        relations: Annotated[bool, Field(description="Also return the current relations "
                                         "among the hits' entities.")] = False,
    ) -> Annotated[CallToolResult, SearchMemoriesResult]:
        """The current memories most relevant to the query, best first."""
        async with self.client(ctx) as client:
            hits = await client.search(query, user_id=user_id, agent_id=agent_id,
                                       run_id=run_id, top_k=top_k, filters=filters,
                                       relations=relations)
        result = SearchMemoriesResult(results=list(hits), relations=hits.relations)
        return answer(result, search_text(result))

    async def get_memory(self, ctx: Context, memory_id: MemoryId,
                         ) -> Annotated[CallToolResult, MemoryDetail]:
        """One memory with where it came from (the messages it was distilled from) and what
        replaced it, if it no longer holds."""
        async with self.client(ctx) as client:
            memory = await client.get(memory_id)
        return answer(memory, detail_text(memory))

    async def list_memories(
        self,
        ctx: Context,
        user_id: UserId = None, agent_id: AgentId = None, run_id: RunId = None,
        kind: Annotated[Literal["fact", "message"] | None, Field(
            description="fact: what was distilled; message: what was said; unset: both.",
        )] = None,
        limit: Annotated[int, Field(ge=1, le=MAX_LIST, description="How many.")] = 20,
    ) -> Annotated[CallToolResult, MemoryListResult]:
        """The scope's current memories, newest first."""
        async with self.client(ctx) as client:
            found: list[Memory] = []
            async for memory in client.get_all(user_id=user_id, agent_id=agent_id,
                                               run_id=run_id, kind=kind, page_size=limit + 1):
                found.append(memory)
                if len(found) > limit:
                    break
        result = MemoryListResult(results=found[:limit], more=len(found) > limit)
        return answer(result, list_text(result))

    async def delete_memory(self, ctx: Context, memory_id: MemoryId,
                            ) -> Annotated[CallToolResult, DeletedResult]:
        """Erase a memory for good, everywhere (its history included). Only when asked to
        forget it: a fact that changed is replaced by adding the new one."""
        async with self.client(ctx) as client:
            await client.delete(memory_id)
        return answer(DeletedResult(id=memory_id), f"Erased memory {memory_id}.")

    async def memory_history(self, ctx: Context, memory_id: MemoryId,
                             ) -> Annotated[CallToolResult, HistoryResult]:
        """How a memory changed over time, oldest first, and what caused each change."""
        async with self.client(ctx) as client:
            result = HistoryResult(results=await client.history(memory_id))
        return answer(result, history_text(memory_id, result))

    async def get_entity(
        self, ctx: Context, entity_id: EntityId = None, name: EntityName = None,
        user_id: UserId = None, agent_id: AgentId = None, run_id: RunId = None,
    ) -> Annotated[CallToolResult, EntityDetail]:
        """Someone or something the memories talk about: its relations, the memories that
        mention it and its other names."""
        async with self.client(ctx) as client:
            found = await _entity_id(client, entity_id, name, user_id, agent_id, run_id)
            entity = await client.get_entity(found)
        return answer(entity, entity_text(entity))

    async def neighbors(
        self, ctx: Context, entity_id: EntityId = None, name: EntityName = None,
        user_id: UserId = None, agent_id: AgentId = None, run_id: RunId = None,
        depth: Annotated[int, Field(ge=1, le=3, description="At most this many relations "
                                    "away.")] = 1,
    ) -> Annotated[CallToolResult, NeighborsResult]:
        """The entities related to an entity, nearest first (for questions that hop: "where
        does my sister's employer sit?")."""
        async with self.client(ctx) as client:
            found = await _entity_id(client, entity_id, name, user_id, agent_id, run_id)
            result = NeighborsResult(entity_id=found,
                                     results=await client.neighbors(found, depth=depth))
        return answer(result, neighbors_text(result))


async def _entity_id(client: AsyncAnamnesis, entity_id: str | None, name: str | None,
                     user_id: str | None, agent_id: str | None, run_id: str | None) -> str:
    """The id given, or that of the scope's entity with this name (its exact name first)."""
    if entity_id is not None and name is not None:
        raise ToolError("give entity_id or name, not both")
    if entity_id is not None:
        return entity_id
    if name is None:
        raise ToolError("give the entity_id or the name of the entity")
    matches = [e async for e in client.entities(user_id=user_id, agent_id=agent_id,
                                                run_id=run_id, name=name, page_size=20)]
    exact = [e for e in matches if e.name.casefold() == name.casefold()]
    if not matches:
        raise ToolError(f"no entity named {name!r} in this scope")
    return (exact or matches)[0].id


def build_server(clients: ClientSource) -> MCPServer:
    """The MCP server with the memory tools, each calling the API through ``clients``."""
    tools = MemoryTools(clients)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    server: MCPServer = MCPServer(name="anamnesis", title="Anamnesis memory",
                                  instructions=INSTRUCTIONS, version="0.1.0")
    # MCPServer configures the root logger (logging.basicConfig) when it has no handler; the
    # process's logging is app.logs' to set up, so that is undone.
    root.handlers[:] = handlers
    root.setLevel(level)
    writes = ToolAnnotations(read_only_hint=False, destructive_hint=False,
                             idempotent_hint=False, open_world_hint=False)
    erases = ToolAnnotations(read_only_hint=False, destructive_hint=True,
                             idempotent_hint=True, open_world_hint=False)
    server.add_tool(tools.add_memory, annotations=writes)
    server.add_tool(tools.delete_memory, annotations=erases)
    for read in (tools.search_memories, tools.get_memory, tools.list_memories,
                 tools.memory_history, tools.get_entity, tools.neighbors):
        server.add_tool(read, annotations=READS)
    return server
