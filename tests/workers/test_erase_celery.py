"""Erasing a user whose conversations Celery workers consolidated: the worker's facts, jobs,
results and graph go with the rest, and every table is searched afterwards (the in-process
variant, with Neo4j and the index snapshot: ``tests/graph/test_erase.py``)."""

from __future__ import annotations

from app.store.db import Database
from tests.consolidate.scripted_brain import Brain, FactSpec
from tests.graph.test_erase import postgres_text
from tests.workers.conftest import Tenant, WorkerProcess
from tests.workers.test_celery_worker import finished, post_episode


async def test_erasing_a_user_after_the_workers_consolidated(
        tenant: Tenant, worker: WorkerProcess, brain: Brain,
        workers_database: Database) -> None:
    brain.facts = {"My locker code is zebra-4471.": [FactSpec("User's locker code is 4471")],
                   "I keep bees.": ["User keeps bees"]}
    job_id = await post_episode(tenant.http, "My locker code is zebra-4471.")
    job = await finished(tenant.http, job_id)
    assert job["status"] == "SUCCEEDED", job
    kept = await tenant.http.post("/v1/memories", json={
        "messages": [{"role": "user", "content": "I keep bees."}], "user_id": "u2",
        "infer": False})
    assert kept.status_code == 201, kept.text

    response = await tenant.http.delete("/v1/users/u1")
    assert response.status_code == 200, response.text
    receipt = response.json()["erased"]
    assert response.json()["deleted"] == 2  # the message and the worker's fact
    assert receipt["episodes"] == 1
    assert receipt["jobs"] == 1

    text = await postgres_text(workers_database)
    for gone in ("zebra", "4471", job_id, job["episode_id"]):
        assert gone not in text
    assert "I keep bees." in text
    for memory in job["results"]:
        got = await tenant.http.get(f"/v1/memories/{memory['id']}")
        assert got.status_code == 404
    listed = await tenant.http.get("/v1/memories", params={"user_id": "u1"})
    assert listed.json()["results"] == []
