"""Erasing a memory, a scope or a user: from the graph store, then from Postgres, then from
this server's search index, with a receipt of what each store removed.

The graph goes first: if Postgres then fails, the memories are still there and the same
request can be sent again (the graph step is idempotent); the other way round, a retry would
find nothing to erase and leave the graph holding what was read from the memories. Every
other server's index drops the erased memories as it reads the change log, and rewrites its
snapshot soon after (``MemoryIndex``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from app.auth import Caller
from app.domain import ProjectScope, Scope
from app.errors import NotFound, ValidationFailed
from app.index.memory_index import MemoryIndex
from app.memories.schemas import ErasureReceipt
from app.store.db import Database
from app.store.graph.base import GraphErasure, GraphStore
from app.store.repositories import erasure
from app.store.repositories import memories as repository
from app.store.repositories.erasure import ErasedRows


async def erase_memory(database: Database, graph: GraphStore, index: MemoryIndex | None,
                       caller: Caller, memory_id: uuid.UUID) -> ErasureReceipt:
    """The memory, whatever its state, and every copy of its words."""
    async with database.session_scope() as session:
        if not await repository.exists_any(session, caller.project_id, memory_id):
            raise NotFound(f"memory {memory_id} not found")
    held = await _held(index, [memory_id])
    graphed = await graph.detach_memories(caller.project_id, [memory_id])
    async with database.session_scope() as session:
        rows = await erasure.erase_memories(session, caller.project_id, [memory_id])
    return _receipt(rows, graphed, await _dropped(index, held))


async def erase_scope(database: Database, graph: GraphStore, index: MemoryIndex | None,
                      caller: Caller, scope: Scope) -> ErasureReceipt:
    """Everything of the scope (an unset id matches any): its memories in every state, its
    conversations and their jobs, its graph, its stored answers."""
    if scope.is_empty():
        raise ValidationFailed("give at least one of user_id, agent_id, run_id to delete a scope")
    where = ProjectScope(caller.project_id, scope.user_id, scope.agent_id, scope.run_id)
    before = await graph.delete_scope(where)
    async with database.session_scope() as session:
        ids = await erasure.memories_in_scope(session, caller.project_id, scope)
        held = await _held(index, ids)
        rows = await erasure.erase_memories(session, caller.project_id, ids, copies=False)
        rows.add(await erasure.erase_episodes(session, caller.project_id, scope))
    # Again: a consolidation of the scope that was writing its graph meanwhile.
    after = await graph.delete_scope(where)
    graphed = GraphErasure(before.entities + after.entities, before.relations + after.relations)
    return _receipt(rows, graphed, await _dropped(index, held))


async def _held(index: MemoryIndex | None, ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Those of ``ids`` this server's index holds, once it has read every change committed
    before now."""
    if index is None or not ids:
        return []
    await index.refresh(time.monotonic())
    return index.holding(ids)


async def _dropped(index: MemoryIndex | None, held: Sequence[uuid.UUID]) -> int:
    """Waits for this server's index to read the erasure (committed by now); how many of
    the entries it held are gone."""
    if index is None or not held:
        return 0
    await index.refresh(time.monotonic())
    return len(held) - len(index.holding(held))


def _receipt(rows: ErasedRows, graphed: GraphErasure, dropped: int) -> ErasureReceipt:
    return ErasureReceipt(
        memories=rows.memories, history_events=rows.history_events, episodes=rows.episodes,
        messages_redacted=rows.messages_redacted, contexts_rewritten=rows.contexts_rewritten,
        jobs=rows.jobs, job_results_rewritten=rows.job_results_rewritten,
        graph_extractions=rows.graph_extractions, entity_merges=rows.entity_merges,
        idempotency_records=rows.idempotency_records, graph_entities=graphed.entities,
        graph_relations=graphed.relations, search_index=dropped)
