"""Real Redis and real ``anamnesis worker`` (and ``anamnesis serve``) processes for the
Celery tests.

The API under test sends its jobs to Redis (``CeleryQueue``); a worker subprocess, started
the way an operator starts one, runs them. The API is the app in the test's own process, or,
where a test kills it, an ``anamnesis serve`` subprocess (``ApiProcess``). Both use a
database of their own: the session ``app`` of the other tests consolidates in-process and
sweeps its database every second, so on a shared database it would run (and hide) the jobs
these tests hand to the worker.

Redis is a ``redis-server`` started here on a free port (or ``ANAMNESIS_TEST_REDIS_URL``);
without one the tests fail, they do not skip: CI installs it (``.ci/run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from pydantic import BaseModel

from app.config import DatabaseSettings, RedisSettings, Settings
from app.embeddings import SentenceTransformerEmbedder
from app.jobs.celery import make_celery
from app.main import create_app
from app.store.db import Database, migrate
from tests.conftest import fast_consolidation_settings, project_key, scripted_llm_settings
from tests.consolidate.scripted_brain import Brain
from tests.scripted_llm import ScriptedLLM

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKERS_DATABASE = "anamnesis_test_workers"
READY_TIMEOUT_S = 180.0  # a cold start loads torch and the model in each process, on 2 cores
SWEEP_CHATTER = ("consolidate.sweep[", "Sending due task sweep")  # once a second, left out


# -- Redis ---------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throwaway ``redis-server``: no persistence, bound to 127.0.0.1."""

    def __init__(self, binary: str, home: Path) -> None:
        self.binary, self.home = binary, home
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        for _ in range(5):  # a port taken between picking and binding: try another
            self.port = _free_port()
            log = (self.home / "redis.log").open("ab")
            self.process = subprocess.Popen(
                [self.binary, "--bind", "127.0.0.1", "--port", str(self.port),
                 "--save", "", "--appendonly", "no", "--daemonize", "no",
                 "--dir", str(self.home)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log.close()
            if self._answers():
                return self
            self.stop()
        raise RuntimeError(f"redis-server did not start; log:\n{self.log_tail()}")

    def _answers(self, timeout_s: float = 20.0) -> bool:
        """PING answered by this process (not by another server that held the port)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return int(client.info("server")["process_id"]) == self.process.pid
                except redis.RedisError:
                    pass
                time.sleep(0.05)
            return False
        finally:
            client.close()

    def log_tail(self) -> str:
        path = self.home / "redis.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis for the broker: ``ANAMNESIS_TEST_REDIS_URL``, else a ``redis-server`` of our own."""
    configured = os.environ.get("ANAMNESIS_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("the Celery worker tests need a real Redis, and no `redis-server` is on "
                    "PATH: install it (Debian/Ubuntu: apt-get install redis-server; .ci/run "
                    "does) or point ANAMNESIS_TEST_REDIS_URL at one", pytrace=False)
    home = Path(tempfile.mkdtemp(prefix="anamnesis-redis-"))
    server = RedisServer(binary, home).start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


# -- the workers' database and the API on Redis ----------------------------------------------

@pytest.fixture(scope="session")
async def workers_database_url(
        database_factory: Callable[[str], Awaitable[str]]) -> str:
    url = await database_factory(WORKERS_DATABASE)
    await asyncio.to_thread(migrate, url, 384)
    return url


@pytest.fixture(scope="session")
def redis_settings(workers_database_url: str, redis_url: str,
                   scripted_llm_server: ScriptedLLM,
                   tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The API's settings: jobs go to Celery on Redis; the LLM is the scripted server."""
    return Settings(data_dir=tmp_path_factory.mktemp("api-data"),
                    db=DatabaseSettings(url=workers_database_url, migrate_on_start=False),
                    redis=RedisSettings(url=redis_url),
                    llm=scripted_llm_settings(scripted_llm_server.base_url),
                    consolidation=fast_consolidation_settings())


@pytest.fixture(scope="session")
async def redis_app(redis_settings: Settings,
                    embedder: SentenceTransformerEmbedder) -> AsyncIterator[FastAPI]:
    application = create_app(redis_settings, embedder=embedder)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
def workers_database(redis_app: FastAPI) -> Database:
    database: Database = redis_app.state.resources.database
    return database


@dataclass
class Tenant:
    """A fresh project with an HTTP client on the Redis-backed API holding its key."""

    http: httpx.AsyncClient
    project_id: uuid.UUID


@pytest.fixture
async def tenant(redis_app: FastAPI, workers_database: Database) -> AsyncIterator[Tenant]:
    """Empty tables (projects cascade to everything else), then a new project and its key."""
    async with workers_database.engine.begin() as connection:
        await connection.exec_driver_sql("TRUNCATE projects CASCADE")
    key, project_id = await project_key(workers_database, f"workers-{time.monotonic_ns()}")
    async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=redis_app), base_url="http://test",
            headers={"Authorization": f"Bearer {key}"}) as http:
        yield Tenant(http, project_id)


# -- worker processes ------------------------------------------------------------------------

def settings_environment(group: str, settings: BaseModel) -> dict[str, str]:
    """``ANAMNESIS_<GROUP>__<FIELD>`` variables that rebuild ``settings`` in another process."""
    return {f"ANAMNESIS_{group}__{name.upper()}": str(value)
            for name, value in settings.model_dump(exclude_none=True).items()}


class ServiceProcess:
    """A command of ``python -m app.cli`` in its own process group, its output in a log file.

    ``kill`` is a machine dying: SIGKILL to the whole group (children too), no
    acknowledgement, no cleanup. ``start`` again brings up a new generation of it."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], home: Path) -> None:
        self.name, self.args, self.env, self.home = name, args, dict(env), home
        self.process: subprocess.Popen[bytes] | None = None
        self.generation = 0
        self.log_path = home / f"{name}.log"
        self._log_offset = 0

    @property
    def label(self) -> str:
        return f"{self.name}-{self.generation}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        return self.args

    def start(self) -> None:
        assert not self.alive, f"{self.label} is already running"
        self.generation += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== starting {self.label} =====\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *self.command()],
                cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)

    def is_ready(self) -> bool:
        raise NotImplementedError

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until ``is_ready``; fails at once if the process exits meanwhile."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.is_ready():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.process.returncode}:"
                                   f"\n{self.log_tail()}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.label} not ready after {timeout_s:.0f} s:"
                           f"\n{self.log_tail()}")

    def _own_log(self) -> str:
        """What the current generation has written."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL to the process and its children at once."""
        if self.process is None or self.process.returncode is not None:
            return  # reaped already: its group id may belong to someone else by now
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (a graceful shutdown), then SIGKILL to what is left."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout_s)
        self.kill()
        self.process = None

    def log_tail(self, lines: int = 60) -> str:
        """The log's last lines, less the beat's once-a-second sweep chatter."""
        if not self.log_path.exists():
            return "(no log)"
        text = [line for line in self.log_path.read_text(errors="replace").splitlines()
                if not any(noise in line for noise in SWEEP_CHATTER)]
        return "\n".join([f"(full log: {self.log_path})", *text[-lines:]])


class WorkerProcess(ServiceProcess):
    """``python -m app.cli worker``: each generation a new Celery node with a new name; a
    warm shutdown (``stop``) lets it finish the current task."""

    @property
    def node(self) -> str:
        return f"{self.label}@localhost"

    def command(self) -> list[str]:
        return ["worker", *self.args, "--hostname", self.node]

    def is_ready(self) -> bool:
        """Celery logged ``<node> ready.``: connected to Redis, consuming the queue."""
        return f"{self.node} ready." in self._own_log()

    def pool_processes(self) -> list[int]:
        """Pids of the node's prefork pool processes, as the node itself reports them (the
        embedded beat is a child of the main process too, and must not be mistaken for one)."""
        assert self.process is not None
        celery = make_celery(Settings(redis=RedisSettings(url=self.env["ANAMNESIS_REDIS__URL"])))
        try:
            stats = celery.control.inspect(destination=[self.node], timeout=5.0).stats() or {}
        finally:
            celery.close()
        return [int(pid) for pid in stats.get(self.node, {}).get("pool", {}).get("processes", [])]


class ApiProcess(ServiceProcess):
    """``python -m app.cli serve`` on a fixed localhost port, the same one each generation."""

    def __init__(self, name: str, env: Mapping[str, str], home: Path) -> None:
        super().__init__(name, [], env, home)
        self.port = _free_port()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return ["serve", "--host", "127.0.0.1", "--port", str(self.port)]

    def is_ready(self) -> bool:
        """``GET /ready`` answers 200 (the database answers, the model is loaded)."""
        try:
            return httpx.get(f"{self.base_url}/ready", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False


_processes: list[ServiceProcess] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failing test shows the end of each worker's (and API process's) log."""
    report = yield
    if report.failed:
        for process in _processes:
            report.sections.append((f"{process.name} log (last lines)", process.log_tail()))
    return report


@contextlib.contextmanager
def tracked(process: ServiceProcess) -> Iterator[ServiceProcess]:
    """The process's log shown if the test fails; stopped when the block ends."""
    _processes.append(process)
    try:
        yield process
    finally:
        process.stop()
        _processes.remove(process)


@pytest.fixture(scope="session")
def worker_environment(workers_database_url: str, redis_url: str,
                       scripted_llm_server: ScriptedLLM,
                       tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What an operator would export: the same database, Redis and LLM as the API, quick
    leases and sweeps, one embedding thread (two cores are shared with the tests)."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("ANAMNESIS_")}
    env.update({
        "ANAMNESIS_DB__URL": workers_database_url,
        "ANAMNESIS_DB__MIGRATE_ON_START": "false",
        "ANAMNESIS_REDIS__URL": redis_url,
        "ANAMNESIS_DATA_DIR": str(tmp_path_factory.mktemp("worker-data")),
        "ANAMNESIS_EMBEDDING__THREADS": "1",
        "ANAMNESIS_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    })
    env.update(settings_environment("LLM", scripted_llm_settings(scripted_llm_server.base_url)))
    env.update(settings_environment("CONSOLIDATION", fast_consolidation_settings()))
    return env


@pytest.fixture(scope="session")
def worker_process(worker_environment: dict[str, str],
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One prefork worker, two pool processes, with the embedded beat (the sweeper)."""
    worker = WorkerProcess("prefork", ["--pool", "prefork", "--concurrency", "2"],
                           worker_environment, tmp_path_factory.mktemp("worker-logs"))
    with tracked(worker):
        yield worker


@pytest.fixture
async def worker(worker_process: WorkerProcess) -> WorkerProcess:
    """The worker, running and ready (started again if an earlier test killed it)."""
    if not worker_process.alive:
        worker_process.start()
        await asyncio.to_thread(worker_process.wait_ready)
    return worker_process


@pytest.fixture
def brain(scripted_llm: ScriptedLLM) -> Brain:
    """The scripted LLM answering consolidation prompts by the test's rules."""
    thinking = Brain()
    scripted_llm.responder = thinking
    return thinking
