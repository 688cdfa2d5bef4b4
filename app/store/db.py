"""Connecting to Postgres: the bundled server or a configured one, migrations, sessions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.config import Settings
from app.embeddings import DEFAULT_MODEL, model_identity
from app.store.embedded_postgres import EmbeddedPostgres

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"


_AFTER_COMMIT = "anamnesis.after_commit"
AfterCommit = Callable[[], Awaitable[None]]


def after_commit(session: AsyncSession, hook: AfterCommit) -> None:
    """Run ``hook`` once the session's transaction has committed (and never if it rolls
    back): how a job is enqueued only when its row exists for the worker to read."""
    session.info.setdefault(_AFTER_COMMIT, []).append(hook)


async def commit(session: AsyncSession) -> None:
    """Commit, then run the after-commit hooks. A failing hook is logged, not raised: what it
    announces is already durable, and the job sweeper covers a lost enqueue."""
    await session.commit()
    hooks: list[AfterCommit] = session.info.pop(_AFTER_COMMIT, [])
    for hook in hooks:
        try:
            await hook()
        except Exception:
            logger.exception("after-commit hook failed; the job sweeper will pick the work up")


class SchemaMismatch(RuntimeError):
    """The database was made for another embedding model or size; the message says how to
    fix it."""


def alembic_config(url: str, embedding_dimension: int,
                   embedding_model: str = DEFAULT_MODEL) -> Config:
    """``embedding_dimension``: the vector size of a new database; ``embedding_model``: the
    identity its vectors (those stored before migration 0009 too) are recorded with."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    config.attributes["embedding_dimension"] = embedding_dimension
    config.attributes["embedding_model"] = embedding_model
    return config


def migrate(url: str, embedding_dimension: int, revision: str = "head",
            embedding_model: str = DEFAULT_MODEL) -> None:
    """Upgrade to ``revision`` (blocking; Alembic's env runs its own event loop)."""
    command.upgrade(alembic_config(url, embedding_dimension, embedding_model), revision)


def downgrade(url: str, embedding_dimension: int, revision: str) -> None:
    command.downgrade(alembic_config(url, embedding_dimension), revision)


@dataclass
class Database:
    """An engine and its session factory, plus the bundled server when we started one."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    url: str
    embedded: EmbeddedPostgres | None = None

    @asynccontextmanager
    async def session_scope(self) -> AsyncIterator[AsyncSession]:
        """A session that commits when the block ends cleanly and rolls back otherwise."""
        async with self.sessions() as session:
            try:
                yield session
                await commit(session)
            except BaseException:
                session.info.pop(_AFTER_COMMIT, None)
                await session.rollback()
                raise

    async def embedding_dimension(self) -> int | None:
        async with self.engine.connect() as connection:
            result = await connection.execute(text(
                "SELECT atttypmod FROM pg_attribute "
                "WHERE attrelid = to_regclass('memories') AND attname = 'embedding'"
            ))
            value = result.scalar_one_or_none()
        return None if value is None or value < 0 else int(value)

    async def foreign_embedding_model(self, identity: str) -> str | None:
        """The model of some stored vector that ``identity`` did not make, if any."""
        async with self.engine.connect() as connection:
            result = await connection.execute(text(
                "SELECT embedding_model FROM memories WHERE embedding_model <> :model LIMIT 1"
            ), {"model": identity})
            return result.scalar_one_or_none()

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        await self.engine.dispose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


def resolve_url(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """The configured URL, or the bundled server's (started or attached to; blocking)."""
    if settings.db.url:
        return settings.db.url, None
    embedded = EmbeddedPostgres(settings.data_dir)
    server = embedded.ensure_running()
    logger.info("using bundled Postgres on %s:%d (data in %s)", server.host, server.port,
                embedded.pgdata)
    return server.url(), embedded


async def open_database(settings: Settings, *, migrate_schema: bool) -> Database:
    """Connections name the configured embedding model (``anamnesis.embedding_model``):
    what each vector they write is recorded as made by (migration 0009)."""
    url, embedded = await asyncio.to_thread(resolve_url, settings)
    identity = model_identity(settings.embedding.model)
    try:
        if migrate_schema:
            await asyncio.to_thread(migrate, url, settings.embedding.dimension, "head",
                                    identity)
        engine = create_async_engine(
            url, pool_size=settings.db.pool_size, max_overflow=settings.db.max_overflow,
            pool_pre_ping=True,
            connect_args={"server_settings": {"anamnesis.embedding_model": identity}})
    except BaseException:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise
    return Database(engine, async_sessionmaker(engine, expire_on_commit=False), url, embedded)


async def check_embedding_space(database: Database, identity: str,
                                model_dimension: int) -> None:
    """The configured model is the one the stored vectors were made by, at their size."""
    stored = await database.embedding_dimension()
    if stored is None:
        raise SchemaMismatch("the database has no memories table: run `anamnesis migrate`")
    if stored != model_dimension:
        raise SchemaMismatch(
            f"the embedding model produces {model_dimension}-d vectors but the database stores "
            f"{stored}-d vectors; use a {stored}-d model, or a new database created with "
            f"ANAMNESIS_EMBEDDING__DIMENSION={model_dimension}"
        )
    foreign = await database.foreign_embedding_model(identity)
    if foreign is not None:
        raise SchemaMismatch(
            f"the database holds vectors made by {foreign}, not by the configured "
            f"{identity}: vectors of two models do not compare; configure {foreign} "
            "(ANAMNESIS_EMBEDDING__MODEL), or start a new database for this one"
        )
