"""Crash consistency (issue 14): 1,000 episodes posted to an ``anamnesis serve`` process
while an ``anamnesis worker`` consolidates them; part-way through both are killed with
SIGKILL and started again on the same Postgres and Redis. A client that retries with the same
idempotency key (what a real client does when its answer is lost) ends with every episode
acknowledged, and the stores hold each episode, message and fact exactly once.

Real Postgres, Redis, Celery and uvicorn processes; only the LLM's replies are scripted (one
fact per episode, answered at once). Time limits are generous ceilings, not assertions.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from app.jobs.celery import QUEUES
from app.store.db import Database
from tests.consolidate.scripted_brain import Brain
from tests.workers.conftest import ApiProcess, Tenant, WorkerProcess, tracked

EPISODES = 1_000
USERS = 40  # scopes; each says every one of the statements below once, one per episode
IN_FLIGHT = 12  # requests the client has open at once
CRASH_AFTER = 300  # acknowledged episodes before the crash
RETRY_PAUSE_S = 0.2
INGEST_TIMEOUT_S = 300.0
SETTLE_TIMEOUT_S = 300.0

# What a user says, and the one fact the scripted model reads from it. No two are alike
# enough for resolution to merge them (the closest pair, "lives in Lisbon" / "supports
# Benfica", is 0.47 alike: below every threshold of ``app.consolidate.resolve``), so each
# episode adds a fact of its own.
SAID_AND_FACT = [
    ("I live in Lisbon.", "User lives in Lisbon"),
    ("I work as a nurse.", "User works as a nurse"),
    ("I have two cats.", "User has two cats"),
    ("I play the cello.", "User plays the cello"),
    ("I am allergic to peanuts.", "User is allergic to peanuts"),
    ("I drive a red pickup truck.", "User drives a red pickup truck"),
    ("I was born in March.", "User was born in March"),
    ("I speak fluent Japanese.", "User speaks fluent Japanese"),
    ("I collect vintage stamps.", "User collects vintage stamps"),
    ("I run marathons.", "User runs marathons"),
    ("My sister is called Ana.", "User's sister is called Ana"),
    ("I prefer tea over coffee.", "User prefers tea over coffee"),
    ("I studied chemistry at university.", "User studied chemistry at university"),
    ("I volunteer at an animal shelter.", "User volunteers at an animal shelter"),
    ("I am afraid of heights.", "User is afraid of heights"),
    ("I bake sourdough bread on Sundays.", "User bakes sourdough bread on Sundays"),
    ("I own a sailboat.", "User owns a sailboat"),
    ("I am learning to knit.", "User is learning to knit"),
    ("I support Benfica.", "User supports Benfica"),
    ("I grow tomatoes on the balcony.", "User grows tomatoes on the balcony"),
    ("I wear glasses.", "User wears glasses"),
    ("My favourite film is Alien.", "User's favourite film is Alien"),
    ("I cycle to work.", "User cycles to work"),
    ("I am vegetarian.", "User is vegetarian"),
    ("I write poetry.", "User writes poetry"),
]
REPLY = "Noted, thanks."  # the assistant's turn every third episode carries: no fact in it


@dataclass(frozen=True)
class Episode:
    key: str
    user_id: str
    messages: list[dict[str, str]]
    fact: str

    @property
    def body(self) -> dict[str, Any]:
        return {"messages": self.messages, "user_id": self.user_id, "infer": True}


def episodes() -> list[Episode]:
    """Episode n is user n % USERS saying statement n // USERS (and hearing a reply, for
    every third): the users' episodes interleave, as concurrent agents' do."""
    assert len(SAID_AND_FACT) * USERS == EPISODES
    made = []
    for n in range(EPISODES):
        said, fact = SAID_AND_FACT[n // USERS]
        messages = [{"role": "user", "content": said}]
        if n % 3 == 0:
            messages.append({"role": "assistant", "content": REPLY})
        made.append(Episode(f"ep-{n}", f"crash-user-{n % USERS}", messages, fact))
    return made


@dataclass
class Client:
    """Posts each episode until it is acknowledged (202), retrying connection errors and 5xx
    answers with the same idempotency key, ``IN_FLIGHT`` requests at a time."""

    http: httpx.AsyncClient
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # key → its 202 body
    retried: Counter[str] = field(default_factory=Counter)  # key → failed tries
    failures: Counter[str] = field(default_factory=Counter)  # what failed, by kind
    crash_due: asyncio.Event = field(default_factory=asyncio.Event)  # CRASH_AFTER answered
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(IN_FLIGHT))

    async def deliver(self, episode: Episode) -> None:
        response = await self.post(episode)
        assert response.status_code == 202, (episode.key, response.status_code, response.text)
        self.answers[episode.key] = response.json()
        if len(self.answers) >= CRASH_AFTER:
            self.crash_due.set()

    async def post(self, episode: Episode) -> httpx.Response:
        """The first answer that is not a 5xx."""
        async with self.slots:
            return await self._post(episode)

    async def _post(self, episode: Episode) -> httpx.Response:
        while True:
            try:
                response = await self.http.post("/v1/memories", json=episode.body,
                                                headers={"Idempotency-Key": episode.key})
            except httpx.TransportError as exc:  # refused, reset, cut off mid-answer
                self.failures[type(exc).__name__] += 1
            else:
                if response.status_code < 500:
                    return response
                self.failures[f"HTTP {response.status_code}"] += 1
            self.retried[episode.key] += 1
            await asyncio.sleep(RETRY_PAUSE_S)


@pytest.fixture
def crash_environment(worker_environment: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The workers' environment, but a job PENDING for 60 s (not 2) is handed to the queue
    again: jobs merely waiting behind the backlog are then sent again once or twice, not
    dozens of times, and those whose message died with the API still run."""
    return {**worker_environment, "ANAMNESIS_CONSOLIDATION__PENDING_GRACE_S": "60",
            "ANAMNESIS_CONSOLIDATION__SWEEP_INTERVAL_S": "2",
            "ANAMNESIS_DATA_DIR": str(tmp_path / "worker-data")}


@pytest.fixture
def crash_worker(worker_process: WorkerProcess, crash_environment: dict[str, str],
                 tmp_path: Path) -> Iterator[WorkerProcess]:
    """A prefork worker of this test's own, with the beat. The session's worker is stopped so
    that it takes no job; the ``worker`` fixture starts it again for the tests that need it."""
    worker_process.stop()
    worker = WorkerProcess("crash-worker", ["--pool", "prefork", "--concurrency", "3"],
                           crash_environment, tmp_path)
    with tracked(worker):
        yield worker


@pytest.fixture
def crash_api(crash_environment: dict[str, str], tmp_path: Path) -> Iterator[ApiProcess]:
    api = ApiProcess("crash-api", {**crash_environment,
                                   "ANAMNESIS_DATA_DIR": str(tmp_path / "api-data")}, tmp_path)
    with tracked(api):
        yield api


@pytest.fixture
async def queues_emptied(redis_url: str) -> AsyncIterator[None]:
    """The queues empty afterwards: what the sweeper sent again for jobs that finished
    meanwhile is no work for the next test's worker."""
    yield
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(*QUEUES)
    finally:
        client.close()


async def start(*processes: ApiProcess | WorkerProcess) -> None:
    for process in processes:
        process.start()
    for process in processes:
        await asyncio.to_thread(process.wait_ready)


async def rows(database: Database, query: str, project_id: uuid.UUID) -> list[Any]:
    async with database.engine.connect() as connection:
        return list(await connection.execute(sa.text(query), {"project": project_id}))


async def unfinished_jobs(database: Database, project_id: uuid.UUID) -> dict[str, int]:
    return {status: count for status, count in await rows(database, """
        SELECT status, count(*) FROM jobs WHERE project_id = :project
        AND status IN ('PENDING', 'RUNNING') GROUP BY status""", project_id)}


async def settle(database: Database, project_id: uuid.UUID) -> None:
    """Until every job of the project is SUCCEEDED or FAILED."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while unfinished := await unfinished_jobs(database, project_id):
        assert time.monotonic() < deadline, \
            f"jobs unfinished after {SETTLE_TIMEOUT_S:.0f} s: {unfinished}"
        await asyncio.sleep(0.5)


async def test_nothing_is_lost_or_doubled_when_the_api_and_the_worker_are_killed(
        tenant: Tenant, crash_api: ApiProcess, crash_worker: WorkerProcess, brain: Brain,
        workers_database: Database, queues_emptied: None) -> None:
    sent = episodes()
    brain.facts = {said: [fact] for said, fact in SAID_AND_FACT}
    began = time.monotonic()
    await start(crash_api, crash_worker)
    timeline = {"started": time.monotonic() - began}

    async with httpx.AsyncClient(
            base_url=crash_api.base_url, timeout=60.0,
            headers={"Authorization": tenant.http.headers["Authorization"]}) as http:
        client = Client(http)
        ingest = asyncio.gather(*(client.deliver(episode) for episode in sent))
        await asyncio.wait_for(client.crash_due.wait(), INGEST_TIMEOUT_S)

        timeline["crash"] = time.monotonic() - began
        answered_before_crash = len(client.answers)
        unfinished_at_crash = await unfinished_jobs(workers_database, tenant.project_id)
        crash_api.kill()
        crash_worker.kill()
        await start(crash_api, crash_worker)
        timeline["restarted"] = time.monotonic() - began

        await asyncio.wait_for(ingest, INGEST_TIMEOUT_S)
        timeline["acknowledged"] = time.monotonic() - began
        assert answered_before_crash < EPISODES
        assert client.answers.keys() == {episode.key for episode in sent}
        await settle(workers_database, tenant.project_id)
        timeline["settled"] = time.monotonic() - began

        # Sent again now (those cut off by the crash, and every tenth), a request gets the
        # answer it got first, and stores nothing (the counts below).
        again = [episode for n, episode in enumerate(sent)
                 if episode.key in client.retried or n % 10 == 0]
        replayed = await asyncio.gather(*(client.post(episode) for episode in again))
        assert [(answer.status_code, answer.json()) for answer in replayed] == [
            (202, client.answers[episode.key]) for episode in again]

        jobs = await assert_one_episode_and_job_per_key(workers_database, tenant.project_id,
                                                        sent, client.answers)
        messages = await assert_each_message_kept_once(workers_database, tenant.project_id,
                                                       sent)
        await assert_each_fact_kept_once(workers_database, tenant.project_id, sent)
        await assert_one_add_per_memory(workers_database, tenant.project_id)

        # The restarted API's search index holds what came in around the crash.
        for key in client.retried:
            episode = next(episode for episode in sent if episode.key == key)
            found = await http.post("/v1/memories/search", json={
                "query": episode.messages[0]["content"], "user_id": episode.user_id,
                "top_k": 1, "filters": {"kind": "message"}})
            assert found.status_code == 200, found.text
            assert [hit["id"] for hit in found.json()["results"]] == [str(messages[key][0])]

    [(doubled_extractions,)] = await rows(workers_database, """
        SELECT count(*) FROM (SELECT episode_id FROM graph_extractions
        WHERE project_id = :project GROUP BY episode_id HAVING count(*) > 1) AS twice""",
                                          tenant.project_id)
    print(f"\nanswered before the crash: {answered_before_crash}, jobs unfinished then: "
          f"{unfinished_at_crash}; episodes retried: {len(client.retried)} "
          f"({sum(client.retried.values())} tries: {dict(client.failures)}); jobs run more "
          f"than once: {sum(job.attempts > 1 for job in jobs.values())}; episodes with two "
          f"graph extractions: {doubled_extractions}; seconds: "
          f"{ {name: round(at) for name, at in timeline.items()} }")


async def assert_one_episode_and_job_per_key(
        database: Database, project_id: uuid.UUID, sent: list[Episode],
        answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One episode per idempotency key, as sent; its one job SUCCEEDED with the key's fact and
    is the job the client was told of. Returns the jobs by key."""
    jobs = {row.key: row for row in await rows(database, """
        SELECT e.idempotency_key AS key, e.user_id, e.messages, j.id AS job_id, j.status,
               j.attempts, j.error_code, j.error, j.results
        FROM episodes e JOIN jobs j ON j.episode_id = e.id
        WHERE e.project_id = :project""", project_id)}
    [(episode_rows, job_rows)] = await rows(database, """
        SELECT (SELECT count(*) FROM episodes WHERE project_id = :project),
               (SELECT count(*) FROM jobs WHERE project_id = :project)""", project_id)
    assert (episode_rows, job_rows, len(jobs)) == (EPISODES, EPISODES, EPISODES)
    assert {key: str(job.job_id) for key, job in jobs.items()} == {
        key: answer["job_id"] for key, answer in answers.items()}
    failed = {key: (job.status, job.error_code, job.error) for key, job in jobs.items()
              if job.status != "SUCCEEDED"}
    assert not failed, f"{len(failed)} job(s) did not succeed: {failed}"
    for episode in sent:
        job = jobs[episode.key]
        assert (job.user_id, job.messages) == (episode.user_id, episode.messages)
        assert [result["memory"] for result in job.results] == [episode.fact], job.results
    return jobs


async def assert_each_message_kept_once(database: Database, project_id: uuid.UUID,
                                        sent: list[Episode]) -> dict[str, list[uuid.UUID]]:
    """Each message sent is one ``message`` memory of its episode, at its place, and there
    are no others. Returns each key's message memory ids, in message order."""
    linked = await rows(database, """
        SELECT e.idempotency_key AS key, m.id, m.text, s.message_indices
        FROM memories m JOIN memory_sources s ON s.memory_id = m.id
        JOIN episodes e ON e.id = s.episode_id
        WHERE m.project_id = :project AND m.kind = 'message'""", project_id)
    said: dict[str, list[tuple[int, str, uuid.UUID]]] = {}
    for row in linked:
        for index in row.message_indices:
            said.setdefault(row.key, []).append((index, row.text, row.id))
    assert {key: [(index, text) for index, text, _ in sorted(found)]
            for key, found in said.items()} == {
        episode.key: [(index, message["content"])
                      for index, message in enumerate(episode.messages)] for episode in sent}
    [(message_rows,)] = await rows(database, "SELECT count(*) FROM memories "
                                   "WHERE project_id = :project AND kind = 'message'",
                                   project_id)
    assert message_rows == sum(len(episode.messages) for episode in sent)
    return {key: [memory_id for _, _, memory_id in sorted(found)]
            for key, found in said.items()}


async def assert_each_fact_kept_once(database: Database, project_id: uuid.UUID,
                                     sent: list[Episode]) -> None:
    """Each episode's fact is one live ``fact`` memory of its scope, from that episode alone;
    no scope holds a text twice, live or not."""
    facts = await rows(database, """
        SELECT m.user_id, m.text, m.deleted_at IS NULL AND m.invalid_at IS NULL AS live,
               array_agg(e.idempotency_key) AS keys
        FROM memories m LEFT JOIN memory_sources s ON s.memory_id = m.id
        LEFT JOIN episodes e ON e.id = s.episode_id
        WHERE m.project_id = :project AND m.kind = 'fact' GROUP BY m.id""", project_id)
    assert sorted((row.user_id, row.text, row.live, row.keys) for row in facts) == sorted(
        (episode.user_id, episode.fact, True, [episode.key]) for episode in sent)
    doubled = await rows(database, """
        SELECT user_id, agent_id, run_id, content_hash, count(*) FROM memories
        WHERE project_id = :project AND kind = 'fact'
        GROUP BY user_id, agent_id, run_id, content_hash HAVING count(*) > 1""", project_id)
    assert doubled == []


async def assert_one_add_per_memory(database: Database, project_id: uuid.UUID) -> None:
    """Each memory's history has exactly one ADD: no write was applied twice."""
    adds = await rows(database, """
        SELECT m.kind, count(v.id) AS adds FROM memories m
        LEFT JOIN memory_events v ON v.memory_id = m.id AND v.event = 'ADD'
        WHERE m.project_id = :project GROUP BY m.id, m.kind""", project_id)
    assert Counter(row.adds for row in adds) == {1: len(adds)}
