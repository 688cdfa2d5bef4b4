"""``anamnesis worker`` with ``ANAMNESIS_LOG_FORMAT=json``: every line the worker writes,
Celery's own included, is one JSON object; the lines written while it ran a job name the job;
and no line holds what the client sent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.consolidate.scripted_brain import Brain
from tests.workers.conftest import Tenant, WorkerProcess
from tests.workers.test_celery_worker import finished, post_episode

SAID = "My storage unit code is walrus-5183-plum."
FACT = "User's storage unit code is walrus-5183-plum"


async def test_a_json_worker_writes_json_lines_naming_the_job(
        tenant: Tenant, worker_process: WorkerProcess, worker_environment: dict[str, str],
        brain: Brain, tmp_path: Path) -> None:
    # The session's worker would take the job from the queue too: it is stopped here, and the
    # ``worker`` fixture starts it again for the tests that need it.
    worker_process.stop()
    logged = WorkerProcess("json", ["--pool", "solo", "--no-beat"],
                           {**worker_environment, "ANAMNESIS_LOG_FORMAT": "json"}, tmp_path)
    logged.start()
    try:
        await asyncio.to_thread(logged.wait_ready)
        brain.facts = {SAID: [FACT]}
        job_id = await post_episode(tenant.http, SAID)
        job = await finished(tenant.http, job_id)
        assert job["status"] == "SUCCEEDED", job
    finally:
        logged.stop()

    # Not JSON: the test's own marker before each start, and the notice Celery's signal
    # handler prints to stdout itself on a shutdown ("worker: Warm shutdown (MainProcess)").
    raw = [line for line in logged.log_path.read_text().splitlines()
           if line and not line.startswith(("===== starting ", "worker: "))]
    lines = [json.loads(line) for line in raw]  # every line parses
    assert any(line["logger"].startswith("celery") for line in lines), raw
    summary = [line for line in lines if line["logger"] == "app.consolidate.pipeline"]
    assert [line.get("job_id") for line in summary] == [job_id], raw
    assert not any("walrus-5183-plum" in line for line in raw)
