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
    """The database was made for another embedding size; the message says how to fix it."""


def alembic_config(url: str, embedding_dimension: int) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    config.attributes["embedding_dimension"] = embedding_dimension
    return config


def migrate(url: str, embedding_dimension: int, revision: str = "head") -> None:
    """Upgrade to ``revision`` (blocking; Alembic's env runs its own event loop)."""
    command.upgrade(alembic_config(url, embedding_dimension), revision)


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
    url, embedded = await asyncio.to_thread(resolve_url, settings)
    try:
        if migrate_schema:
            await asyncio.to_thread(migrate, url, settings.embedding.dimension)
        engine = create_async_engine(url, pool_size=settings.db.pool_size,
                                     max_overflow=settings.db.max_overflow, pool_pre_ping=True)
    except BaseException:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise
    return Database(engine, async_sessionmaker(engine, expire_on_commit=False), url, embedded)


async def check_embedding_dimension(database: Database, model_dimension: int) -> None:
    stored = await database.embedding_dimension()
    if stored is None:
        raise SchemaMismatch("the database has no memories table: run `anamnesis migrate`")
    if stored != model_dimension:
        raise SchemaMismatch(
            f"the embedding model produces {model_dimension}-d vectors but the database stores "
            f"{stored}-d vectors; use a {stored}-d model, or a new database created with "
            f"ANAMNESIS_EMBEDDING__DIMENSION={model_dimension}"
        )
