"""The graph as a projection of Postgres: stored extractions applied to the graph store, once
after their episode's write, again when that failed, and all of them on a rebuild.

Every path takes the scope's consolidation lock (``jobs.scope_lock``) around what it applies,
so a replay never interleaves with a job writing the same scope's graph.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from app.consolidate import graph
from app.domain import ProjectScope, Scope
from app.embeddings import Embedder
from app.store.db import Database
from app.store.graph.base import GraphStore
from app.store.models import GraphExtraction
from app.store.repositories import graph as graph_records
from app.store.repositories import jobs

logger = logging.getLogger(__name__)

BATCH = 100


def _scope(row: GraphExtraction) -> ProjectScope:
    return ProjectScope(row.project_id, row.user_id, row.agent_id, row.run_id)


async def apply_extraction(database: Database, store: GraphStore, embedder: Embedder,
                           recorded: GraphExtraction) -> bool:
    """Projects a stored extraction into the graph store; the caller holds the scope lock.
    A failure leaves it unapplied (the memories are written and the job is done): the sweep
    tries again (``reapply_unapplied``) and ``anamnesis graph rebuild`` replays it."""
    async with database.session_scope() as session:
        refused = await graph_records.refused_merges(session, recorded.project_id)
    try:
        applied = await graph.apply(store, embedder, _scope(recorded), recorded.id,
                                    recorded.episode_id, recorded.payload,
                                    recorded.observed_at, refused=refused)
    except Exception:
        logger.exception("graph extraction %s could not be applied; the sweep tries again",
                         recorded.id)
        return False
    async with database.session_scope() as session:
        await graph_records.add_merges(session, recorded.project_id, applied.merges,
                                       recorded.id)
        await graph_records.mark_applied(session, recorded.id)
    return True


async def reapply_unapplied(database: Database, store: GraphStore, embedder: Embedder, *,
                            grace: timedelta, limit: int = BATCH) -> int:
    """Applies extractions left unapplied for longer than ``grace`` (the graph store was
    down, the process died between the write and the projection). Returns how many now are.
    Under the scope lock and checked again there, so two sweepers apply each one once."""
    async with database.session_scope() as session:
        pending = list(await graph_records.unapplied(session, grace, limit))
    done = 0
    for row in pending:
        scope = Scope(row.user_id, row.agent_id, row.run_id)
        async with jobs.scope_lock(database.engine, row.project_id, scope):
            async with database.session_scope() as session:
                if await graph_records.is_applied(session, row.id):
                    continue
            done += await apply_extraction(database, store, embedder, row)
    if pending:
        logger.warning("re-applied %d of %d graph extraction(s) left unapplied", done,
                       len(pending))
    return done


async def rebuild_graph(database: Database, store: GraphStore, embedder: Embedder,
                        project_id: uuid.UUID) -> dict[str, int]:
    """The project's graph made again from Postgres, into ``store``: cleared, then every
    logged extraction and entity deletion replayed in order (the graph is a projection).
    Memories deleted since are left out, as deleting them detached them."""
    await store.clear_project(project_id)
    async with database.session_scope() as session:
        await graph_records.forget_merges(session, project_id)
    return await _replay(database, store, embedder, project_id, None)


async def rebuild_scope(database: Database, store: GraphStore, embedder: Embedder,
                        project_id: uuid.UUID, scope: Scope) -> dict[str, int]:
    """The graph of exactly one scope made again, under its consolidation lock: after a
    merge was undone, so the alias's mentions become an entity of their own."""
    async with jobs.scope_lock(database.engine, project_id, scope):
        await store.delete_scope(ProjectScope(project_id, scope.user_id, scope.agent_id,
                                            scope.run_id), exact=True)
        async with database.session_scope() as session:
            await graph_records.forget_merges(session, project_id, scope)
        return await _replay(database, store, embedder, project_id, scope)


async def _replay(database: Database, store: GraphStore, embedder: Embedder,
                  project_id: uuid.UUID, scope: Scope | None) -> dict[str, int]:
    async with database.session_scope() as session:
        refused = await graph_records.refused_merges(session, project_id)
    counts = {"extractions": 0, "entities_deleted": 0, "entities": 0, "relations": 0}
    after = None
    while True:
        async with database.session_scope() as session:
            batch = await graph_records.extractions(session, project_id, after=after,
                                                    limit=BATCH, scope=scope)
        if not batch:
            return counts
        for row in batch:
            after = row.id
            if row.payload.get("kind") == graph_records.DELETED_ENTITY:
                await store.delete_entity(project_id, uuid.UUID(row.payload["entity_id"]))
                counts["entities_deleted"] += 1
                continue
            memory_ids = [uuid.UUID(f["memory_id"]) for f in row.payload.get("facts", [])
                          if f.get("memory_id")]
            async with database.session_scope() as session:
                gone = await graph_records.deleted_memories(session, project_id, memory_ids)
            applied = await graph.apply(store, embedder, _scope(row), row.id, row.episode_id,
                                        row.payload, row.observed_at, gone=gone,
                                        refused=refused)
            async with database.session_scope() as session:
                await graph_records.add_merges(session, project_id, applied.merges, row.id)
                await graph_records.mark_applied(session, row.id)
            counts["extractions"] += 1
            counts["entities"] += applied.entities
            counts["relations"] += applied.relations
