"""Connecting to Postgres: the bundled server or a configured one, migrations, sessions."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
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


# Raised by the vector trigger (migration 0010) for a vector of a model the space left.
MODEL_SWITCHED = "AN001"


def model_switched(exc: DBAPIError) -> bool:
    """The statement carried a vector of the model the database just switched away from,
    or met the new ones before its process moved (``met_switched_vectors``)."""
    return getattr(exc.orig, "sqlstate", None) == MODEL_SWITCHED or met_switched_vectors(exc)


def met_switched_vectors(exc: DBAPIError) -> bool:
    """What a statement meets just after a switch of embedding model, before its process
    moved: a vector of the old size compared with stored ones of the new, or written into
    their column (pgvector), or a statement prepared before the column changed type
    (asyncpg)."""
    text = str(exc.orig)
    return any(sign in text for sign in ("different vector dimensions", "dimensions, not",
                                         "cached statement plan is invalid"))


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
    # What the connections name as their embedding model (``anamnesis.embedding_model``):
    # read as each one opens, so a switch takes effect on the connections opened after it.
    embedding_identity: str = DEFAULT_MODEL

    async def name_embedding_model(self, identity: str) -> None:
        """Connections from now on name ``identity``; those open are closed (each as it is
        given back), so no vector of the old model is written through them."""
        self.embedding_identity = identity
        await self.engine.dispose()

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

    async def embedding_model(self) -> str | None:
        """The model the stored vectors are of (``embedding_space``, migration 0010)."""
        async with self.engine.connect() as connection:
            result = await connection.execute(text("SELECT model FROM embedding_space"))
            return result.scalar_one_or_none()

    def companion(self, pool_size: int, pool_timeout_s: float) -> Database:
        """Another pool on the same database, for a store that requests call while holding a
        connection of this one: if both drew from one pool, a burst of such requests would
        hold every connection while each waited for a second (a deadlock until the pool's
        timeout, stalling every other project's requests too). Its connections are never
        held while waiting for this pool's, so waits on it always end."""
        engine = create_async_engine(self.url, pool_size=pool_size, max_overflow=0,
                                     pool_timeout=pool_timeout_s, pool_pre_ping=True,
                                     hide_parameters=True)
        return Database(engine, async_sessionmaker(engine, expire_on_commit=False), self.url,
                        None, self.embedding_identity)

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        await self.engine.dispose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


def resolve_url(settings: Settings, *, adopt: bool = False) -> tuple[str, EmbeddedPostgres | None]:
    """The configured URL, or the bundled server's (started or attached to; blocking).
    ``adopt``: own a bundled server whose owner died (the API, a long-lived process)."""
    if settings.db.url:
        return settings.db.url, None
    embedded = EmbeddedPostgres(settings.data_dir)
    server = embedded.ensure_running(adopt=adopt)
    logger.info("using bundled Postgres on %s:%d (data in %s)", server.host, server.port,
                embedded.pgdata)
    return server.url(), embedded


async def open_database(settings: Settings, *, migrate_schema: bool,
                        adopt: bool = False) -> Database:
    """Connections name the configured embedding model (``anamnesis.embedding_model``):
    what each vector they write is recorded as made by (migration 0009)."""
    url, embedded = await asyncio.to_thread(functools.partial(resolve_url, settings,
                                                              adopt=adopt))
    identity = model_identity(settings.embedding.model)
    try:
        if migrate_schema:
            await asyncio.to_thread(migrate, url, settings.embedding.dimension, "head",
                                    identity)
        engine = create_async_engine(
            url, pool_size=settings.db.pool_size, max_overflow=settings.db.max_overflow,
            pool_timeout=settings.db.pool_timeout_s, pool_pre_ping=True,
            # A failed statement's error (logged with its traceback) shows the SQL but not
            # the values bound to it: those are messages, memories and queries.
            hide_parameters=True)
    except BaseException:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise
    database = Database(engine, async_sessionmaker(engine, expire_on_commit=False), url,
                        embedded, identity)

    @event.listens_for(engine.sync_engine, "do_connect")
    def name_the_model(dialect: object, record: object, cargs: object,
                       cparams: dict[str, Any]) -> None:
        cparams.setdefault("server_settings", {})[
            "anamnesis.embedding_model"] = database.embedding_identity

    return database


async def check_embedding_space(database: Database, identity: str,
                                model_dimension: int) -> None:
    """The configured model is the one the stored vectors were made by, at their size."""
    stored = await database.embedding_dimension()
    if stored is None:
        raise SchemaMismatch("the database has no memories table: run `anamnesis migrate`")
    stored_model = await database.embedding_model()
    if stored_model != identity:
        raise SchemaMismatch(
            f"the database holds vectors of {stored_model}, not of the configured "
            f"{identity}: vectors of two models do not compare; configure {stored_model} "
            f"(ANAMNESIS_EMBEDDING__MODEL), or switch the database to {identity} with "
            f"`anamnesis reindex --model {identity}`"
        )
    if stored != model_dimension:
        raise SchemaMismatch(
            f"the embedding model produces {model_dimension}-d vectors but the database stores "
            f"{stored}-d vectors; use a {stored}-d model, or a new database created with "
            f"ANAMNESIS_EMBEDDING__DIMENSION={model_dimension}"
        )
