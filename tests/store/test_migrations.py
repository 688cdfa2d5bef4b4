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
