"""Real parts for every test: a Postgres+pgvector server (bundled, or ANAMNESIS_TEST_DB_URL),
the real embedding model, the real app over ASGI, and a real uvicorn server for the SDK."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from app.auth import generate_key
from app.config import (
    ConsolidationSettings,
    DatabaseSettings,
    EmbeddingSettings,
    LLMSettings,
    Settings,
)
from app.embeddings import SentenceTransformerEmbedder
from app.jobs.inprocess import InProcessQueue
from app.main import create_app
from app.store.db import Database, migrate
from app.store.embedded_postgres import EmbeddedPostgres
from app.store.repositories import keys as key_repository
from tests.consolidate.scripted_brain import Brain
from tests.scripted_llm import ScriptedLLM

TEST_DATABASE = "anamnesis_test"
KeyFactory = Callable[..., Awaitable[str]]


def plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@contextmanager
def server_home() -> Iterator[Path]:
    """A folder the bundled server's unprivileged user can reach when tests run as root
    (pytest's own temp folders are private), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="anamnesis-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of the maintenance database of a Postgres+pgvector server for this session."""
    configured = os.environ.get("ANAMNESIS_TEST_DB_URL")
    if configured:
        yield configured
        return
    with server_home() as home:
        embedded = EmbeddedPostgres(home / "data")
        server = embedded.ensure_running()
        try:
            yield server.url("postgres")
        finally:
            embedded.stop()


async def recreate_database(server_url: str, name: str) -> str:
    connection = await asyncpg.connect(plain_dsn(server_url))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def database_factory(server_url: str) -> Callable[[str], Awaitable[str]]:
    """Makes a fresh, empty database on the test server and returns its URL."""

    async def make(name: str) -> str:
        return await recreate_database(server_url, name)

    return make


@pytest.fixture(scope="session")
async def database_url(database_factory: Callable[[str], Awaitable[str]]) -> str:
    url = await database_factory(TEST_DATABASE)
    await asyncio.to_thread(migrate, url, 384)
    return url


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's embedder keeps its ONNX export (made once, by ``embedder``): the
    models folder of a data directory, as the service lays it out."""
    return tmp_path_factory.mktemp("data") / "models"


@pytest.fixture(scope="session")
def embedder(models_dir: Path) -> SentenceTransformerEmbedder:
    """The default: the bundled MiniLM on the default backend (``auto``: ONNX Runtime)."""
    return SentenceTransformerEmbedder.load(EmbeddingSettings(), models_dir)


@pytest.fixture(scope="session")
def scripted_llm_server() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


@pytest.fixture
def scripted_llm(scripted_llm_server: ScriptedLLM) -> Iterator[ScriptedLLM]:
    """A real OpenAI-compatible server on a local port; replies scripted per test."""
    scripted_llm_server.reset()
    yield scripted_llm_server
    scripted_llm_server.reset()


@pytest.fixture
def brain(scripted_llm: ScriptedLLM) -> Brain:
    """The scripted LLM answering consolidation prompts by the test's rules."""
    thinking = Brain()
    scripted_llm.responder = thinking
    return thinking


def scripted_llm_settings(base_url: str) -> LLMSettings:
    return LLMSettings(base_url=base_url, model="scripted-model", max_attempts=2,
                       max_output_retries=1, timeout_s=30)


def fast_consolidation_settings() -> ConsolidationSettings:
    """Quick to notice dead workers and to retry, so failure tests run in seconds."""
    return ConsolidationSettings(lease_s=3, pending_grace_s=2, sweep_interval_s=1,
                                 retry_backoff_s=0.2, retry_backoff_max_s=1, max_retries=2)


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory,
             scripted_llm_server: ScriptedLLM) -> Settings:
    """The API's settings: jobs in-process, the LLM the scripted server."""
    return Settings(data_dir=tmp_path_factory.mktemp("data"),
                    db=DatabaseSettings(url=database_url, migrate_on_start=False),
                    llm=scripted_llm_settings(scripted_llm_server.base_url),
                    consolidation=fast_consolidation_settings())


@pytest.fixture(scope="session")
async def app(settings: Settings, embedder: SentenceTransformerEmbedder) -> AsyncIterator[FastAPI]:
    application = create_app(settings, embedder=embedder)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
def database(app: FastAPI) -> Database:
    resources = app.state.resources
    db: Database = resources.database
    return db


@pytest.fixture
async def clean(app: FastAPI, database: Database) -> None:
    """Each test starts from empty tables (projects cascade to everything else) and with no
    consolidation job of an earlier test still running, in the app or in a live server (a
    job writing while the tables are truncated deadlocks with it)."""
    queue = app.state.resources.queue
    if isinstance(queue, InProcessQueue):
        await queue.drain()
    for live in list(LIVE_SERVERS):
        await live.drain()
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql("TRUNCATE projects CASCADE")


async def project_key(database: Database, project_name: str) -> tuple[str, uuid.UUID]:
    """A new key for the named project (created if new): (plaintext, project id)."""
    async with database.session_scope() as session:
        project = await key_repository.get_or_create_project(session, project_name)
        new = generate_key()
        await key_repository.add_key(session, project_id=project.id, prefix=new.prefix,
                                     key_hash=new.key_hash, name=None)
    return new.plaintext, project.id


@pytest.fixture
async def api_key_factory(database: Database, clean: None) -> KeyFactory:
    """``await api_key_factory(project_name=None)`` → a new plaintext key (new project if None)."""
    counter = iter(range(1_000_000))

    async def make(project_name: str | None = None) -> str:
        name = project_name or f"project-{next(counter)}-{time.monotonic_ns()}"
        return (await project_key(database, name))[0]

    return make


@pytest.fixture
async def api_key(api_key_factory: KeyFactory) -> str:
    return await api_key_factory()


@pytest.fixture
async def client(app: FastAPI, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app, authenticated with a fresh project's key."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                 headers={"Authorization": f"Bearer {api_key}"}) as http:
        yield http


@pytest.fixture
async def anonymous(app: FastAPI, clean: None) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as http:
        yield http


@dataclass
class LiveServer:
    base_url: str
    server: uvicorn.Server
    app: FastAPI
    loop: asyncio.AbstractEventLoop

    async def drain(self) -> None:
        """Waits, from any event loop, until the server's queued jobs have run."""
        queue = self.app.state.resources.queue
        if isinstance(queue, InProcessQueue):
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(queue.drain(), self.loop))


LIVE_SERVERS: list[LiveServer] = []  # running now: ``clean`` waits for their jobs too


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def live_server(settings: Settings, embedder: SentenceTransformerEmbedder,
                database_url: str) -> Iterator[LiveServer]:
    """The real app under uvicorn on a localhost port, in its own thread and event loop."""
    with serve(settings, embedder) as server:
        yield server


@contextmanager
def serve(settings: Settings, embedder: SentenceTransformerEmbedder) -> Iterator[LiveServer]:
    """An app of these settings under uvicorn on a localhost port, in its own thread and event
    loop, until the block ends."""
    port = _free_port()
    # Its own batcher (event loop), the same loaded model.
    shared = SentenceTransformerEmbedder(encoder=embedder.encoder, model_name=embedder.model_name)
    application = create_app(settings, embedder=shared)
    config = uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on")
    server = uvicorn.Server(config)
    # asyncio.run's runner, its loop made here so that other loops can hand it work (drain)
    runner = asyncio.Runner()
    loop = runner.get_loop()

    def run() -> None:
        with runner:
            runner.run(server.serve())

    thread = threading.Thread(target=run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("live server did not start")
        time.sleep(0.05)
    live = LiveServer(f"http://127.0.0.1:{port}", server, application, loop)
    LIVE_SERVERS.append(live)
    try:
        yield live
    finally:
        LIVE_SERVERS.remove(live)
        server.should_exit = True
        thread.join(timeout=30)

