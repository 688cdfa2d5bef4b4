"""Migrations run up, down and up again on a fresh database; the model must match the schema."""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from app.config import DatabaseSettings, Settings
from app.embeddings import SentenceTransformerEmbedder
from app.main import create_app
from app.store.db import SchemaMismatch, downgrade, migrate
from app.store.models import Base
from tests.conftest import plain_dsn

TABLES = {"projects", "api_keys", "memories", "memory_events", "idempotency_keys", "episodes",
          "jobs", "memory_sources", "entities", "relations", "entity_memories"}


async def _tables(url: str) -> set[str]:
    connection = await asyncpg.connect(plain_dsn(url))
    try:
        rows = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        extensions = await connection.fetch("SELECT extname FROM pg_extension")
    finally:
        await connection.close()
    return {r["tablename"] for r in rows} | {f"ext:{r['extname']}" for r in extensions}


async def test_upgrade_downgrade_upgrade(
        database_factory: Callable[[str], Awaitable[str]]) -> None:
    url = await database_factory("anamnesis_migrations")
    await asyncio.to_thread(migrate, url, 384)
    assert TABLES | {"alembic_version", "ext:vector"} <= await _tables(url)

    await asyncio.to_thread(downgrade, url, 384, "base")
    assert await _tables(url) & (TABLES | {"ext:vector"}) == set()

    await asyncio.to_thread(migrate, url, 384)
    assert await _tables(url) >= TABLES


async def test_start_refuses_model_of_other_dimension(
        database_factory: Callable[[str], Awaitable[str]], tmp_path: Path,
        embedder: SentenceTransformerEmbedder) -> None:
    url = await database_factory("anamnesis_dim768")
    await asyncio.to_thread(migrate, url, 768)
    app = create_app(Settings(data_dir=tmp_path, db=DatabaseSettings(url=url,
                                                                     migrate_on_start=False)),
                     embedder=embedder)
    with pytest.raises(SchemaMismatch, match="384-d vectors but the database stores 768-d"):
        async with app.router.lifespan_context(app):
            pass


async def test_each_vector_records_its_model_and_start_refuses_another(
        database_factory: Callable[[str], Awaitable[str]], tmp_path: Path,
        embedder: SentenceTransformerEmbedder) -> None:
    url = await database_factory("anamnesis_models")
    await asyncio.to_thread(migrate, url, 384)
    connection = await asyncpg.connect(plain_dsn(url))
    try:
        project = await connection.fetchval(
            "INSERT INTO projects (id, name) VALUES (gen_random_uuid(), 'p') RETURNING id")
        insert = ("INSERT INTO memories (id, project_id, text, content_hash, embedding) "
                  "VALUES (gen_random_uuid(), $1, 'hi', 'h', $2) RETURNING id")
        vector = "[" + ",".join(["0.1"] * 384) + "]"
        with pytest.raises(asyncpg.RaiseError, match="names no embedding model"):
            await connection.fetchval(insert, project, vector)
        await connection.execute("SET anamnesis.embedding_model = 'all-MiniLM-L6-v2'")
        memory = await connection.fetchval(insert, project, vector)
        assert await connection.fetchval(
            "SELECT embedding_model FROM memories WHERE id = $1", memory) == "all-MiniLM-L6-v2"

        settings = Settings(data_dir=tmp_path, db=DatabaseSettings(url=url,
                                                                   migrate_on_start=False))
        app = create_app(settings, embedder=embedder)
        async with app.router.lifespan_context(app):  # the stored vectors are its model's
            assert app.state.resources.embedder.model_name == "all-MiniLM-L6-v2"

        # A process of another model cannot write a vector into this space...
        await connection.execute("SET anamnesis.embedding_model = 'other-model'")
        with pytest.raises(asyncpg.PostgresError, match="switched") as refused:
            await connection.execute("UPDATE memories SET embedding = $2 WHERE id = $1",
                                     memory, vector.replace("0.1", "0.2"))
        assert refused.value.sqlstate == "AN001"
        # (what it writes besides a vector is not its model's business)
        await connection.execute("UPDATE memories SET text = 'hello' WHERE id = $1", memory)
        # ...and once the space is another model's, a server of the first refuses to start.
        await connection.execute("UPDATE embedding_space SET model = 'other-model'")
    finally:
        await connection.close()
    app = create_app(settings, embedder=embedder)
    with pytest.raises(SchemaMismatch, match="vectors of other-model, not of the configured "
                                             "all-MiniLM-L6-v2"):
        async with app.router.lifespan_context(app):
            pass


async def test_start_migrates_a_new_database(
        database_factory: Callable[[str], Awaitable[str]], tmp_path: Path,
        embedder: SentenceTransformerEmbedder) -> None:
    url = await database_factory("anamnesis_autostart")
    app = create_app(Settings(data_dir=tmp_path, db=DatabaseSettings(url=url)),
                     embedder=embedder)
    async with app.router.lifespan_context(app):
        assert await app.state.resources.database.embedding_dimension() == 384


async def test_models_match_the_migrated_schema(database_url: str) -> None:
    """The ORM tables, columns and indexes are exactly what the migrations create."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata))
    finally:
        await engine.dispose()
    assert differences == []


async def test_memories_only_marked_deleted_are_erased_on_upgrade(
        database_factory: Callable[[str], Awaitable[str]]) -> None:
    """Before 0011 a delete only set ``deleted_at``; the upgrade erases those rows and their
    history, and leaves the rest."""
    url = await database_factory("anamnesis_migrations_erase")
    await asyncio.to_thread(migrate, url, 384, "0010")
    connection = await asyncpg.connect(plain_dsn(url))
    try:
        await connection.execute("SET anamnesis.embedding_model = 'all-MiniLM-L6-v2'")
        project = await connection.fetchval(
            "INSERT INTO projects (id, name) VALUES (gen_random_uuid(), 'p') RETURNING id")
        vector = "[" + ",".join(["0.05"] * 384) + "]"
        ids = []
        for text, deleted in (("kept", False), ("marked deleted", True)):
            ids.append(await connection.fetchval(
                "INSERT INTO memories (id, project_id, user_id, text, content_hash, embedding, "
                "deleted_at) VALUES (gen_random_uuid(), $1, 'u1', $2, md5($2), $3::vector, "
                "CASE WHEN $4 THEN now() END) RETURNING id", project, text, vector, deleted))
            await connection.execute(
                "INSERT INTO memory_events (id, project_id, memory_id, event, new_text) "
                "VALUES (gen_random_uuid(), $1, $2, 'ADD', $3)", project, ids[-1], text)
    finally:
        await connection.close()

    await asyncio.to_thread(migrate, url, 384)

    connection = await asyncpg.connect(plain_dsn(url))
    try:
        left = await connection.fetch("SELECT text FROM memories")
        events = await connection.fetch("SELECT new_text FROM memory_events")
    finally:
        await connection.close()
    assert [row["text"] for row in left] == ["kept"]
    assert [row["new_text"] for row in events] == ["kept"]
