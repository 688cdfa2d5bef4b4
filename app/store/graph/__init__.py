"""The graph store: Neo4j when ``ANAMNESIS_NEO4J__URL`` is set, else Postgres tables."""

from __future__ import annotations

from app.config import Settings
from app.store.db import Database
from app.store.graph.base import GraphStore
from app.store.graph.postgres import PostgresGraphStore


async def open_graph_store(settings: Settings, database: Database) -> GraphStore:
    store: GraphStore
    if settings.neo4j.url:
        from app.store.graph.neo4j import Neo4jGraphStore

        store = Neo4jGraphStore.from_settings(settings.neo4j)
    else:
        store = PostgresGraphStore(database.companion(settings.db.graph_pool_size,
                                                      settings.db.pool_timeout_s))
    try:
        await store.setup()
    except BaseException:
        await store.aclose()
        raise
    return store
