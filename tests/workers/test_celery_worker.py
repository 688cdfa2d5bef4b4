"""Consolidation through Celery: the API on a real Redis, a real ``anamnesis worker``
process, the LLM a scripted OpenAI-compatible server. Timeouts are generous ceilings;
nothing here passes or fails on speed."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
from fastapi import FastAPI

from app.jobs.celery import QUEUE
from app.jobs.queue import JobQueue
from app.store.db import Database
from tests.consolidate.scripted_brain import Brain, FactSpec
from tests.scripted_llm import Scriptable, ScriptedLLM
from tests.workers.conftest import Tenant, WorkerProcess

JOB_TIMEOUT_S = 120.0


async def job_when(http: httpx.AsyncClient, job_id: str, statuses: Sequence[str],
                   timeout_s: float = JOB_TIMEOUT_S) -> dict[str, Any]:
    """``GET /v1/jobs/{id}`` until its status is one of ``statuses``."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = await http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout_s} s: {job}"
        await asyncio.sleep(0.1)


async def finished(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    return await job_when(http, job_id, ("SUCCEEDED", "FAILED"))


async def post_episode(http: httpx.AsyncClient, *texts: str) -> str:
    """``infer=true`` for user ``u1``: 202 and the job's id."""
    response = await http.post("/v1/memories", json={
        "messages": [{"role": "user", "content": text} for text in texts], "user_id": "u1"})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "PENDING"
    job_id: str = accepted["job_id"]
    return job_id


async def memory_rows(database: Database, project_id: uuid.UUID) -> list[tuple[str, bool]]:
    """Every fact row of the project, superseded and deleted ones included: (text, live)."""
    async with database.engine.connect() as connection:
        rows = await connection.execute(sa.text(
            "SELECT text, deleted_at IS NULL AND invalid_at IS NULL FROM memories "
            "WHERE project_id = :project AND kind = 'fact' ORDER BY text"),
            {"project": project_id})
        return [(row[0], row[1]) for row in rows]


def events(job: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((result["event"], result["memory"]) for result in job["results"])


async def test_an_episode_is_consolidated_by_the_worker(
        tenant: Tenant, worker: WorkerProcess, brain: Brain) -> None:
    brain.facts = {"I live in Paris.": [FactSpec("User lives in Paris", "2024-01-01")],
                   "I work as a nurse.": ["User works as a nurse"]}
    job_id = await post_episode(tenant.http, "I live in Paris.", "Hi there!",
                                "I work as a nurse.")

    job = await finished(tenant.http, job_id)
    assert job["status"] == "SUCCEEDED", job
    assert events(job) == [("ADD", "User lives in Paris"), ("ADD", "User works as a nurse")]
    assert job["usage"]["model"] == "scripted-model"
    assert job["usage"]["llm_calls"] >= 1
    assert brain.extract_calls >= 1

    listed = await tenant.http.get("/v1/memories", params={"user_id": "u1", "kind": "fact"})
    assert sorted(m["memory"] for m in listed.json()["results"]) == [
        "User lives in Paris", "User works as a nurse"]
    found = await tenant.http.post("/v1/memories/search", json={
        "query": "Which city does the user live in?", "user_id": "u1", "top_k": 1,
        "filters": {"kind": "fact"}})
    assert found.status_code == 200, found.text
    assert [hit["memory"] for hit in found.json()["results"]] == ["User lives in Paris"]


async def test_wait_answers_with_the_job_the_worker_finished(
        tenant: Tenant, worker: WorkerProcess, brain: Brain) -> None:
    brain.facts = {"My sister is called Ana.": ["User's sister is called Ana"]}
    response = await tenant.http.post("/v1/memories", json={
        "messages": [{"role": "user", "content": "My sister is called Ana."}],
        "user_id": "u1", "wait": True})
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "SUCCEEDED", job
    assert events(job) == [("ADD", "User's sister is called Ana")]


class HeldExtraction:
    """The brain, except that the first extraction call is held until ``release`` is set:
    the job is then RUNNING inside a worker, waiting on the LLM."""

    def __init__(self, brain: Brain) -> None:
        self.brain = brain
        self.entered = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._held = False

    def __call__(self, body: dict[str, Any]) -> Scriptable:
        extraction = body["response_format"]["json_schema"]["name"] == "ExtractedFacts"
        with self._lock:
            hold, self._held = extraction and not self._held, self._held or extraction
        if hold:
            self.entered.set()
            self.release.wait(60)  # whoever asked is dead by then; the answer goes nowhere
        return self.brain(body)


async def test_a_job_survives_its_worker_being_killed(
        tenant: Tenant, worker: WorkerProcess, brain: Brain, scripted_llm: ScriptedLLM,
        workers_database: Database) -> None:
    brain.facts = {"I live in Lisbon.": ["User lives in Lisbon"],
                   "I have two cats.": ["User has two cats"]}
    held = HeldExtraction(brain)
    scripted_llm.responder = held
    try:
        job_id = await post_episode(tenant.http, "I live in Lisbon.", "I have two cats.")
        assert await asyncio.to_thread(held.entered.wait, JOB_TIMEOUT_S), \
            "the worker never asked the LLM"
        running = await job_when(tenant.http, job_id, ("RUNNING",), timeout_s=10)
        assert running["attempts"] == 1

        worker.kill()  # mid-job: no ack, no cleanup, the heartbeat stops
    finally:
        held.release.set()
    worker.start()
    await asyncio.to_thread(worker.wait_ready)

    # The message died unacknowledged with the worker; the new worker's sweep finds the
    # job's heartbeat stale and runs it again.
    job = await finished(tenant.http, job_id)
    assert job["status"] == "SUCCEEDED", job
    assert job["attempts"] >= 2  # one more if a heartbeat ever lapsed on a loaded machine
    assert events(job) == [("ADD", "User has two cats"), ("ADD", "User lives in Lisbon")]
    assert await memory_rows(workers_database, tenant.project_id) == [
        ("User has two cats", True), ("User lives in Lisbon", True)]


async def test_a_job_survives_its_pool_process_being_killed(
        tenant: Tenant, worker: WorkerProcess, brain: Brain, scripted_llm: ScriptedLLM,
        workers_database: Database) -> None:
    """The out-of-memory killer takes the pool processes, not the worker: it starts new
    ones (which load the model again) and the job still completes."""
    brain.facts = {"I speak Basque.": ["User speaks Basque"]}
    held = HeldExtraction(brain)
    scripted_llm.responder = held
    try:
        job_id = await post_episode(tenant.http, "I speak Basque.")
        assert await asyncio.to_thread(held.entered.wait, JOB_TIMEOUT_S), \
            "the worker never asked the LLM"
        pool = await asyncio.to_thread(worker.pool_processes)
        assert pool, "no pool process has loaded the model"
        for pid in pool:
            os.kill(pid, signal.SIGKILL)
    finally:
        held.release.set()

    job = await finished(tenant.http, job_id)
    assert job["status"] == "SUCCEEDED", job
    assert events(job) == [("ADD", "User speaks Basque")]
    assert await memory_rows(workers_database, tenant.project_id) == [
        ("User speaks Basque", True)]
    assert worker.alive
    assert not set(await asyncio.to_thread(worker.pool_processes)) & set(pool)


async def test_concurrent_episodes_of_one_scope_make_one_memory(
        tenant: Tenant, worker: WorkerProcess, brain: Brain,
        workers_database: Database) -> None:
    fact = "User drinks green tea every morning"
    brain.facts = {"I drink green tea every morning.": [fact]}

    job_ids = await asyncio.gather(*(
        post_episode(tenant.http, "I drink green tea every morning.") for _ in range(20)))
    jobs = [await finished(tenant.http, job_id) for job_id in job_ids]

    assert [job["status"] for job in jobs] == ["SUCCEEDED"] * 20, jobs
    outcomes = sorted(event for job in jobs for event, _ in events(job))
    assert outcomes == ["ADD"] + ["NOOP"] * 19
    memory_ids = {result["id"] for job in jobs for result in job["results"]}
    assert len(memory_ids) == 1  # every NOOP names the one memory the ADD wrote
    assert await memory_rows(workers_database, tenant.project_id) == [(fact, True)]


async def test_a_failed_job_keeps_its_episode_and_runs_again_on_retry(
        tenant: Tenant, worker: WorkerProcess, brain: Brain, scripted_llm: ScriptedLLM,
        workers_database: Database) -> None:
    brain.facts = {"I am allergic to peanuts.": ["User is allergic to peanuts"]}
    scripted_llm.responder = lambda body: "not json"
    job_id = await post_episode(tenant.http, "I am allergic to peanuts.")

    failed = await finished(tenant.http, job_id)
    assert failed["status"] == "FAILED", failed
    assert failed["error"]["code"] == "llm_bad_output"
    assert failed["error"]["detail"]
    assert failed["results"] == []
    assert failed["usage"]["llm_calls"] >= 1
    async with workers_database.engine.connect() as connection:
        messages = (await connection.execute(
            sa.text("SELECT messages FROM episodes WHERE id = :id"),
            {"id": uuid.UUID(failed["episode_id"])})).scalar_one()
    assert messages == [{"role": "user", "content": "I am allergic to peanuts."}]
    assert await memory_rows(workers_database, tenant.project_id) == []

    scripted_llm.responder = brain  # the model behaves again
    retried = await tenant.http.post(f"/v1/jobs/{job_id}/retry")
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "PENDING"
    job = await finished(tenant.http, job_id)
    assert job["status"] == "SUCCEEDED", job
    assert job["error"] is None
    assert events(job) == [("ADD", "User is allergic to peanuts")]
    again = await tenant.http.post(f"/v1/jobs/{job_id}/retry")
    assert again.status_code == 409, again.text


class LostMessages:
    """A queue whose messages never reach Redis: the API committed the job, then lost the
    broker (or its process) before publishing."""

    def __init__(self) -> None:
        self.dropped: list[uuid.UUID] = []

    async def enqueue(self, job_ids: Sequence[uuid.UUID]) -> None:
        self.dropped.extend(job_ids)

    async def aclose(self) -> None:
        pass


async def test_the_sweeper_runs_a_job_whose_message_was_lost(
        tenant: Tenant, worker: WorkerProcess, brain: Brain, redis_app: FastAPI,
        monkeypatch: pytest.MonkeyPatch) -> None:
    brain.facts = {"My birthday is on 3 March.": ["User's birthday is on 3 March"]}
    lost = LostMessages()
    with monkeypatch.context() as patch:
        patch.setattr(redis_app.state.resources, "queue", lost)
        job_id = await post_episode(tenant.http, "My birthday is on 3 March.")
    assert lost.dropped == [uuid.UUID(job_id)]

    # Nothing in Redis names the job; the worker's beat sweeps it up once it has been
    # PENDING longer than the grace period.
    job = await finished(tenant.http, job_id)
    assert job["status"] == "SUCCEEDED", job
    assert events(job) == [("ADD", "User's birthday is on 3 March")]


BACKLOG = 1_000  # messages kept queued ahead of whatever is sent next: seconds of work


async def keep_the_queue_busy(queue: JobQueue, redis_url: str, stop: asyncio.Event) -> int:
    """Tops the consolidation queue up to ``BACKLOG`` messages until ``stop``: a queue that
    never drains, as under steady load. The messages name no job (each run finds nothing to
    claim). Returns how many were sent."""
    client = redis.Redis.from_url(redis_url)
    sent = 0
    try:
        while not stop.is_set():
            missing = BACKLOG - await asyncio.to_thread(client.llen, QUEUE)
            if missing > 0:
                await queue.enqueue([uuid.uuid4() for _ in range(missing)])
                sent += missing
            await asyncio.sleep(0.1)
        await asyncio.to_thread(client.delete, QUEUE)
    finally:
        client.close()
    return sent


async def test_the_sweeper_runs_while_the_queue_never_drains(
        tenant: Tenant, worker: WorkerProcess, brain: Brain, redis_app: FastAPI,
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep is not queued behind the jobs: under steady load it would wait there
    longer than its schedule and expire, each time, and a lost job would never run."""
    brain.facts = {"My locker is number 47.": ["User's locker is number 47"]}
    lost = LostMessages()
    with monkeypatch.context() as patch:
        patch.setattr(redis_app.state.resources, "queue", lost)
        job_id = await post_episode(tenant.http, "My locker is number 47.")

    stop = asyncio.Event()
    busy = asyncio.create_task(keep_the_queue_busy(redis_app.state.resources.queue,
                                                   redis_url, stop))
    try:
        job = await finished(tenant.http, job_id)
    finally:
        stop.set()
        sent = await busy
    assert job["status"] == "SUCCEEDED", job
    assert events(job) == [("ADD", "User's locker is number 47")]
    assert sent >= BACKLOG
