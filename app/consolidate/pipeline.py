"""Consolidating one episode into memories, top to bottom.

``run_job`` is what a queue calls with a job id, any number of times: it claims the job
(or leaves it to whoever holds it, or to no one once finished), keeps its heartbeat while
it works, and settles it as SUCCEEDED or FAILED, or hands it back as PENDING with a delay
after a transient failure (``TransientJobError``; the queue re-delivers it).

``consolidate_episode`` is the work itself:

1. *context*  the episode, the scope's previous episodes and the extraction instructions;
2. *extract*  one LLM call: facts with their source messages and the day they became true;
3. *resolve*  nearest current memories of the scope, one LLM call: ADD / UPDATE /
   SUPERSEDE / NOOP per fact;
4. *write*    one transaction: memories, history events, sources, the graph extraction
   (one more LLM call, made before the lock) and the job's result;
5. *graph*    the extraction applied to the graph store (``replay.apply_extraction``).

Steps 3 to 5 run under the scope's lock, so two episodes of one scope never decide
against the same memories at once; steps 1 and 2 only read the episode itself and run in
parallel with anything.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession

from app.consolidate import graph, replay
from app.consolidate.context import EpisodeContext, load_context
from app.consolidate.extract import ExtractedFact, extract
from app.consolidate.prompts import GRAPH_VERSION, GraphExtraction
from app.consolidate.resolve import resolve
from app.consolidate.runtime import Consolidator
from app.consolidate.write import write
from app.errors import LLMError, LLMOutputError, LLMRequestRejected, LLMUnavailable
from app.llm import Completion, LLMClient, Usage
from app.store.db import Database
from app.store.models import Job
from app.store.repositories import changes, episodes, jobs
from app.store.repositories import graph as graph_records
from app.store.repositories.memories import Cause

logger = logging.getLogger(__name__)


class TransientJobError(Exception):
    """The job failed for a reason that may pass (LLM 5xx or timeout, a dropped database
    connection); it is PENDING again and should be re-delivered after ``delay_s``."""

    def __init__(self, message: str, delay_s: float) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class LostLease(Exception):
    """Another run took the job over (this one's heartbeat lapsed); this run's work is void."""


@dataclass
class Ledger:
    """What the job's LLM calls cost, failed ones included. ``calls`` counts the replies
    received (each a billed completion), re-asks included."""

    usage: Usage = field(default_factory=Usage)
    calls: int = 0
    model: str | None = None
    prompt_versions: list[str] = field(default_factory=list)

    def record(self, completion: Completion[Any] | None) -> None:
        if completion is None:
            return
        self.usage += completion.usage
        self.calls += completion.attempts
        self.model = completion.model
        if completion.prompt_version:
            self.prompt_versions.append(completion.prompt_version)

    def record_failure(self, error: LLMError) -> None:
        self.usage += Usage(error.prompt_tokens, error.completion_tokens)
        self.calls += error.replies


async def run_job(consolidator: Consolidator, job_id: uuid.UUID) -> str | None:
    """Runs the job if it can be claimed; returns its final status, or None when it was not
    this call's to run (finished already, or running elsewhere)."""
    config = consolidator.settings.consolidation
    database = consolidator.database
    async with database.session_scope() as session:
        job = await jobs.claim(session, job_id, timedelta(seconds=config.lease_s))
    if job is None:
        return None
    ledger = Ledger()
    async with _heartbeat(database, job_id, config.lease_s / 4):
        try:
            await consolidate_episode(consolidator, job, ledger)
        except LostLease:
            logger.warning("job %s was taken over by another run; dropping this one", job_id)
            return None
        except Exception as exc:
            if isinstance(exc, LLMError):
                ledger.record_failure(exc)
            return await _settle_failure(database, job, ledger, exc,
                                         final=job.attempts > config.max_retries,
                                         backoff=(config.retry_backoff_s,
                                                  config.retry_backoff_max_s))
    return jobs.SUCCEEDED


async def consolidate_episode(consolidator: Consolidator, job: Job, ledger: Ledger) -> None:
    config = consolidator.settings.consolidation
    database, embedder = consolidator.database, consolidator.embedder
    async with database.session_scope() as session:
        episode = await episodes.get(session, job.project_id, job.episode_id)
        if episode is None:
            raise LookupError(f"episode {job.episode_id} of job {job.id} is gone")
        context = await load_context(session, episode, config.context_episodes)
    llm = await consolidator.llm()
    facts, extraction = await extract(llm, context, config.max_facts)
    ledger.record(extraction)
    vectors = await embedder.embed([fact.text for fact in facts]) if facts else []
    entities = (await _extract_graph(llm, context, facts, ledger)
                if facts and config.extract_graph else None)
    async with jobs.scope_lock(database.engine, context.project_id, context.scope):
        async with database.session_scope() as session:
            resolution = await resolve(session, embedder, llm, context, facts, vectors,
                                       config.candidates_per_fact)
        ledger.record(resolution.completion)
        cause = Cause(episode_id=context.episode_id, job_id=job.id, model=ledger.model,
                      prompt_version="+".join(v for v in ledger.prompt_versions
                                              if v != GRAPH_VERSION) or None)
        async with database.session_scope() as session:
            if not await jobs.still_ours(session, job):
                raise LostLease(str(job.id))
            results = await write(session, context, resolution.plans, cause)
            recorded = None
            if entities is not None:
                recorded = await graph_records.add_extraction(
                    session, context.project_id, context.scope, episode_id=context.episode_id,
                    job_id=job.id, payload=graph.payload(entities, facts, results),
                    observed_at=context.observed_at)
            await _record_usage(session, job, ledger)
            if recorded is None:
                await jobs.succeed(session, job.id, results)
        if recorded is not None:
            # SUCCEEDED only once the graph shows the episode too, so a client that waited
            # for the job reads a graph that agrees with its memories.
            await replay.apply_extraction(database, consolidator.graph, embedder, recorded)
            async with database.session_scope() as session:
                await jobs.succeed(session, job.id, results)
    logger.info("job %s: %d facts → %s (%d LLM calls, %d tokens)", job.id, len(facts),
                _summary(results), ledger.calls, ledger.usage.total_tokens)


async def sweep(consolidator: Consolidator,
                enqueue: Callable[[Sequence[uuid.UUID]], Awaitable[None]]) -> list[uuid.UUID]:
    """Hands jobs that went quiet back to the queue: PENDING too long (their message was
    lost) or RUNNING with a stale heartbeat (their worker died). Returns their ids. Then
    projects graph extractions whose projection failed into the graph store again, and
    prunes the search index's change log."""
    database, config = consolidator.database, consolidator.settings.consolidation
    async with database.session_scope() as session:
        stale = list(await jobs.stale(
            session, pending_for=timedelta(seconds=config.pending_grace_s),
            lease=timedelta(seconds=config.lease_s), limit=500))
    if stale:
        logger.warning("re-enqueueing %d job(s) that went quiet", len(stale))
        await enqueue(stale)
    await replay.reapply_unapplied(database, consolidator.graph, consolidator.embedder,
                                   grace=timedelta(seconds=config.lease_s))
    async with database.session_scope() as session:
        pruned = await changes.prune(session, timedelta(
            days=consolidator.settings.search.change_log_days))
    if pruned:
        logger.info("pruned %d change-log rows older than %s days", pruned,
                    consolidator.settings.search.change_log_days)
    return stale


# -- helpers -----------------------------------------------------------------------------


async def _extract_graph(llm: LLMClient, context: EpisodeContext,
                         facts: list[ExtractedFact], ledger: Ledger) -> GraphExtraction | None:
    """The graph is a projection: when the model cannot produce it, the memories still
    count and the episode goes without entities (logged)."""
    try:
        completion = await graph.extract_graph(llm, context, facts)
    except (LLMOutputError, LLMRequestRejected) as exc:
        ledger.record_failure(exc)
        logger.warning("episode %s: no graph extracted (%s)", context.episode_id, exc)
        return None
    ledger.record(completion)
    return completion.value


def is_transient(error: BaseException) -> bool:
    if isinstance(error, LLMUnavailable):
        return True
    if isinstance(error, DBAPIError):
        return error.connection_invalidated or isinstance(error, OperationalError | InterfaceError)
    return isinstance(error, PoolTimeout | ConnectionError | TimeoutError | OSError)


def retry_delay(attempt: int, base_s: float, cap_s: float, asked_s: float | None) -> float:
    """Exponential backoff with jitter; never sooner than the endpoint asked."""
    ceiling = min(cap_s, base_s * 2.0 ** max(0, attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not secrets
    return max(delay, asked_s or 0.0)


async def _settle_failure(database: Database, job: Job, ledger: Ledger, error: Exception, *,
                          final: bool, backoff: tuple[float, float]) -> str:
    code = getattr(error, "code", None) or "internal_error"
    detail = f"{type(error).__name__}: {error}" if code == "internal_error" else str(error)
    transient = is_transient(error)
    if transient and not final:
        delay = retry_delay(job.attempts, *backoff, getattr(error, "retry_after_s", None))
        logger.warning("job %s attempt %d failed (%s); retrying in %.1f s", job.id,
                       job.attempts, detail, delay)
        async with database.session_scope() as session:
            await _record_usage(session, job, ledger)
            await jobs.release(session, job.id, code, detail[:2000],
                               retry_in=timedelta(seconds=delay))
        raise TransientJobError(detail, delay) from error
    if transient:
        detail = f"gave up after {job.attempts} attempts: {detail}"
    if code == "internal_error":
        logger.error("job %s failed", job.id, exc_info=error)
    else:
        logger.warning("job %s failed: %s", job.id, detail)
    async with database.session_scope() as session:
        await _record_usage(session, job, ledger)
        await jobs.fail(session, job.id, code, detail[:2000])
    return jobs.FAILED


async def _record_usage(session: AsyncSession, job: Job, ledger: Ledger) -> None:
    await jobs.add_usage(session, job.id, model=ledger.model, calls=ledger.calls,
                         prompt_tokens=ledger.usage.prompt_tokens,
                         completion_tokens=ledger.usage.completion_tokens)


@asynccontextmanager
async def _heartbeat(database: Database, job_id: uuid.UUID,
                     interval_s: float) -> AsyncIterator[None]:
    async def beat() -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                async with database.session_scope() as session:
                    await jobs.heartbeat(session, job_id)
            except Exception as exc:  # a missed beat is survivable; the lease has slack
                logger.warning("job %s heartbeat failed: %s", job_id, exc)

    task = asyncio.create_task(beat(), name=f"heartbeat-{job_id}")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def _summary(results: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for result in results:
        counts[result["event"]] = counts.get(result["event"], 0) + 1
    return ", ".join(f"{event} {count}" for event, count in sorted(counts.items())) or "nothing"
